//! Prometheus metrics, `/healthz` and `/readyz` on their own listener, off the
//! public port (default 127.0.0.1:9813).

use crate::gate::Gate;
use crate::proxy::{self, Body};
use http::{header, HeaderValue, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::net::TcpListener;

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// The process-wide recorder (installed once; several in-process gateways in
/// tests share it).
pub fn recorder() -> Option<PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets(&[
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                    10.0,
                ])
                .ok()?
                .build_recorder();
            let handle = recorder.handle();
            metrics::set_global_recorder(recorder).ok()?;
            Some(handle)
        })
        .clone()
}

/// What `/readyz` checks, and where the scrape-time gauges come from.
#[derive(Clone)]
pub struct Readiness {
    pub gate: Arc<Gate>,
    pub upstream: String,
    pub connections: crate::listener::Loads,
}

/// Gauges that need a walk over the store are refreshed at most this often,
/// however often Prometheus scrapes.
const GAUGE_REFRESH: Duration = Duration::from_secs(1);
static GAUGES_AT: std::sync::Mutex<Option<std::time::Instant>> = std::sync::Mutex::new(None);

/// Live sessions and open incidents, counted from the store (all gateways').
async fn refresh_gauges(gate: &Gate) {
    {
        let mut at = GAUGES_AT.lock().unwrap_or_else(|p| p.into_inner());
        if at.is_some_and(|t| t.elapsed() < GAUGE_REFRESH) {
            return;
        }
        *at = Some(std::time::Instant::now());
    }
    #[cfg(feature = "heap-stats")]
    {
        metrics::gauge!("gatehouse_heap_allocated_bytes").set(crate::HEAP.allocated() as f64);
        metrics::gauge!("gatehouse_store_page_cache_bytes")
            .set(crate::store::page_cache_bytes() as f64);
    }
    let live = gate.live.load_full();
    if let Ok(all) = live.sessions.all().await {
        let signed_in = all
            .iter()
            .filter(|s| {
                matches!(
                    s.record.state,
                    crate::session::SessionState::Active | crate::session::SessionState::PasswordOk
                )
            })
            .count();
        metrics::gauge!("gatehouse_active_sessions").set(signed_in as f64);
    }
    if let Ok(open) = live.incidents.list(false).await {
        metrics::gauge!("gatehouse_open_incidents").set(open.len() as f64);
    }
}

/// Serve metrics on an already bound listener until the task is dropped.
pub fn serve(listener: TcpListener, readiness: Readiness) -> tokio::task::JoinHandle<()> {
    let handle = recorder();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            let handle = handle.clone();
            let readiness = readiness.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<Incoming>| {
                    let handle = handle.clone();
                    let readiness = readiness.clone();
                    async move { Ok::<_, Infallible>(answer(req, handle, readiness).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(Duration::from_secs(10))
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    })
}

async fn answer(
    req: Request<Incoming>,
    handle: Option<PrometheusHandle>,
    r: Readiness,
) -> Response<Body> {
    match req.uri().path() {
        "/metrics" => {
            let _ = tokio::time::timeout(Duration::from_secs(5), refresh_gauges(&r.gate)).await;
            for (worker, open) in r.connections.per_worker().into_iter().enumerate() {
                metrics::gauge!("gatehouse_open_connections", "worker" => worker.to_string())
                    .set(open as f64);
            }
            let text = handle.map(|h| h.render()).unwrap_or_default();
            let mut resp = Response::new(proxy::full(text));
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            resp
        }
        "/healthz" => plain(StatusCode::OK, "ok\n"),
        "/readyz" => {
            let store_ok = tokio::time::timeout(Duration::from_secs(2), r.gate.store.ping())
                .await
                .is_ok_and(|x| x.is_ok());
            let upstream_ok = tokio::time::timeout(
                Duration::from_secs(2),
                tokio::net::TcpStream::connect(r.upstream.as_str()),
            )
            .await
            .is_ok_and(|x| x.is_ok());
            let body = format!(
                "store: {}\nupstream: {}\n",
                if store_ok { "ok" } else { "unavailable" },
                if upstream_ok { "ok" } else { "unreachable" }
            );
            let status = if store_ok && upstream_ok {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            plain(status, &body)
        }
        _ => plain(StatusCode::NOT_FOUND, "not found\n"),
    }
}

fn plain(status: StatusCode, text: &str) -> Response<Body> {
    let mut resp = Response::new(proxy::full(text.to_string()));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    resp
}

/// Bind the metrics listener (`None` when disabled).
pub async fn bind(addr: Option<SocketAddr>) -> std::io::Result<Option<TcpListener>> {
    match addr {
        Some(a) => TcpListener::bind(a)
            .await
            .map(Some)
            .map_err(|e| std::io::Error::new(e.kind(), format!("metrics.listen {a}: {e}"))),
        None => Ok(None),
    }
}
