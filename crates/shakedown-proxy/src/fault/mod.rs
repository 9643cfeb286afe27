//! HTTP fault injection with Envoy's `HTTPFault` semantics.
//!
//! * [`store`] keeps the active faults, publishes them through a `watch` channel and removes
//!   each one at its deadline by itself.
//! * [`decide`] makes the per-request decisions in Envoy's order: overflow check, cluster,
//!   downstream node and header matching, then rate limit, delay and abort, each drawn from the
//!   fault's own seeded generator.
//! * [`layer`] is the tower `Layer` that applies a decision: sleep, answer locally, or forward and
//!   throttle the response.
//! * [`clock`] makes injected delays precise to tens of microseconds.
//! * [`abort`] builds the local answers (`fault filter abort`, gRPC trailers-only).

pub mod abort;
pub mod clock;
pub mod decide;
pub mod layer;
pub mod store;

pub use layer::{FaultLayer, FaultService};
pub use store::{ActiveFault, FaultSet, FaultStore, Origin};
