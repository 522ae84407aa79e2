//! Shared fixtures for the integration tests: gateways on port 0, a real TLS
//! client, a recording upstream, and the gatehouse binary as a child process.
#![allow(dead_code)]

pub mod gateway;
pub mod process;
pub mod redis;
pub mod upstream;
