//! Shakedown's data plane: an HTTP reverse proxy that injects faults with Envoy's `HTTPFault`
//! semantics and exports Envoy's metrics.
//!
//! The request path: a [`listener`] accepts HTTP/1.1 or h2c, matches a route and runs the
//! route's tower stack ([`stack`]): the [`fault`] layer (delay, abort, response rate limit), the
//! route [`timeout`], then the [`upstream`] forwarder. The control path ([`admin`], reloads in
//! [`runtime`], deadlines in [`fault::store`]) changes what the data path does only through
//! `watch` channels.

pub mod access_log;
pub mod admin;
pub mod body;
pub mod ctx;
pub mod demo;
pub mod fault;
pub mod listener;
pub mod metrics;
pub mod runtime;
pub mod stack;
pub mod tcp;
pub mod timeout;
pub mod toxiproxy;
pub mod upstream;

pub use runtime::{ApplyError, Proxy, ProxyOptions, ReloadStatus};
