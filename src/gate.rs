//! THE request flow. Every request passes these numbered stages in order; a
//! stage either passes the request on or finishes the response. This is the
//! only place that knows the order.

use crate::client_ip::{self, ClientIp, TrustedProxies};
use crate::clock::SharedClock;
use crate::config::validate::Settings;
use crate::error::GateError;
use crate::proxy::{self, Body, Upstream};
use arc_swap::ArcSwap;
use http::header::{self, HeaderValue};
use http::uri::PathAndQuery;
use http::{Request, Response, Version};
use hyper::body::Incoming;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

/// Everything a request needs that a SIGHUP may replace, swapped atomically:
/// a request sees either the old or the new configuration, never a mix.
pub struct Live {
    pub settings: Arc<Settings>,
    pub tls: Arc<rustls::ServerConfig>,
    pub upstream: Upstream,
    pub trusted: TrustedProxies,
}

/// Why a configuration could not be put into service.
#[derive(Debug, thiserror::Error)]
pub enum LiveError {
    #[error("TLS: {key}: {message}", key = .0.key, message = .0.message)]
    Tls(#[from] crate::tls::TlsError),
    #[error("upstream: {0}")]
    Upstream(#[from] proxy::ProxyError),
}

impl Live {
    pub fn build(settings: Settings) -> Result<Self, LiveError> {
        Ok(Self {
            tls: crate::tls::build(&settings.server.tls)?,
            upstream: Upstream::new(&settings.upstream)?,
            trusted: TrustedProxies::new(settings.server.trusted_proxies.clone()),
            settings: Arc::new(settings),
        })
    }
}

/// The gateway's shared state.
pub struct Gate {
    pub live: ArcSwap<Live>,
    pub clock: SharedClock,
}

/// What the listener knows about the connection a request came on.
#[derive(Debug, Clone, Copy)]
pub struct ConnInfo {
    /// The TCP peer.
    pub peer: SocketAddr,
    /// The client address stated by a trusted PROXY protocol header, else the peer.
    pub source: ClientIp,
}

/// Facts established about a request as it passes the stages.
struct Facts {
    client: ClientIp,
    host: String,
    path: String,
    user: Option<String>,
}

impl Gate {
    pub async fn handle(&self, conn: ConnInfo, req: Request<Incoming>) -> Response<Body> {
        let started = Instant::now();
        let live = self.live.load_full();
        let method = req.method().clone();
        let mut facts = Facts {
            client: ClientIp::Unknown,
            host: String::new(),
            path: req.uri().path().to_string(),
            user: None,
        };
        let mut upstream_time = None;
        let mut resp = match self
            .stages(&live, conn, req, &mut facts, &mut upstream_time)
            .await
        {
            Ok(resp) => resp,
            Err(e) => {
                if matches!(e, GateError::Upstream(_)) {
                    tracing::warn!(error = %e, "upstream request failed");
                }
                e.into_response(&live.settings.server.brand)
            }
        };
        finish_headers(&live.settings, &mut resp);
        if live.settings.logging.access_log {
            tracing::info!(
                target: "gatehouse::access",
                method = %method,
                path = %facts.path,
                status = resp.status().as_u16(),
                client = %facts.client,
                user = facts.user.as_deref().unwrap_or("-"),
                ms = started.elapsed().as_secs_f64() * 1000.0,
                upstream_ms = upstream_time.map(|d: std::time::Duration| d.as_secs_f64() * 1000.0),
            );
        }
        resp
    }

    async fn stages(
        &self,
        live: &Live,
        conn: ConnInfo,
        mut req: Request<Incoming>,
        facts: &mut Facts,
        upstream_time: &mut Option<std::time::Duration>,
    ) -> Result<Response<Body>, GateError> {
        let settings = &live.settings;

        // 1. client_ip: the only address any later stage uses.
        facts.client = client_ip::resolve(conn.source, req.headers(), &live.trusted);

        // 2. route: one authority for decision and forwarding.
        facts.host = request_host(&req)?;
        if !settings.server.hosts.is_empty()
            && !settings
                .server
                .hosts
                .contains(&host_without_port(&facts.host))
        {
            return Err(GateError::Misdirected);
        }
        let path_and_query = forwarded_target(&req)?;

        // 7. proxy: stream to the dashboard.
        let client_upgrade = if req.version() == Version::HTTP_11
            && proxy::headers::upgrade_protocol(req.headers()).is_some()
        {
            Some(hyper::upgrade::on(&mut req))
        } else {
            None
        };
        let (parts, body) = req.into_parts();
        let upstream_req = Request::from_parts(parts, proxy::stream(body));
        let sent = Instant::now();
        let resp = live
            .upstream
            .forward(
                upstream_req,
                proxy::client::Forward {
                    path_and_query,
                    host: &facts.host,
                    client: facts.client,
                },
                client_upgrade,
            )
            .await?;
        *upstream_time = Some(sent.elapsed());
        Ok(resp.map(proxy::stream))
    }
}

/// The authority the client addressed. HTTP/1.1 must carry exactly one Host;
/// when the request-target is absolute (or HTTP/2 sends `:authority`) and a
/// Host is present too, they must agree (SECURITY-TESTS 11, 12).
fn request_host(req: &Request<Incoming>) -> Result<String, GateError> {
    let mut hosts = req.headers().get_all(header::HOST).iter();
    let host_header = hosts.next();
    if hosts.next().is_some() {
        return Err(GateError::BadRequest("duplicate Host header"));
    }
    let host_header = host_header
        .map(|h| {
            h.to_str()
                .map_err(|_| GateError::BadRequest("Host is not ASCII"))
        })
        .transpose()?;
    let uri_authority = req.uri().authority().map(|a| a.as_str());
    let host = match (uri_authority, host_header) {
        (Some(a), Some(h)) if !a.eq_ignore_ascii_case(h) => {
            return Err(GateError::BadRequest(
                "request-target authority differs from Host",
            ));
        }
        (Some(a), _) => a,
        (None, Some(h)) => h,
        (None, None) => return Err(GateError::BadRequest("missing Host")),
    };
    if host.contains('@') {
        return Err(GateError::BadRequest("userinfo in authority"));
    }
    let valid = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'));
    if !valid {
        return Err(GateError::BadRequest("invalid Host"));
    }
    Ok(host.to_ascii_lowercase())
}

pub(crate) fn host_without_port(host: &str) -> String {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or_default().to_string();
    }
    host.rsplit_once(':')
        .map_or(host, |(h, port)| {
            if port.bytes().all(|b| b.is_ascii_digit()) {
                h
            } else {
                host
            }
        })
        .to_string()
}

/// The path and query forwarded upstream: exactly what the stages checked.
fn forwarded_target(req: &Request<Incoming>) -> Result<PathAndQuery, GateError> {
    let pq = req
        .uri()
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    if !pq.path().starts_with('/') {
        return Err(GateError::BadRequest("request-target must be a path"));
    }
    Ok(pq)
}

/// Headers every response leaves with.
fn finish_headers(settings: &Settings, resp: &mut Response<Body>) {
    if let Some(max_age) = settings.server.hsts_max_age {
        if let Ok(v) = HeaderValue::from_str(&format!("max-age={}", max_age.as_secs())) {
            resp.headers_mut()
                .insert(header::STRICT_TRANSPORT_SECURITY, v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_port_is_ignored_for_host_matching() {
        assert_eq!(
            host_without_port("dash.example.com:8443"),
            "dash.example.com"
        );
        assert_eq!(host_without_port("[::1]:8443"), "::1");
        assert_eq!(host_without_port("dash.example.com"), "dash.example.com");
    }
}
