//! Upstream clusters and the service that forwards a request to one of their endpoints.
//!
//! Each cluster owns two pooled hyper clients (HTTP/1.1 keep-alive and HTTP/2 prior knowledge)
//! and picks endpoints round robin. Request and response bodies stream through; only a request
//! without a body can be retried (after a connect failure, the one retry condition so far).
//! Upstream stats are charged here: `upstream_rq_total` per attempt, the response code at
//! headers, `upstream_rq_time` when the response body ends.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Uri, Version};
use http_body_util::{Either, Empty};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use shakedown_model::{Cluster, UpstreamProtocol};
use tower::Service;

use crate::body::ResponseBody;
use crate::ctx::{Flag, RequestInfo};
use crate::metrics::{ClusterStats, ProxyStats};
use crate::timeout::local_reply;

/// The body sent upstream: the client's stream, or nothing on a retry.
pub type UpstreamBody = Either<Incoming, Empty<Bytes>>;

type HttpClient = Client<HttpConnector, UpstreamBody>;

/// A cluster ready to take requests.
#[derive(Debug)]
pub struct ClusterState {
    /// The validated config.
    pub spec: Cluster,
    /// Its stats.
    pub stats: Arc<ClusterStats>,
    next: AtomicUsize,
    h1: HttpClient,
    h2: HttpClient,
}

impl ClusterState {
    /// Builds the clients of a cluster (no connection is opened yet).
    pub fn new(spec: Cluster, stats: &ProxyStats) -> Arc<Self> {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(spec.connect_timeout));
        let mut h1 = Client::builder(TokioExecutor::new());
        h1.pool_timer(TokioTimer::new())
            .pool_max_idle_per_host(1024)
            .set_host(false);
        let mut h2 = Client::builder(TokioExecutor::new());
        h2.pool_timer(TokioTimer::new())
            .http2_only(true)
            .timer(TokioTimer::new())
            .set_host(false);
        Arc::new(Self {
            stats: stats.cluster(&spec.stat_name),
            next: AtomicUsize::new(0),
            h1: h1.build(connector.clone()),
            h2: h2.build(connector),
            spec,
        })
    }

    fn pick(&self) -> &http::uri::Authority {
        let i = self.next.fetch_add(1, Ordering::Relaxed);
        &self.spec.endpoints[i % self.spec.endpoints.len()]
    }
}

/// Forwards requests to a cluster.
#[derive(Debug, Clone)]
pub struct Upstream {
    cluster: Arc<ClusterState>,
    connect_retries: u32,
}

impl Upstream {
    /// A forwarder retrying connect failures `connect_retries` times (bodiless requests only).
    pub fn new(cluster: Arc<ClusterState>, connect_retries: u32) -> Self {
        Self {
            cluster,
            connect_retries,
        }
    }
}

impl Service<Request<Incoming>> for Upstream {
    type Response = Response<ResponseBody>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<ResponseBody>, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Incoming>) -> Self::Future {
        Box::pin(forward(self.cluster.clone(), self.connect_retries, req))
    }
}

async fn forward(
    cluster: Arc<ClusterState>,
    retries: u32,
    req: Request<Incoming>,
) -> Result<Response<ResponseBody>, Infallible> {
    let (parts, body) = req.into_parts();
    let info = parts.extensions.get::<Arc<RequestInfo>>().cloned();
    let h2 = match cluster.spec.protocol {
        UpstreamProtocol::Auto => parts.version == Version::HTTP_2,
        UpstreamProtocol::Http1 => false,
        UpstreamProtocol::Http2 => true,
    };
    let mut headers = parts.headers;
    strip_hop_by_hop(&mut headers, h2);
    if !h2 && !headers.contains_key(header::HOST) {
        // An HTTP/2 client sent :authority; HTTP/1.1 upstreams need it as Host.
        if let Some(a) = parts
            .uri
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
        {
            headers.insert(header::HOST, a);
        }
    }
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let replayable = http_body::Body::is_end_stream(&body);
    let attempts = 1 + if replayable { retries } else { 0 };
    let mut body = Some(body);
    let stats = &cluster.stats;

    for attempt in 0..attempts {
        let endpoint = cluster.pick();
        if let Some(i) = &info {
            i.set_upstream_host(endpoint.as_str());
        }
        let uri: Uri = match format!("http://{endpoint}{path}").parse() {
            Ok(u) => u,
            Err(_) => return Ok(local_reply(StatusCode::BAD_REQUEST, "bad request path")),
        };
        let mut req = Request::new(match body.take() {
            Some(b) => Either::Left(b),
            None => Either::Right(Empty::new()),
        });
        *req.method_mut() = parts.method.clone();
        *req.uri_mut() = uri;
        *req.version_mut() = if h2 {
            Version::HTTP_2
        } else {
            Version::HTTP_11
        };
        *req.headers_mut() = if attempt + 1 < attempts {
            headers.clone()
        } else {
            std::mem::take(&mut headers)
        };

        stats.rq_total.inc();
        stats.rq_active.inc();
        let active = ActiveRq(stats.clone());
        let sent = Instant::now();
        let client = if h2 { &cluster.h2 } else { &cluster.h1 };
        match client.request(req).await {
            Ok(resp) => {
                let (mut parts, body) = resp.into_parts();
                stats.charge(parts.status.as_u16());
                strip_hop_by_hop(&mut parts.headers, false);
                let mut body = ResponseBody::upstream(body);
                let timing = stats.clone();
                body.on_end(Box::new(move || {
                    timing.rq_time.observe(sent.elapsed());
                    drop(active);
                }));
                return Ok(Response::from_parts(parts, body));
            }
            Err(e) if e.is_connect() => {
                drop(active);
                stats.cx_connect_fail.inc();
                if let Some(i) = &info {
                    i.set(Flag::UF);
                }
                if attempt + 1 < attempts {
                    stats.rq_retry.inc();
                    continue;
                }
                if attempt > 0
                    && let Some(i) = &info
                {
                    i.set(Flag::URX);
                }
                stats.charge(503);
                tracing::debug!(cluster = %cluster.spec.name, %endpoint, "connect failed: {e:?}");
                return Ok(local_reply(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "upstream connect error or disconnect/reset before headers. reset reason: connection failure",
                ));
            }
            Err(e) => {
                drop(active);
                if let Some(i) = &info {
                    i.set(Flag::UC);
                }
                stats.charge(503);
                tracing::debug!(cluster = %cluster.spec.name, %endpoint, "upstream failed: {e:?}");
                return Ok(local_reply(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "upstream connect error or disconnect/reset before headers. reset reason: connection termination",
                ));
            }
        }
    }
    if let Some(i) = &info {
        i.set(Flag::UH);
    }
    Ok(local_reply(
        StatusCode::SERVICE_UNAVAILABLE,
        "no healthy upstream",
    ))
}

/// Decrements `upstream_rq_active` once, however the request ends.
struct ActiveRq(Arc<ClusterStats>);

impl Drop for ActiveRq {
    fn drop(&mut self) {
        self.0.rq_active.dec();
    }
}

const HOP_BY_HOP: [&str; 7] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "upgrade",
    "http2-settings",
    "trailer",
];

/// Removes headers that belong to one connection, not the message (RFC 9110 §7.6.1). `te` is
/// kept only as `te: trailers` towards an HTTP/2 upstream, which gRPC needs.
fn strip_hop_by_hop(headers: &mut HeaderMap, keep_te_trailers: bool) {
    let listed: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for name in listed {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
    let te_trailers = headers
        .get(header::TE)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"trailers"));
    if !(keep_te_trailers && te_trailers) {
        headers.remove(header::TE);
    }
}
