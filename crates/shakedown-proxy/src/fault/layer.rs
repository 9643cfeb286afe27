//! The fault filter as a tower `Layer`: it sits first in every route's stack, as Envoy requires
//! of its fault filter ("before any other filter, including the router").
//!
//! It reads the current [`FaultSet`] from a `watch` receiver per request — turning a fault on,
//! changing or removing it is one send on the control side, with no rebuild of the stack.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use hyper::body::Incoming;
use tokio::sync::watch;
use tower::{Layer, Service};

use super::abort;
use super::decide::{Plan, decide};
use super::store::FaultSet;
use crate::body::ResponseBody;
use crate::ctx::{Flag, RequestInfo};
use crate::metrics::ListenerStats;

/// Builds [`FaultService`]s for one route.
#[derive(Debug, Clone)]
pub struct FaultLayer {
    faults: watch::Receiver<Arc<FaultSet>>,
    stats: Arc<ListenerStats>,
    listener: Arc<str>,
    cluster: Arc<str>,
}

impl FaultLayer {
    /// A layer for a route of `listener` that goes to `cluster`.
    pub fn new(
        faults: watch::Receiver<Arc<FaultSet>>,
        stats: Arc<ListenerStats>,
        listener: &str,
        cluster: &str,
    ) -> Self {
        Self {
            faults,
            stats,
            listener: listener.into(),
            cluster: cluster.into(),
        }
    }
}

impl<S> Layer<S> for FaultLayer {
    type Service = FaultService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        FaultService {
            layer: self.clone(),
            inner,
        }
    }
}

/// Applies the faults decided for each request, then calls the inner service.
#[derive(Debug, Clone)]
pub struct FaultService<S> {
    layer: FaultLayer,
    inner: S,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S> Service<Request<Incoming>> for FaultService<S>
where
    S: Service<Request<Incoming>, Response = Response<ResponseBody>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send,
{
    type Response = Response<ResponseBody>;
    type Error = Infallible;
    type Future = BoxFuture<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Incoming>) -> Self::Future {
        let set = self.layer.faults.borrow().clone();
        let plan = if set.faults.is_empty() {
            Plan::default()
        } else {
            decide(
                &set,
                &self.layer.listener,
                &self.layer.cluster,
                req.headers(),
                &self.layer.stats.fault,
            )
        };
        // The standard tower dance: the ready service goes into the future, a clone stays.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        if plan.is_noop() {
            return Box::pin(inner.call(req));
        }
        let stats = self.layer.stats.clone();
        Box::pin(async move {
            let info = req.extensions().get::<Arc<RequestInfo>>().cloned();
            let Plan {
                delay,
                abort: abort_with,
                abort_downstream_cluster,
                throttle,
                guards,
            } = plan;
            if !delay.is_zero() {
                if let Some(i) = &info {
                    i.set(Flag::DI);
                }
                // The request (and its body) waits here untouched; it is forwarded intact.
                super::clock::delay(delay).await;
            }
            let mut response = match abort_with {
                Some(with) => {
                    stats.fault.aborts_injected.inc();
                    if let Some(c) = abort_downstream_cluster
                        .and_then(|c| stats.fault.downstream_cluster("aborts_injected", &c))
                    {
                        c.inc();
                    }
                    if let Some(i) = &info {
                        i.set(Flag::FI);
                    }
                    abort::response(with, abort::is_grpc(req.headers()), req.version())
                }
                None => match inner.call(req).await {
                    Ok(r) => r,
                    Err(never) => match never {},
                },
            };
            if let Some(rate) = throttle {
                response.body_mut().throttle(rate);
            }
            if !guards.is_empty() {
                response.body_mut().on_end(Box::new(move || drop(guards)));
            }
            Ok(response)
        })
    }
}
