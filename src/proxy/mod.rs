//! Forwarding to the dashboard: the upstream client (timeouts, websockets),
//! its connection pool (HTTP/1.1 over TCP or TLS) and header hygiene. `proxy`
//! forwards and never looks at auth state.

pub mod client;
pub mod headers;
mod pool;

pub use client::{ProxyError, Upstream};
pub use pool::UpstreamBody;

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body type of every response gatehouse produces: streamed from the
/// upstream or rendered by gatehouse.
pub type Body = UnsyncBoxBody<Bytes, BoxError>;

pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

pub fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed_unsync()
}

pub fn stream<B>(body: B) -> Body
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    body.map_err(Into::into).boxed_unsync()
}
