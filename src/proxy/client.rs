//! The forwarding of one request to the upstream, and websocket splicing.

use super::headers;
use super::pool::{Pool, PoolError, UpstreamBody};
use super::Body;
use crate::config::validate::UpstreamSettings;
use futures_util::FutureExt;
use http::header::{self, HeaderValue};
use http::uri::{PathAndQuery, Uri};
use http::{Request, Response, StatusCode, Version};
use hyper_util::rt::TokioIo;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// Why a request could not be forwarded.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("upstream unreachable: {0}")]
    Unreachable(String),
    #[error("upstream did not answer within {0:?}")]
    Timeout(Duration),
    #[error("upstream setup: {0}")]
    Setup(String),
}

/// A pooled client for the configured upstream.
#[derive(Clone)]
pub struct Upstream {
    pool: Arc<Pool>,
    settings: Arc<UpstreamSettings>,
}

/// What the gateway decided about a request that is to be forwarded.
pub struct Forward<'a> {
    /// The normalised path plus the original query: what was checked.
    pub path_and_query: PathAndQuery,
    /// The host the client addressed (authority without userinfo).
    pub host: &'a str,
    pub client: crate::client_ip::ClientIp,
}

impl Upstream {
    /// `workers`: the threads serving connections, one idle stack each.
    pub fn new(settings: &UpstreamSettings, workers: usize) -> Result<Self, ProxyError> {
        let pool = Pool::new(settings, client_tls(settings)?, workers)
            .map_err(|e| ProxyError::Setup(format!("upstream.url: {e}")))?;
        Ok(Self {
            pool,
            settings: Arc::new(settings.clone()),
        })
    }

    /// Forward `req` (headers already cleaned by the gate) and return the
    /// upstream's response head with its body streaming. Websocket upgrades are
    /// spliced: the client's and upstream's upgraded connections are joined
    /// once both sides have switched protocols.
    ///
    /// The request is rewritten when this is called, and the future holds
    /// only the exchange with the upstream and what the answer needs: it is
    /// part of every proxied request's future, which is moved whole (as an
    /// `async fn`, it also kept the request it had handed on).
    pub fn forward<'a>(
        &'a self,
        req: Request<Body>,
        fwd: Forward<'a>,
        client_upgrade: Option<hyper::upgrade::OnUpgrade>,
        guard: Option<Guard>,
    ) -> impl Future<Output = Result<Response<UpstreamBody>, ProxyError>> + Send + 'a {
        let host = fwd.host;
        let req = self.prepare(req, fwd, client_upgrade.is_some());
        let timeout = self.settings.response_timeout;
        tokio::time::timeout(timeout, self.pool.send(req)).map(move |sent| match sent {
            Err(_) => Err(ProxyError::Timeout(timeout)),
            Ok(Err(e)) => Err(classify(e)),
            Ok(Ok(resp)) => self.finish(resp, host, client_upgrade, guard),
        })
    }

    /// The request as the upstream gets it: no hop-by-hop fields or client
    /// claims, gatehouse's forwarding fields, the upstream's Host, origin form.
    fn prepare(&self, mut req: Request<Body>, fwd: Forward<'_>, upgrading: bool) -> Request<Body> {
        let upgrade = headers::upgrade_protocol(req.headers());
        headers::strip_hop_by_hop(req.headers_mut());
        headers::strip_client_claims(req.headers_mut());
        headers::set_forwarded(req.headers_mut(), fwd.client, fwd.host);
        if let (Some(proto), true) = (upgrade, upgrading) {
            req.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
            req.headers_mut().insert(header::UPGRADE, proto);
        }
        let preserved = match self.settings.preserve_host {
            true => HeaderValue::from_str(fwd.host).ok(),
            false => None,
        };
        // Else the upstream's own authority: HTTP/1.1 requires a Host
        // (RFC 9112 §3.2) and hyper's connection adds none of its own.
        let host_value =
            preserved.or_else(|| HeaderValue::from_str(self.settings.authority.as_str()).ok());
        if let Some(h) = host_value {
            req.headers_mut().insert(header::HOST, h);
        }
        // Origin form (RFC 9112 §3.2.1): the connection already names the upstream.
        *req.uri_mut() = Uri::from(fwd.path_and_query);
        // The dashboard speaks HTTP/1.1 whatever the browser used.
        *req.version_mut() = Version::HTTP_11;
        req
    }

    /// The upstream's answer as the client gets it, or the splice of an
    /// upgraded connection.
    fn finish(
        &self,
        mut resp: Response<UpstreamBody>,
        fwd_host: &str,
        client_upgrade: Option<hyper::upgrade::OnUpgrade>,
        guard: Option<Guard>,
    ) -> Result<Response<UpstreamBody>, ProxyError> {
        if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
            match client_upgrade {
                Some(client_side) => {
                    let upstream_side = hyper::upgrade::on(&mut resp);
                    tokio::spawn(splice(client_side, upstream_side, guard));
                }
                None => {
                    // An upstream switching protocols unasked would desync us.
                    return Err(ProxyError::Unreachable(
                        "upstream switched protocols without an upgrade request".into(),
                    ));
                }
            }
        } else {
            headers::strip_hop_by_hop(resp.headers_mut());
            headers::make_location_public(
                resp.headers_mut(),
                self.settings.authority.as_str(),
                fwd_host,
            );
        }
        Ok(resp)
    }
}

/// A future that completes when a spliced connection must be closed (its
/// session ended).
pub type Guard = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

async fn splice(
    client: hyper::upgrade::OnUpgrade,
    upstream: hyper::upgrade::OnUpgrade,
    guard: Option<Guard>,
) {
    let (client, upstream) = match tokio::try_join!(client, upstream) {
        Ok(pair) => pair,
        Err(e) => {
            tracing::debug!(error = %e, "websocket upgrade did not complete");
            return;
        }
    };
    let mut client = TokioIo::new(client);
    let mut upstream = TokioIo::new(upstream);
    let guard = guard.unwrap_or_else(|| Box::pin(std::future::pending()));
    tokio::select! {
        res = tokio::io::copy_bidirectional(&mut client, &mut upstream) => {
            if let Err(e) = res {
                tracing::debug!(error = %e, "websocket connection ended with an error");
            }
        }
        _ = guard => tracing::debug!("websocket closed: its session ended"),
    }
}

fn classify(e: PoolError) -> ProxyError {
    match e {
        PoolError::ConnectTimeout(after) => ProxyError::Timeout(after),
        e => ProxyError::Unreachable(error_chain(&e)),
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        text.push_str(": ");
        text.push_str(&s.to_string());
        cur = s.source();
    }
    text
}

fn client_tls(settings: &UpstreamSettings) -> Result<rustls::ClientConfig, ProxyError> {
    crate::tls::client_config(
        settings.ca_file.as_deref(),
        settings.scheme == http::uri::Scheme::HTTPS,
    )
    .map_err(|e| ProxyError::Setup(format!("upstream.ca_file: {e}")))
}
