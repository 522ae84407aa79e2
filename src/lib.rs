//! gatehouse: a TLS-terminating access gateway in front of an unmodified dashboard.

pub mod access;
pub mod clock;
pub mod config;
