//! The Envoy stat families Shakedown exports, as pre-resolved handles.
//!
//! Names and labels follow Envoy's Prometheus output (checked against Envoy 1.40): per cluster
//! `envoy_cluster_*{envoy_cluster_name}` with the *whole* cluster name as the label (dots
//! included, as Istio's stats tags arrange), per HTTP connection manager
//! `envoy_http_*{envoy_http_conn_manager_prefix}`, and the fault filter's
//! `envoy_http_fault_*` under the same prefix label.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use super::{Counter, Gauge, Histogram, Registry};

const CLASSES: [&str; 6] = ["0", "1", "2", "3", "4", "5"];

/// The registry plus Shakedown's own process-level series.
#[derive(Debug, Default)]
pub struct ProxyStats {
    /// Every series.
    pub registry: Arc<Registry>,
}

impl ProxyStats {
    /// A fresh registry.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Stats of one HTTP listener (Envoy's HTTP connection manager) with this stat prefix.
    pub fn listener(&self, stat_prefix: &str, address: &str) -> Arc<ListenerStats> {
        let r = &self.registry;
        let p: &[(&str, &str)] = &[("envoy_http_conn_manager_prefix", stat_prefix)];
        let stats = Arc::new(ListenerStats {
            registry: r.clone(),
            prefix: stat_prefix.to_owned(),
            address: address.replace(':', "_"),
            cx_total: r.counter(
                "envoy_http_downstream_cx_total",
                "Downstream connections accepted",
                p,
            ),
            cx_active: r.gauge(
                "envoy_http_downstream_cx_active",
                "Downstream connections open",
                p,
            ),
            rq_total: r.counter("envoy_http_downstream_rq_total", "Downstream requests", p),
            rq_active: r.gauge(
                "envoy_http_downstream_rq_active",
                "Downstream requests in flight",
                p,
            ),
            rq_http1: r.counter(
                "envoy_http_downstream_rq_http1_total",
                "Downstream HTTP/1.1 requests",
                p,
            ),
            rq_http2: r.counter(
                "envoy_http_downstream_rq_http2_total",
                "Downstream HTTP/2 requests",
                p,
            ),
            rq_time: r.histogram(
                "envoy_http_downstream_rq_time",
                "Downstream request time, first byte in to last byte out (ms)",
                p,
            ),
            no_route: r.counter("envoy_http_no_route", "Requests that matched no route", p),
            classes: Default::default(),
            listener_classes: Default::default(),
            fault: FaultStats {
                delays_injected: r.counter(
                    "envoy_http_fault_delays_injected",
                    "Requests delayed by a fault",
                    p,
                ),
                aborts_injected: r.counter(
                    "envoy_http_fault_aborts_injected",
                    "Requests aborted by a fault",
                    p,
                ),
                response_rl_injected: r.counter(
                    "envoy_http_fault_response_rl_injected",
                    "Responses rate limited by a fault",
                    p,
                ),
                faults_overflow: r.counter(
                    "envoy_http_fault_faults_overflow",
                    "Faults skipped because max_active_faults was reached",
                    p,
                ),
                active_faults: r.gauge(
                    "envoy_http_fault_active_faults",
                    "Requests with a fault in progress",
                    p,
                ),
                registry: r.clone(),
                prefix: stat_prefix.to_owned(),
                downstream_clusters: Default::default(),
            },
        });
        // Every class from the start, at zero (see `cluster`).
        for class in 1..=5 {
            stats.classes(class);
        }
        stats
    }

    /// Stats of one upstream cluster, labelled `envoy_cluster_name=<stat_name>`.
    pub fn cluster(&self, stat_name: &str) -> Arc<ClusterStats> {
        let r = &self.registry;
        let l: &[(&str, &str)] = &[("envoy_cluster_name", stat_name)];
        let stats = Arc::new(ClusterStats {
            registry: r.clone(),
            stat_name: stat_name.to_owned(),
            rq_total: r.counter("envoy_cluster_upstream_rq_total", "Upstream requests", l),
            rq_active: r.gauge(
                "envoy_cluster_upstream_rq_active",
                "Upstream requests in flight",
                l,
            ),
            rq_time: r.histogram(
                "envoy_cluster_upstream_rq_time",
                "Upstream request time, sent to last response byte (ms)",
                l,
            ),
            rq_timeout: r.counter(
                "envoy_cluster_upstream_rq_timeout",
                "Upstream requests that timed out",
                l,
            ),
            rq_retry: r.counter(
                "envoy_cluster_upstream_rq_retry",
                "Upstream request retries",
                l,
            ),
            cx_connect_fail: r.counter(
                "envoy_cluster_upstream_cx_connect_fail",
                "Upstream connection failures",
                l,
            ),
            classes: Default::default(),
            codes: (0..600).map(|_| OnceLock::new()).collect(),
        });
        // Every class from the start, at zero (Envoy creates them on first use): a query over
        // the 5xx series of a cluster that never failed is 0, not "no data", and `rate` sees a
        // counter's first increments instead of extrapolating past them.
        for class in 1..=5 {
            stats.class(class);
        }
        stats
    }
}

/// Stats of one listener.
#[derive(Debug)]
pub struct ListenerStats {
    registry: Arc<Registry>,
    prefix: String,
    address: String,
    /// Connections accepted.
    pub cx_total: Counter,
    /// Connections open.
    pub cx_active: Gauge,
    /// Requests.
    pub rq_total: Counter,
    /// Requests in flight.
    pub rq_active: Gauge,
    /// HTTP/1.x requests.
    pub rq_http1: Counter,
    /// HTTP/2 requests.
    pub rq_http2: Counter,
    /// Request time.
    pub rq_time: Histogram,
    /// Requests with no matching route.
    pub no_route: Counter,
    classes: [OnceLock<Counter>; 6],
    listener_classes: [OnceLock<Counter>; 6],
    /// The fault filter's stats under this prefix.
    pub fault: FaultStats,
}

impl ListenerStats {
    fn classes(&self, class: usize) -> (&Counter, &Counter) {
        let downstream = self.classes[class].get_or_init(|| {
            self.registry.counter(
                "envoy_http_downstream_rq_xx",
                "Downstream responses by status class",
                &[
                    ("envoy_response_code_class", CLASSES[class]),
                    ("envoy_http_conn_manager_prefix", &self.prefix),
                ],
            )
        });
        let listener = self.listener_classes[class].get_or_init(|| {
            self.registry.counter(
                "envoy_listener_http_downstream_rq_xx",
                "Downstream responses by status class, per listener address",
                &[
                    ("envoy_response_code_class", CLASSES[class]),
                    ("envoy_http_conn_manager_prefix", &self.prefix),
                    ("envoy_listener_address", &self.address),
                ],
            )
        });
        (downstream, listener)
    }

    /// Records a finished downstream request.
    pub fn record_response(&self, status: u16, elapsed: Duration) {
        let (downstream, listener) = self.classes(class_of(status));
        downstream.inc();
        listener.inc();
        self.rq_time.observe(elapsed);
    }
}

/// The fault filter's stats of one listener.
#[derive(Debug)]
pub struct FaultStats {
    /// Delays injected.
    pub delays_injected: Counter,
    /// Aborts injected.
    pub aborts_injected: Counter,
    /// Response rate limits injected.
    pub response_rl_injected: Counter,
    /// Faults skipped by `max_active_faults`.
    pub faults_overflow: Counter,
    /// Requests with a fault in progress.
    pub active_faults: Gauge,
    registry: Arc<Registry>,
    prefix: String,
    downstream_clusters: std::sync::Mutex<std::collections::HashSet<String>>,
}

/// At most this many distinct `x-envoy-downstream-service-cluster` values get their own series
/// per listener: the header comes from clients, and an unbounded label would let any client
/// grow the proxy's memory and every scrape.
pub const MAX_DOWNSTREAM_CLUSTERS: usize = 256;

impl FaultStats {
    /// Envoy's per-downstream-cluster counter (`x-envoy-downstream-service-cluster`), or `None`
    /// once [`MAX_DOWNSTREAM_CLUSTERS`] distinct values have been seen.
    pub fn downstream_cluster(&self, which: &'static str, cluster: &str) -> Option<Counter> {
        {
            let mut seen = self
                .downstream_clusters
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if !seen.contains(cluster) {
                if seen.len() >= MAX_DOWNSTREAM_CLUSTERS {
                    return None;
                }
                seen.insert(cluster.to_owned());
            }
        }
        let (name, help) = match which {
            "delays_injected" => (
                "envoy_http_fault_delays_injected",
                "Requests delayed by a fault",
            ),
            _ => (
                "envoy_http_fault_aborts_injected",
                "Requests aborted by a fault",
            ),
        };
        Some(self.registry.counter(
            name,
            help,
            &[
                ("envoy_fault_downstream_cluster", cluster),
                ("envoy_http_conn_manager_prefix", &self.prefix),
            ],
        ))
    }
}

/// Stats of one cluster.
#[derive(Debug)]
pub struct ClusterStats {
    registry: Arc<Registry>,
    stat_name: String,
    /// Requests sent upstream (one per attempt).
    pub rq_total: Counter,
    /// Requests in flight upstream.
    pub rq_active: Gauge,
    /// Upstream request time.
    pub rq_time: Histogram,
    /// Timeouts.
    pub rq_timeout: Counter,
    /// Retries.
    pub rq_retry: Counter,
    /// Connect failures.
    pub cx_connect_fail: Counter,
    classes: [OnceLock<Counter>; 6],
    codes: Box<[OnceLock<Counter>]>,
}

impl ClusterStats {
    fn class(&self, class: usize) -> &Counter {
        self.classes[class].get_or_init(|| {
            self.registry.counter(
                "envoy_cluster_upstream_rq_xx",
                "Upstream responses by status class",
                &[
                    ("envoy_response_code_class", CLASSES[class]),
                    ("envoy_cluster_name", &self.stat_name),
                ],
            )
        })
    }

    /// Charges a response code to `upstream_rq_xx` and `upstream_rq{code}`.
    pub fn charge(&self, status: u16) {
        self.class(class_of(status)).inc();
        if let Some(slot) = self.codes.get(usize::from(status)) {
            let code = status.to_string();
            slot.get_or_init(|| {
                self.registry.counter(
                    "envoy_cluster_upstream_rq",
                    "Upstream responses by status code",
                    &[
                        ("envoy_response_code", &code),
                        ("envoy_cluster_name", &self.stat_name),
                    ],
                )
            })
            .inc();
        }
    }
}

fn class_of(status: u16) -> usize {
    usize::from(status / 100).min(5)
}
