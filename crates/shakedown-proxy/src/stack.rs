//! Every route's service stack, built in one place: layer order is behaviour.
//!
//! A fault above the timeout means an injected delay does not count against the route timeout
//! (as in Envoy, where the fault filter runs before the router starts its timer). Retries,
//! mirroring, circuit breaking and authorization slot in here as further layers.

use std::sync::Arc;

use shakedown_model::Route;
use tokio::sync::watch;
use tower::ServiceBuilder;

use crate::fault::{FaultLayer, FaultService, FaultSet};
use crate::metrics::ListenerStats;
use crate::timeout::{Timeout, TimeoutLayer};
use crate::upstream::{ClusterState, Upstream};

/// The service a route runs.
pub type RouteService = FaultService<Timeout<Upstream>>;

/// Builds the stack of one route of `listener`.
pub fn route_stack(
    listener: &str,
    route: &Route,
    cluster: Arc<ClusterState>,
    stats: Arc<ListenerStats>,
    faults: watch::Receiver<Arc<FaultSet>>,
) -> RouteService {
    ServiceBuilder::new()
        // HTTP faults (delay, abort, response rate limit) first, as Envoy's fault filter must be.
        .layer(FaultLayer::new(faults, stats, listener, &cluster.spec.name))
        // The route timeout, started after any injected delay, like Envoy's router timer.
        .layer(TimeoutLayer::new(route.timeout, cluster.stats.clone()))
        // Forward to an endpoint of the cluster (round robin, pooled, connect-failure retries).
        .service(Upstream::new(cluster, route.connect_retries))
}
