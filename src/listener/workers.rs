//! One event loop per worker thread, as nginx has one per worker process.
//!
//! Connections are served on `server.worker_threads` threads, each running
//! tokio's single-threaded runtime. The thread that started the gateway is
//! worker 0 and accepts; it hands each new connection to the worker serving
//! fewest (itself included), and the connection stays there. Compared with
//! tokio's work-stealing runtime, a wake-up needs no shared queue and no
//! other thread, and what a connection touches (its upstream connections,
//! see `proxy::pool`) stays on its core: in `bench/run` with two threads,
//! 5–15 % more HTTP/2 requests per second for less CPU each.
//!
//! Each worker accepting on its own clone of the socket does not spread a
//! burst: the thread awake first accepts it all.

use std::cell::Cell;
use std::io;
use tokio::sync::oneshot;

thread_local! {
    static INDEX: Cell<usize> = const { Cell::new(0) };
}

/// The worker thread this code runs on: 0 for the thread that started the
/// gateway (and any thread that is no worker), 1.. for the others.
pub fn index() -> usize {
    INDEX.with(Cell::get)
}

/// How many threads serve connections for `server.worker_threads`.
pub fn count(configured: usize) -> usize {
    match configured {
        0 => std::thread::available_parallelism().map_or(1, usize::from),
        n => n,
    }
}

/// A worker thread beyond the first. Dropping it ends the thread's runtime,
/// and with it whatever its connections were still doing: the gateway
/// drains before it drops its workers.
pub struct Thread {
    _abort: oneshot::Sender<()>,
}

/// Start worker `index` running `serve` (its accept loops) and then
/// `drained`, which ends when its connections are done; whichever the
/// worker's `Thread` is dropped first cuts short.
pub fn spawn<S, D>(index: usize, serve: S, drained: D) -> io::Result<Thread>
where
    S: FnOnce() + Send + 'static,
    D: std::future::Future<Output = ()> + Send + 'static,
{
    let failed = |e: io::Error| {
        io::Error::new(
            e.kind(),
            format!("server.worker_threads: cannot start worker thread {index}: {e}"),
        )
    };
    // Built here so that a failure is the caller's error, not a thread's.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(failed)?;
    let (abort, aborted) = oneshot::channel::<()>();
    std::thread::Builder::new()
        .name(format!("gatehouse-{index}"))
        .spawn(move || {
            INDEX.with(|i| i.set(index));
            runtime.block_on(async move {
                serve();
                tokio::select! {
                    () = drained => {}
                    _ = aborted => {}
                }
            });
        })
        .map_err(failed)?;
    Ok(Thread { _abort: abort })
}
