//! The route timeout as a tower `Layer`: time allowed for the upstream's response headers.
//!
//! It sits below the fault layer, so — like Envoy's router timer — it starts after an injected
//! delay. On expiry the upstream request is dropped (hyper resets it) and the client gets Envoy's
//! `504 upstream request timeout` with the `UT` flag.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{HeaderValue, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use tower::{Layer, Service};

use crate::body::ResponseBody;
use crate::ctx::{Flag, RequestInfo};
use crate::metrics::ClusterStats;

/// Builds [`Timeout`]s.
#[derive(Debug, Clone)]
pub struct TimeoutLayer {
    timeout: Option<Duration>,
    stats: Arc<ClusterStats>,
}

impl TimeoutLayer {
    /// `None` disables the timeout (Istio's default).
    pub fn new(timeout: Option<Duration>, stats: Arc<ClusterStats>) -> Self {
        Self { timeout, stats }
    }
}

impl<S> Layer<S> for TimeoutLayer {
    type Service = Timeout<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Timeout {
            inner,
            timeout: self.timeout,
            stats: self.stats.clone(),
        }
    }
}

/// Answers 504 if the inner service has not produced response headers in time.
#[derive(Debug, Clone)]
pub struct Timeout<S> {
    inner: S,
    timeout: Option<Duration>,
    stats: Arc<ClusterStats>,
}

impl<S> Service<Request<Incoming>> for Timeout<S>
where
    S: Service<Request<Incoming>, Response = Response<ResponseBody>, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = Response<ResponseBody>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<ResponseBody>, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Incoming>) -> Self::Future {
        let Some(limit) = self.timeout else {
            return Box::pin(self.inner.call(req));
        };
        let info = req.extensions().get::<Arc<RequestInfo>>().cloned();
        let stats = self.stats.clone();
        let fut = self.inner.call(req);
        Box::pin(async move {
            match tokio::time::timeout(limit, fut).await {
                Ok(r) => r,
                Err(_) => {
                    if let Some(i) = info {
                        i.set(Flag::UT);
                    }
                    stats.rq_timeout.inc();
                    stats.charge(504);
                    Ok(local_reply(
                        StatusCode::GATEWAY_TIMEOUT,
                        "upstream request timeout",
                    ))
                }
            }
        })
    }
}

/// A plain-text local reply.
pub fn local_reply(status: StatusCode, text: &'static str) -> Response<ResponseBody> {
    let mut r = Response::new(ResponseBody::full(text));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    r
}
