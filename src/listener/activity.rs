//! What a connection's IO has been doing: when bytes last moved (the idle
//! timeout), whether hyper waits for nothing but a request (parking), and,
//! on HTTP/2, a watch for frame floods.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// What a connection's IO has been doing, written by [`Tracked`] and read by
/// the serve loop: when bytes last moved (the idle timeout) and, for parking
/// HTTP/1.1 connections, whether hyper is waiting for nothing but a request.
pub(super) struct Activity {
    epoch: Instant,
    /// Milliseconds after `epoch` when bytes last moved.
    at_ms: AtomicU64,
    /// Bytes were read after the last bytes written: part of a request
    /// head may be in hyper's buffer.
    read_last: AtomicBool,
    /// The last write or flush could not finish (the client is not reading).
    write_waiting: AtomicBool,
}

impl Activity {
    pub(super) fn new() -> Self {
        Self {
            epoch: Instant::now(),
            at_ms: AtomicU64::new(0),
            read_last: AtomicBool::new(false),
            write_waiting: AtomicBool::new(false),
        }
    }

    pub(super) fn at_ms(&self) -> u64 {
        self.at_ms.load(Ordering::Relaxed)
    }

    pub(super) fn at(&self, ms: u64) -> Instant {
        self.epoch + Duration::from_millis(ms)
    }

    /// When bytes last moved (the connection's start if none have).
    pub(super) fn last(&self) -> Instant {
        self.at(self.at_ms())
    }

    /// Nothing read since the last write, and no write waiting.
    pub(super) fn settled(&self) -> bool {
        !self.read_last.load(Ordering::Relaxed) && !self.write_waiting.load(Ordering::Relaxed)
    }

    pub(super) fn touch(&self) {
        let ms = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.at_ms.store(ms, Ordering::Relaxed);
    }

    pub(super) fn read(&self) {
        self.touch();
        self.read_last.store(true, Ordering::Relaxed);
    }

    pub(super) fn wrote(&self) {
        self.touch();
        self.read_last.store(false, Ordering::Relaxed);
        self.write_waiting.store(false, Ordering::Relaxed);
    }

    fn write_result<T>(&self, res: &Poll<io::Result<T>>, moved: bool) {
        match res {
            Poll::Ready(Ok(_)) if moved => self.wrote(),
            Poll::Ready(Ok(_)) => {
                // A flush that finishes after waiting has moved bytes.
                if self.write_waiting.swap(false, Ordering::Relaxed) {
                    self.touch();
                }
            }
            Poll::Pending => self.write_waiting.store(true, Ordering::Relaxed),
            Poll::Ready(Err(_)) => {}
        }
    }
}

/// An IO wrapper that records when bytes last moved, for the idle timeout
/// and parking, and on HTTP/2 connections watches for frame floods.
pub(super) struct Tracked<T> {
    pub(super) inner: T,
    pub(super) activity: Arc<Activity>,
    pub(super) frames: Option<crate::h2_flood::FrameWatch>,
    pub(super) flood: Arc<tokio::sync::Notify>,
    /// Past the frame budget: nothing more is read from this client.
    pub(super) flooded: bool,
}

impl<T: AsyncRead + Unpin> AsyncRead for Tracked<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.flooded {
            // The serve loop closes the connection shortly; until then the
            // flood stays in the kernel's buffers, unread.
            return Poll::Pending;
        }
        let before = buf.filled().len();
        let res = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.read();
            let this = &mut *self;
            if let Some(frames) = this.frames.as_mut() {
                if frames.observe(&buf.filled()[before..]) {
                    this.flooded = true;
                    this.flood.notify_one();
                }
            }
        }
        res
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Tracked<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let res = Pin::new(&mut self.inner).poll_write(cx, data);
        let moved = matches!(res, Poll::Ready(Ok(n)) if n > 0);
        self.activity.write_result(&res, moved);
        res
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let res = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        let moved = matches!(res, Poll::Ready(Ok(n)) if n > 0);
        self.activity.write_result(&res, moved);
        res
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let res = Pin::new(&mut self.inner).poll_flush(cx);
        self.activity.write_result(&res, false);
        res
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let res = Pin::new(&mut self.inner).poll_shutdown(cx);
        self.activity.write_result(&res, false);
        res
    }
}
