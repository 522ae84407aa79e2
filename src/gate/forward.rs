//! Stage 7: forwarding with the session's vault cookies and nothing a
//! browser may not send.

use super::*;
use futures_util::FutureExt;
use std::future::Future;

impl Gate {
    /// Stage 7, proxy: forward to the dashboard with the session's vault
    /// cookies and nothing a browser may not send.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn forward<'a>(
        &'a self,
        live: &'a Live,
        parts: http::request::Parts,
        body: Body,
        target: PathAndQuery,
        facts: &'a Facts,
        vault: Option<&Vault>,
        upgrade: Option<hyper::upgrade::OnUpgrade>,
        upstream_time: &'a mut Option<Duration>,
    ) -> impl Future<Output = Result<Response<Body>, GateError>> + Send + 'a {
        self.forward_upgradable(
            live,
            parts,
            body,
            target,
            facts,
            vault,
            upgrade,
            None,
            upstream_time,
        )
    }

    /// The request is rewritten when this is called; the future is the
    /// upstream's exchange and the answer's clean-up only (see
    /// `Upstream::forward`).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn forward_upgradable<'a>(
        &'a self,
        live: &'a Live,
        mut parts: http::request::Parts,
        body: Body,
        target: PathAndQuery,
        facts: &'a Facts,
        vault: Option<&Vault>,
        upgrade: Option<hyper::upgrade::OnUpgrade>,
        guard: Option<proxy::client::Guard>,
        upstream_time: &'a mut Option<Duration>,
    ) -> impl Future<Output = Result<Response<Body>, GateError>> + Send + 'a {
        let inject = vault
            .map(|v| v.pairs_for(&facts.path, facts.now_ms))
            .unwrap_or_default();
        let is_vaulted =
            |n: &str| self.vaulted.contains(n) || vault.is_some_and(|v| v.names().any(|x| x == n));
        vault::rewrite_request_cookies(&mut parts.headers, OWN_PREFIX, &is_vaulted, &inject);
        let req = Request::from_parts(parts, body);
        let sent = Instant::now();
        let fwd = proxy::client::Forward {
            path_and_query: target,
            host: &facts.host,
            client: facts.client,
        };
        live.upstream
            .forward(req, fwd, upgrade, guard)
            .map(move |resp| {
                let resp = resp?;
                *upstream_time = Some(sent.elapsed());
                let mut resp = resp.map(proxy::stream);
                strip_own_set_cookies(resp.headers_mut());
                Ok(resp)
            })
    }
}

/// The dashboard may not set gatehouse's own cookies.
pub(super) fn strip_own_set_cookies(headers: &mut HeaderMap) {
    let values: Vec<HeaderValue> = headers
        .get_all(header::SET_COOKIE)
        .iter()
        .cloned()
        .collect();
    if values
        .iter()
        .any(|v| v.as_bytes().starts_with(OWN_PREFIX.as_bytes()))
    {
        headers.remove(header::SET_COOKIE);
        for v in values
            .into_iter()
            .filter(|v| !v.as_bytes().starts_with(OWN_PREFIX.as_bytes()))
        {
            headers.append(header::SET_COOKIE, v);
        }
    }
}
