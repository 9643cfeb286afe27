//! Per-request fault decisions, in the order Envoy's fault filter makes them.
//!
//! For each active fault that applies to the listener, in order: if `max_active_faults` is
//! reached the fault is skipped and `faults_overflow` counts it (before any matching, as in
//! Envoy); then `upstream_cluster`, `downstream_nodes` and `headers` must match; then the
//! response rate limit, the delay and the abort are each drawn independently. Delays of several
//! faults add up; the first abort ends the chain, as an Envoy filter that sends a local reply
//! stops the filters after it.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use http::HeaderMap;
use shakedown_model::{AbortSource, DelaySource, FractionalPercent, RateLimitSource};
use tokio::time::Instant;

use super::store::{ActiveFault, FaultSet};
use crate::metrics::FaultStats;

/// Caller-controlled fault headers (honoured only where the fault enables header control).
pub mod headers {
    /// HTTP status to abort with.
    pub const ABORT: &str = "x-envoy-fault-abort-request";
    /// gRPC status to abort with.
    pub const ABORT_GRPC: &str = "x-envoy-fault-abort-grpc-request";
    /// Abort percentage numerator (capped by the configured one).
    pub const ABORT_PERCENTAGE: &str = "x-envoy-fault-abort-request-percentage";
    /// Delay in milliseconds.
    pub const DELAY: &str = "x-envoy-fault-delay-request";
    /// Delay percentage numerator.
    pub const DELAY_PERCENTAGE: &str = "x-envoy-fault-delay-request-percentage";
    /// Response throughput in KiB/s.
    pub const THROUGHPUT: &str = "x-envoy-fault-throughput-response";
    /// Throughput percentage numerator.
    pub const THROUGHPUT_PERCENTAGE: &str = "x-envoy-fault-throughput-response-percentage";
    /// Downstream node, matched against `downstream_nodes`.
    pub const DOWNSTREAM_NODE: &str = "x-envoy-downstream-service-node";
    /// Downstream cluster, for per-cluster counters.
    pub const DOWNSTREAM_CLUSTER: &str = "x-envoy-downstream-service-cluster";
}

/// What an abort answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AbortWith {
    /// An HTTP status.
    Http(u16),
    /// A gRPC status.
    Grpc(u32),
}

/// Marks a request as affected by a fault until dropped (Envoy's `active_faults`).
#[derive(Debug)]
pub struct ActiveGuard {
    fault: Arc<ActiveFault>,
    stats_gauge: crate::metrics::Gauge,
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.fault.active.fetch_sub(1, Ordering::Relaxed);
        self.stats_gauge.dec();
    }
}

/// The faults decided for one request.
#[derive(Debug, Default)]
pub struct Plan {
    /// Total delay before forwarding or aborting.
    pub delay: Duration,
    /// Abort, after the delay.
    pub abort: Option<AbortWith>,
    /// The fault that aborts (for its per-downstream-cluster counter).
    pub abort_downstream_cluster: Option<String>,
    /// Response body limit in bytes per second.
    pub throttle: Option<u64>,
    /// Active-fault marks, released when the response ends.
    pub guards: Vec<ActiveGuard>,
}

impl Plan {
    /// Whether nothing is to be done.
    pub fn is_noop(&self) -> bool {
        self.delay.is_zero() && self.abort.is_none() && self.throttle.is_none()
    }
}

/// Decides which faults hit this request. Counters for delays, rate limits and overflow are
/// charged here; aborts are charged when they are sent (after any delay), as Envoy does.
pub fn decide(
    set: &FaultSet,
    listener: &str,
    cluster: &str,
    req_headers: &HeaderMap,
    stats: &FaultStats,
) -> Plan {
    let mut plan = Plan::default();
    let now = Instant::now();
    for fault in &set.faults {
        if !fault.applies_to_listener(listener) || fault.expired(now) {
            continue;
        }
        let spec = &fault.spec;
        if let Some(max) = spec.max_active_faults
            && fault.active.load(Ordering::Relaxed) >= u64::from(max)
        {
            stats.faults_overflow.inc();
            continue;
        }
        if spec
            .upstream_cluster
            .as_deref()
            .is_some_and(|c| c != cluster)
        {
            continue;
        }
        if !spec.downstream_nodes.is_empty() {
            let node = req_headers
                .get(headers::DOWNSTREAM_NODE)
                .and_then(|v| v.to_str().ok());
            if !node.is_some_and(|n| spec.downstream_nodes.iter().any(|d| d == n)) {
                continue;
            }
        }
        if !spec.headers.iter().all(|m| m.matches(req_headers)) {
            continue;
        }
        let downstream_cluster = (!spec.disable_downstream_cluster_stats)
            .then(|| {
                req_headers
                    .get(headers::DOWNSTREAM_CLUSTER)
                    .and_then(|v| v.to_str().ok())
            })
            .flatten()
            .filter(|c| !c.is_empty());
        let mut marked = false;
        let mut mark = |plan: &mut Plan| {
            if !marked {
                marked = true;
                fault.active.fetch_add(1, Ordering::Relaxed);
                stats.active_faults.inc();
                plan.guards.push(ActiveGuard {
                    fault: fault.clone(),
                    stats_gauge: stats.active_faults.clone(),
                });
            }
        };

        if let Some(rl) = &spec.response_rate_limit {
            let kbps = match rl.source {
                RateLimitSource::Fixed(k) => Some(k),
                RateLimitSource::Header => {
                    header_u64(req_headers, headers::THROUGHPUT).filter(|k| *k > 0)
                }
            };
            if let Some(kbps) = kbps {
                let pct = percentage(
                    rl.percentage,
                    rl.source == RateLimitSource::Header,
                    req_headers,
                    headers::THROUGHPUT_PERCENTAGE,
                );
                if pct.hits(fault.draw()) {
                    mark(&mut plan);
                    stats.response_rl_injected.inc();
                    let rate = kbps.saturating_mul(1024);
                    plan.throttle = Some(plan.throttle.map_or(rate, |r| r.min(rate)));
                }
            }
        }

        if let Some(delay) = &spec.delay {
            let pct = percentage(
                delay.percentage,
                delay.source == DelaySource::Header,
                req_headers,
                headers::DELAY_PERCENTAGE,
            );
            if pct.hits(fault.draw()) {
                let duration = match delay.source {
                    DelaySource::Fixed(d) => Some(d),
                    DelaySource::Header => {
                        header_u64(req_headers, headers::DELAY).map(Duration::from_millis)
                    }
                };
                if let Some(d) = duration.filter(|d| !d.is_zero()) {
                    mark(&mut plan);
                    stats.delays_injected.inc();
                    if let Some(c) = downstream_cluster
                        .and_then(|c| stats.downstream_cluster("delays_injected", c))
                    {
                        c.inc();
                    }
                    plan.delay += d;
                }
            }
        }

        if let Some(abort) = &spec.abort {
            let pct = percentage(
                abort.percentage,
                abort.source == AbortSource::Header,
                req_headers,
                headers::ABORT_PERCENTAGE,
            );
            if pct.hits(fault.draw()) {
                let with = match abort.source {
                    AbortSource::Http(s) => Some(AbortWith::Http(s)),
                    AbortSource::Grpc(g) => Some(AbortWith::Grpc(g)),
                    // The HTTP header wins when both are present.
                    AbortSource::Header => header_u64(req_headers, headers::ABORT)
                        .filter(|s| (200..600).contains(s))
                        .map(|s| AbortWith::Http(s as u16))
                        .or_else(|| {
                            header_u64(req_headers, headers::ABORT_GRPC)
                                .filter(|g| *g <= u64::from(u32::MAX))
                                .map(|g| AbortWith::Grpc(g as u32))
                        }),
                };
                if let Some(with) = with {
                    mark(&mut plan);
                    plan.abort = Some(with);
                    plan.abort_downstream_cluster = downstream_cluster.map(str::to_owned);
                    break;
                }
            }
        }
    }
    plan
}

/// The configured percentage, lowered (never raised) by the request header when the fault is
/// header controlled. An unparsable header leaves the configured value.
fn percentage(
    configured: FractionalPercent,
    header_controlled: bool,
    h: &HeaderMap,
    name: &str,
) -> FractionalPercent {
    if !header_controlled {
        return configured;
    }
    match header_u64(h, name) {
        Some(n) => configured.capped(n.min(u64::from(u32::MAX)) as u32),
        None => configured,
    }
}

/// The first value of a header as an unsigned integer, parsed like absl's `SimpleAtoi`:
/// surrounding whitespace and a leading `+` are allowed, anything else fails.
pub fn header_u64(h: &HeaderMap, name: &str) -> Option<u64> {
    let v = h.get(name)?.to_str().ok()?.trim();
    let digits = v.strip_prefix('+').unwrap_or(v);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fault::FaultStore;
    use crate::metrics::ProxyStats;
    use shakedown_model::parse_fault;

    fn set(faults: &[&str], seed: u64) -> Arc<FaultSet> {
        let store = FaultStore::new(seed, Arc::default());
        for f in faults {
            store.create(parse_fault("t", f, None).unwrap()).unwrap();
        }
        store.current()
    }

    fn h(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.append(*k, v.parse().unwrap());
        }
        m
    }

    #[test]
    fn header_parsing_follows_simple_atoi() {
        for (v, want) in [
            ("503", Some(503)),
            ("+503", Some(503)),
            (" 418 ", Some(418)),
            ("503abc", None),
            ("", None),
            ("503, 418", None),
            ("-1", None),
        ] {
            let mut m = HeaderMap::new();
            m.insert("x", v.parse().unwrap());
            assert_eq!(header_u64(&m, "x"), want, "{v:?}");
        }
    }

    #[test]
    fn seeded_percentages_are_statistically_right_and_replayable() {
        let stats = ProxyStats::new().listener("p", "127.0.0.1:1");
        let text = "name: f\nabort: {http_status: 503, percentage: 10}\ndelay: {fixed_delay: 1s, percentage: 70}\n";
        let run = |seed| {
            let s = set(&[text], seed);
            (0..100_000)
                .map(|_| decide(&s, "l", "c", &HeaderMap::new(), &stats.fault))
                .map(|p| (p.abort.is_some(), !p.delay.is_zero()))
                .collect::<Vec<_>>()
        };
        let a = run(42);
        assert_eq!(a, run(42), "same seed, same decisions");
        assert_ne!(a, run(43));
        let n = a.len() as f64;
        let aborts = a.iter().filter(|(x, _)| *x).count() as f64 / n;
        let delays = a.iter().filter(|(_, d)| *d).count() as f64 / n;
        let both = a.iter().filter(|(x, d)| *x && *d).count() as f64 / n;
        // Three standard deviations of a binomial proportion.
        let tol = |p: f64| 3.0 * (p * (1.0 - p) / n).sqrt();
        assert!((aborts - 0.10).abs() < tol(0.10), "aborts {aborts}");
        assert!((delays - 0.70).abs() < tol(0.70), "delays {delays}");
        assert!(
            (both - 0.07).abs() < tol(0.07),
            "drawn independently: {both}"
        );
    }

    #[test]
    fn header_control_only_where_enabled() {
        let stats = ProxyStats::new().listener("p", "a");
        let fixed = set(&["name: f\nabort: {http_status: 503, percentage: 0}\n"], 1);
        let p = decide(
            &fixed,
            "l",
            "c",
            &h(&[(headers::ABORT, "418")]),
            &stats.fault,
        );
        assert_eq!(p.abort, None, "a fixed abort ignores the header");
        let hdr = set(&["name: f\nabort: {header_abort: {}}\n"], 1);
        assert_eq!(
            decide(&hdr, "l", "c", &h(&[(headers::ABORT, "418")]), &stats.fault).abort,
            Some(AbortWith::Http(418))
        );
        assert_eq!(
            decide(&hdr, "l", "c", &h(&[(headers::ABORT, "700")]), &stats.fault).abort,
            None
        );
        assert_eq!(
            decide(
                &hdr,
                "l",
                "c",
                &h(&[(headers::ABORT_GRPC, "14")]),
                &stats.fault
            )
            .abort,
            Some(AbortWith::Grpc(14))
        );
        assert_eq!(
            decide(
                &hdr,
                "l",
                "c",
                &h(&[(headers::ABORT_GRPC, "14"), (headers::ABORT, "503")]),
                &stats.fault
            )
            .abort,
            Some(AbortWith::Http(503)),
            "the HTTP header wins"
        );
        assert_eq!(
            decide(
                &hdr,
                "l",
                "c",
                &h(&[(headers::ABORT, "503"), (headers::ABORT_PERCENTAGE, "0")]),
                &stats.fault
            )
            .abort,
            None
        );
        let mut twice = HeaderMap::new();
        twice.append(headers::ABORT, "418".parse().unwrap());
        twice.append(headers::ABORT, "503".parse().unwrap());
        assert_eq!(
            decide(&hdr, "l", "c", &twice, &stats.fault).abort,
            Some(AbortWith::Http(418)),
            "first value counts"
        );
    }

    #[test]
    fn scoping_by_cluster_listener_and_headers() {
        let stats = ProxyStats::new().listener("p", "a");
        let s = set(
            &[
                "name: f\nupstream_cluster: rec\nlisteners: [out]\nheaders: [{name: x-inject-fault, exact_match: 'yes'}]\nabort: {http_status: 503}\n",
            ],
            1,
        );
        let yes = h(&[("x-inject-fault", "yes")]);
        assert!(decide(&s, "out", "rec", &yes, &stats.fault).abort.is_some());
        assert!(
            decide(&s, "out", "other", &yes, &stats.fault)
                .abort
                .is_none()
        );
        assert!(decide(&s, "in", "rec", &yes, &stats.fault).abort.is_none());
        assert!(
            decide(&s, "out", "rec", &HeaderMap::new(), &stats.fault)
                .abort
                .is_none()
        );
    }

    #[test]
    fn max_active_faults_overflows() {
        let stats = ProxyStats::new().listener("p", "a");
        let s = set(
            &["name: f\nmax_active_faults: 2\ndelay: {fixed_delay: 1s}\n"],
            1,
        );
        let p1 = decide(&s, "l", "c", &HeaderMap::new(), &stats.fault);
        let p2 = decide(&s, "l", "c", &HeaderMap::new(), &stats.fault);
        let p3 = decide(&s, "l", "c", &HeaderMap::new(), &stats.fault);
        assert!(!p1.delay.is_zero() && !p2.delay.is_zero());
        assert!(p3.is_noop());
        assert_eq!(stats.fault.faults_overflow.get(), 1);
        assert_eq!(stats.fault.active_faults.get(), 2);
        drop((p1, p2));
        assert_eq!(stats.fault.active_faults.get(), 0);
        assert!(
            !decide(&s, "l", "c", &HeaderMap::new(), &stats.fault)
                .delay
                .is_zero()
        );
    }

    #[test]
    fn delays_add_and_the_first_abort_ends_the_chain() {
        let stats = ProxyStats::new().listener("p", "a");
        let s = set(
            &[
                "name: a\ndelay: {fixed_delay: 100ms}\n",
                "name: b\ndelay: {fixed_delay: 200ms}\nabort: {http_status: 503}\n",
                "name: c\nabort: {http_status: 500}\n",
            ],
            1,
        );
        let p = decide(&s, "l", "c", &HeaderMap::new(), &stats.fault);
        assert_eq!(p.delay, Duration::from_millis(300));
        assert_eq!(p.abort, Some(AbortWith::Http(503)));
    }
}
