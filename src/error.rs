//! One enum for everything that ends a request inside gatehouse, mapped to a
//! status and a page in exactly one place.

use crate::pages::{self, ErrorPage};
use crate::proxy::{Body, ProxyError};
use http::{Response, StatusCode};

#[derive(Debug, thiserror::Error)]
pub enum GateError {
    /// The request is malformed or ambiguous; it is never forwarded.
    #[error("bad request: {0}")]
    BadRequest(&'static str),
    /// The Host is not one this gateway serves.
    #[error("misdirected request")]
    Misdirected,
    /// The area refused the client. `json`: an API client (or an area that
    /// serves machines) gets JSON, never an HTML page.
    #[error("access denied ({reason})")]
    AccessDenied {
        reason: String,
        reference: String,
        json: bool,
    },
    /// A gatehouse form without this session's token, or from another site.
    #[error("form refused (CSRF)")]
    Forbidden,
    /// A signed-in user who is not an administrator.
    #[error("administrators only")]
    AdminOnly,
    /// A session is required and there is none (non-browser clients).
    #[error("authentication required")]
    Unauthorized,
    /// A body gatehouse reads itself did not arrive in time.
    #[error("request body too slow")]
    RequestTimeout,
    #[error("request body too large")]
    PayloadTooLarge,
    #[error("not found")]
    NotFound,
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("{0}")]
    Upstream(#[from] ProxyError),
    /// The store cannot answer: fail closed.
    #[error("state store unavailable")]
    StoreUnavailable,
    /// The client's address started too many pre-sign-in sessions lately.
    #[error("too many new sign-in visits from one address")]
    TooManyNewVisits,
}

impl GateError {
    pub fn status(&self) -> StatusCode {
        match self {
            GateError::BadRequest(_) => StatusCode::BAD_REQUEST,
            GateError::Misdirected => StatusCode::MISDIRECTED_REQUEST,
            GateError::AccessDenied { .. } => StatusCode::FORBIDDEN,
            GateError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            GateError::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            GateError::Unauthorized => StatusCode::UNAUTHORIZED,
            GateError::Forbidden => StatusCode::FORBIDDEN,
            GateError::AdminOnly => StatusCode::FORBIDDEN,
            GateError::NotFound => StatusCode::NOT_FOUND,
            GateError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            GateError::Upstream(ProxyError::Timeout(_)) => StatusCode::GATEWAY_TIMEOUT,
            GateError::Upstream(_) => StatusCode::BAD_GATEWAY,
            GateError::StoreUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            GateError::TooManyNewVisits => StatusCode::TOO_MANY_REQUESTS,
        }
    }

    /// Render the page a browser sees.
    pub fn into_response(self, brand: &str) -> Response<Body> {
        let status = self.status();
        if let GateError::AccessDenied {
            reference,
            json: true,
            ..
        } = &self
        {
            let body = serde_json::json!({"error": "access_denied", "reference": reference});
            let mut r = Response::new(crate::proxy::full(body.to_string()));
            *r.status_mut() = status;
            let h = r.headers_mut();
            h.insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("application/json"),
            );
            h.insert(
                http::header::CACHE_CONTROL,
                http::HeaderValue::from_static("no-store"),
            );
            return r;
        }
        let (title, message, advice, reference) = match &self {
            GateError::BadRequest(_) => (
                "Bad request",
                "The address or the request could not be understood.",
                "Check the address, or go back to the start page.",
                None,
            ),
            GateError::Misdirected => (
                "Wrong address",
                "This server does not serve the site you asked for.",
                "Check the address you typed.",
                None,
            ),
            GateError::AccessDenied { reference, .. } => (
                "Access denied",
                "Access from your network or country is not allowed for this area.",
                "If you need access, contact your administrator and quote the reference below.",
                Some(reference.as_str()),
            ),
            GateError::AdminOnly => (
                "Administrators only",
                "This page is for administrators of this gateway.",
                "Go back to the dashboard. If you need access, ask an administrator.",
                None,
            ),
            GateError::Forbidden => (
                "Form expired",
                "This form was sent from another site or has expired.",
                "Go back, reload the page and try again.",
                None,
            ),
            GateError::Unauthorized => (
                "Sign-in required",
                "You need to sign in to use this page.",
                "Sign in, then try again.",
                None,
            ),
            GateError::RequestTimeout => (
                "Request timed out",
                "The form took too long to arrive.",
                "Check your connection and try again.",
                None,
            ),
            GateError::PayloadTooLarge => (
                "Request too large",
                "The form you sent is larger than allowed.",
                "Go back and try again with less data.",
                None,
            ),
            GateError::NotFound => (
                "Not found",
                "There is no page at this address.",
                "Check the address, or go back to the start page.",
                None,
            ),
            GateError::MethodNotAllowed => (
                "Not allowed",
                "This page cannot be used that way.",
                "Go back and use the form on the page.",
                None,
            ),
            GateError::Upstream(ProxyError::Timeout(_)) => (
                "The dashboard is not answering",
                "The dashboard took too long to answer.",
                "Wait a moment and try again.",
                None,
            ),
            GateError::Upstream(_) => (
                "The dashboard is unavailable",
                "The dashboard behind this gateway cannot be reached right now.",
                "Wait a moment and try again. If it persists, tell your administrator.",
                None,
            ),
            GateError::StoreUnavailable => (
                "Sign-in temporarily unavailable",
                "Sign-in is temporarily unavailable.",
                "Please try again in a minute. Nothing you did caused this.",
                None,
            ),
            GateError::TooManyNewVisits => (
                "Too many new visits",
                "The sign-in page has been opened in too many new browser sessions in the last few minutes.",
                "Use a sign-in page you already have open, or wait 15 minutes and try again.",
                None,
            ),
        };
        pages::error(
            brand,
            ErrorPage {
                status,
                title,
                message,
                advice,
                reference,
            },
        )
    }
}
