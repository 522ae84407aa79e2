//! Shared fixtures for the integration tests: gateways on port 0, a real TLS
//! client, a recording upstream, the gatehouse binary as a child process, and
//! a headless Chromium for end-to-end tests.
#![allow(dead_code)]

pub mod browser;
pub mod gateway;
pub mod h2raw;
pub mod process;
pub mod redis;
pub mod upstream;
