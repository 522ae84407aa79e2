//! gatehouse: a TLS-terminating access gateway in front of an unmodified dashboard.

pub mod clock;
pub mod config;
pub mod store;
