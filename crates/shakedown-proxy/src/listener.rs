//! A listener: accepts connections, speaks HTTP/1.1 and h2c on the same port, matches routes and
//! drains gracefully.
//!
//! The route table arrives through a `watch` channel, so a config reload swaps routes under
//! live connections without closing them. Stopping a listener closes its socket at once and lets
//! in-flight requests finish (up to the drain timeout).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response, StatusCode, Version, header};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use shakedown_model::Route;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tower::ServiceExt;

use crate::access_log::{AccessLog, Entry};
use crate::body::ResponseBody;
use crate::ctx::{Flag, RequestInfo};
use crate::metrics::ListenerStats;
use crate::stack::RouteService;

/// The routes of one listener, as published on a reload.
#[derive(Debug)]
pub struct RouteTable {
    /// Listener name.
    pub listener: String,
    /// Its stats (the stat prefix may change on reload).
    pub stats: Arc<ListenerStats>,
    /// Routes, first match wins.
    pub routes: Vec<RouteEntry>,
}

/// A route and its service stack.
#[derive(Debug)]
pub struct RouteEntry {
    /// The route.
    pub route: Route,
    /// Its stack.
    pub service: RouteService,
}

impl RouteTable {
    fn find(&self, req: &Request<Incoming>) -> Option<&RouteEntry> {
        let path = req.uri().path();
        let host = req
            .uri()
            .host()
            .map(str::to_owned)
            .or_else(|| {
                req.headers()
                    .get(header::HOST)
                    .and_then(|h| h.to_str().ok())
                    .map(strip_port)
            })
            .unwrap_or_default()
            .to_ascii_lowercase();
        self.routes.iter().find(|e| {
            let r = &e.route;
            (r.hosts.is_empty() || r.hosts.iter().any(|h| h.matches(&host)))
                && r.path.matches(path)
                && r.headers.iter().all(|m| m.matches(req.headers()))
        })
    }
}

fn strip_port(host: &str) -> String {
    if let Some(rest) = host.strip_prefix('[') {
        // An IPv6 literal: `[::1]:80`.
        return rest.split(']').next().unwrap_or(rest).to_owned();
    }
    match host.rsplit_once(':') {
        Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) => h.to_owned(),
        _ => host.to_owned(),
    }
}

/// A running listener.
#[derive(Debug)]
pub struct ListenerHandle {
    /// Name.
    pub name: String,
    /// The address as configured (port 0 stays 0 here).
    pub configured: SocketAddr,
    /// The address actually bound.
    pub local_addr: SocketAddr,
    routes: watch::Sender<Arc<RouteTable>>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl ListenerHandle {
    /// Publishes a new route table to the running listener.
    pub fn update(&self, table: Arc<RouteTable>) {
        self.routes.send_replace(table);
    }

    /// Stops accepting now and waits for in-flight requests to finish (up to the drain timeout).
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

/// Starts serving on an already-bound socket.
pub fn spawn(
    listener: TcpListener,
    configured: SocketAddr,
    table: Arc<RouteTable>,
    access_log: Option<AccessLog>,
    drain: Duration,
) -> std::io::Result<ListenerHandle> {
    let local_addr = listener.local_addr()?;
    let name = table.listener.clone();
    let (routes, routes_rx) = watch::channel(table);
    let (stop, stop_rx) = watch::channel(false);
    let ctx = Arc::new(Ctx {
        routes: routes_rx,
        access_log,
    });
    let task = tokio::spawn(accept_loop(listener, ctx, stop_rx, drain));
    Ok(ListenerHandle {
        name,
        configured,
        local_addr,
        routes,
        stop,
        task,
    })
}

struct Ctx {
    routes: watch::Receiver<Arc<RouteTable>>,
    access_log: Option<AccessLog>,
}

async fn accept_loop(
    listener: TcpListener,
    ctx: Arc<Ctx>,
    mut stop: watch::Receiver<bool>,
    drain: Duration,
) {
    let graceful = GracefulShutdown::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).keep_alive(true);
    builder.http2().timer(TokioTimer::new());
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stop.changed() => break,
        };
        let _ = stream.set_nodelay(true);
        let stats = ctx.routes.borrow().stats.clone();
        stats.cx_total.inc();
        stats.cx_active.inc();
        let conn_ctx = ctx.clone();
        let svc = service_fn(move |req| handle(conn_ctx.clone(), peer, req));
        let conn = builder
            .serve_connection_with_upgrades(TokioIo::new(stream), svc)
            .into_owned();
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(%peer, "connection ended: {e}");
            }
            stats.cx_active.dec();
        });
    }
    drop(listener);
    if tokio::time::timeout(drain, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("drain timeout reached; closing remaining connections");
    }
}

async fn handle(
    ctx: Arc<Ctx>,
    _peer: SocketAddr,
    mut req: Request<Incoming>,
) -> Result<Response<ResponseBody>, Infallible> {
    let table = ctx.routes.borrow().clone();
    let stats = table.stats.clone();
    let info = Arc::new(RequestInfo::new());
    stats.rq_total.inc();
    stats.rq_active.inc();
    if req.version() == Version::HTTP_2 {
        stats.rq_http2.inc()
    } else {
        stats.rq_http1.inc()
    }

    let log = ctx.access_log.as_ref().map(|_| LogFields::of(&req));
    let mut response = match table.find(&req) {
        None => {
            info.set(Flag::NR);
            stats.no_route.inc();
            let mut r = Response::new(ResponseBody::empty());
            *r.status_mut() = StatusCode::NOT_FOUND;
            r
        }
        Some(entry) => {
            let _ = info.route.set(entry.route.name.clone());
            let _ = info.cluster.set(entry.route.cluster.clone());
            req.extensions_mut().insert(info.clone());
            match entry.service.clone().oneshot(req).await {
                Ok(r) => r,
                Err(never) => match never {},
            }
        }
    };
    let status = response.status().as_u16();
    let access_log = ctx.access_log.clone();
    let listener = table.listener.clone();
    response.body_mut().on_end(Box::new(move || {
        let elapsed = info.start.elapsed();
        stats.rq_active.dec();
        stats.record_response(status, elapsed);
        if let (Some(log), Some(fields)) = (access_log, log) {
            log.log(&Entry {
                start_time: humantime::format_rfc3339_millis(fields.wall).to_string(),
                listener: &listener,
                route: info.route.get().map_or("-", String::as_str),
                method: &fields.method,
                path: &fields.path,
                authority: &fields.authority,
                protocol: fields.protocol,
                response_code: status,
                response_flags: info.flags().to_string(),
                failure_source: info.failure_source(status),
                upstream_cluster: info.cluster.get().map_or("-", String::as_str),
                upstream_host: info.upstream_host().unwrap_or("-"),
                duration_ms: (elapsed.as_secs_f64() * 1e6).round() / 1e3,
            });
        }
    }));
    Ok(response)
}

/// Request fields kept for the access log (the request itself moves down the stack).
struct LogFields {
    wall: std::time::SystemTime,
    method: String,
    path: String,
    authority: String,
    protocol: &'static str,
}

impl LogFields {
    fn of(req: &Request<Incoming>) -> Self {
        Self {
            wall: std::time::SystemTime::now(),
            method: req.method().to_string(),
            path: req
                .uri()
                .path_and_query()
                .map_or_else(|| "/".to_owned(), |p| p.to_string()),
            authority: req
                .uri()
                .authority()
                .map(|a| a.to_string())
                .or_else(|| {
                    req.headers()
                        .get(header::HOST)
                        .and_then(|h| h.to_str().ok())
                        .map(str::to_owned)
                })
                .unwrap_or_default(),
            protocol: match req.version() {
                Version::HTTP_2 => "HTTP/2",
                Version::HTTP_10 => "HTTP/1.0",
                _ => "HTTP/1.1",
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::strip_port;

    #[test]
    fn ports_are_stripped_from_hosts() {
        assert_eq!(strip_port("example.com:8080"), "example.com");
        assert_eq!(strip_port("example.com"), "example.com");
        assert_eq!(strip_port("[::1]:80"), "::1");
    }
}
