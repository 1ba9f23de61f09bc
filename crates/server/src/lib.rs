//! The `mana-ai` service as a library: configuration, boot sequence, HTTP surface and
//! the `dev` command. The binary (`main.rs`) is a thin CLI over it; integration tests
//! drive the same code over real HTTP.

pub mod app;
pub mod audit_http;
pub mod auth;
pub mod config;
pub mod dev;
pub mod health;
pub mod health_cli;
pub mod http;
pub mod http_server;
pub mod json_error;
pub mod local_cli;
pub mod ops_cli;
pub mod signal;
