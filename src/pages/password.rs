//! Password policy pages: why a new password was refused, and the expiry notice.

use super::{esc, html, layout};
use crate::proxy::Body;
use http::{Response, StatusCode};

pub fn refused(brand: &str, rules: &[String], form: &str) -> Response<Body> {
    let items: String = rules
        .iter()
        .map(|r| format!("<li>{}</li>", esc(r)))
        .collect();
    let body = format!(
        "<p>Your new password was not accepted:</p><ul id=\"password-rules\">{items}</ul>\
         <p><a id=\"back\" href=\"{}\">Back to the form</a></p>",
        esc(form)
    );
    html(
        StatusCode::UNPROCESSABLE_ENTITY,
        layout(brand, "Choose another password", &body),
    )
}

pub fn expired(brand: &str, form: &str, continue_to: Option<&str>) -> Response<Body> {
    let later = continue_to
        .map(|c| format!("<p><a id=\"later\" href=\"{}\">Not now</a></p>", esc(c)))
        .unwrap_or_default();
    let body = format!(
        "<p id=\"password-expired\">Your password has expired. Please choose a new one.</p>\
         <p><a id=\"change\" href=\"{}\">Change your password</a></p>{later}",
        esc(form)
    );
    html(StatusCode::OK, layout(brand, "Password expired", &body))
}
