//! Prometheus exposition with Envoy's metric names.
//!
//! Written by hand rather than with `prometheus-client` because Envoy's names break the
//! OpenMetrics conventions that crate enforces: Envoy counters carry no `_total` suffix of their
//! own (`envoy_cluster_upstream_rq_xx`) while some end in `_total` as part of the stat name
//! (`envoy_cluster_upstream_rq_total`). Seed 000's PromQL needs those names byte for byte, served
//! as Prometheus text format 0.0.4 on `/stats/prometheus`, as Envoy does.
//!
//! The hot path never touches the registry: callers hold [`Counter`], [`Gauge`] and [`Histogram`]
//! handles (atomics behind an `Arc`) resolved once when a listener or cluster is built. The
//! registry's lock is taken only to create a series and to render a scrape.

mod envoy;

pub use envoy::{ClusterStats, FaultStats, ListenerStats, MAX_DOWNSTREAM_CLUSTERS, ProxyStats};

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Envoy's default histogram bucket bounds, in milliseconds.
pub const ENVOY_BUCKETS_MS: [f64; 19] = [
    0.5, 1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 30000.0,
    60000.0, 300000.0, 600000.0, 1800000.0, 3600000.0,
];

/// A monotonically increasing count.
#[derive(Debug, Clone, Default)]
pub struct Counter(Arc<AtomicU64>);

impl Counter {
    /// Adds one.
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    /// Adds `n`.
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    /// The current value.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A value that goes up and down.
#[derive(Debug, Clone, Default)]
pub struct Gauge(Arc<AtomicI64>);

impl Gauge {
    /// Adds one.
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    /// Subtracts one.
    pub fn dec(&self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }

    /// Sets the value.
    pub fn set(&self, v: i64) {
        self.0.store(v, Ordering::Relaxed);
    }

    /// The current value.
    pub fn get(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A histogram of durations, in milliseconds, with Envoy's bucket bounds.
#[derive(Debug, Clone)]
pub struct Histogram(Arc<HistogramInner>);

#[derive(Debug)]
struct HistogramInner {
    /// Non-cumulative counts; the last slot is `+Inf`.
    buckets: [AtomicU64; ENVOY_BUCKETS_MS.len() + 1],
    /// Sum of observations in microseconds (rendered as milliseconds).
    sum_us: AtomicU64,
    count: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self(Arc::new(HistogramInner {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_us: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }))
    }
}

impl Histogram {
    /// Records one duration.
    pub fn observe(&self, d: Duration) {
        let us = d.as_micros().min(u128::from(u64::MAX)) as u64;
        let ms = us as f64 / 1000.0;
        let slot = ENVOY_BUCKETS_MS
            .iter()
            .position(|b| ms <= *b)
            .unwrap_or(ENVOY_BUCKETS_MS.len());
        self.0.buckets[slot].fetch_add(1, Ordering::Relaxed);
        self.0.sum_us.fetch_add(us, Ordering::Relaxed);
        self.0.count.fetch_add(1, Ordering::Relaxed);
    }

    /// Number of observations.
    pub fn count(&self) -> u64 {
        self.0.count.load(Ordering::Relaxed)
    }
}

#[derive(Debug, Clone)]
enum Series {
    Counter(Counter),
    Gauge(Gauge),
    Histogram(Histogram),
}

#[derive(Debug)]
struct Family {
    kind: &'static str,
    help: &'static str,
    /// Rendered label set (`a="1",b="2"`) to series; ordered for stable output.
    series: BTreeMap<String, Series>,
}

/// All metric families of a process.
#[derive(Debug, Default)]
pub struct Registry {
    families: Mutex<BTreeMap<&'static str, Family>>,
}

/// Label pairs, in the order they are rendered.
pub type Labels<'a> = &'a [(&'a str, &'a str)];

impl Registry {
    /// The counter `name{labels}`, created on first use.
    pub fn counter(&self, name: &'static str, help: &'static str, labels: Labels<'_>) -> Counter {
        match self.series(name, "counter", help, labels, || {
            Series::Counter(Counter::default())
        }) {
            Series::Counter(c) => c,
            _ => Counter::default(),
        }
    }

    /// The gauge `name{labels}`, created on first use.
    pub fn gauge(&self, name: &'static str, help: &'static str, labels: Labels<'_>) -> Gauge {
        match self.series(name, "gauge", help, labels, || {
            Series::Gauge(Gauge::default())
        }) {
            Series::Gauge(g) => g,
            _ => Gauge::default(),
        }
    }

    /// The histogram `name{labels}`, created on first use.
    pub fn histogram(
        &self,
        name: &'static str,
        help: &'static str,
        labels: Labels<'_>,
    ) -> Histogram {
        match self.series(name, "histogram", help, labels, || {
            Series::Histogram(Histogram::default())
        }) {
            Series::Histogram(h) => h,
            _ => Histogram::default(),
        }
    }

    fn series(
        &self,
        name: &'static str,
        kind: &'static str,
        help: &'static str,
        labels: Labels<'_>,
        make: impl FnOnce() -> Series,
    ) -> Series {
        let key = render_labels(labels);
        let mut families = self.families.lock().unwrap_or_else(|p| p.into_inner());
        let family = families.entry(name).or_insert_with(|| Family {
            kind,
            help,
            series: BTreeMap::new(),
        });
        debug_assert_eq!(family.kind, kind, "metric {name} registered with two kinds");
        family.series.entry(key).or_insert_with(make).clone()
    }

    /// Renders every series in Prometheus text format 0.0.4.
    pub fn render(&self) -> String {
        let families = self.families.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = String::with_capacity(families.len() * 256);
        for (name, family) in families.iter() {
            let _ = writeln!(out, "# HELP {name} {}", family.help);
            let _ = writeln!(out, "# TYPE {name} {}", family.kind);
            for (labels, series) in &family.series {
                match series {
                    Series::Counter(c) => sample(&mut out, name, "", labels, c.get()),
                    Series::Gauge(g) => sample(&mut out, name, "", labels, g.get()),
                    Series::Histogram(h) => render_histogram(&mut out, name, labels, h),
                }
            }
        }
        out
    }
}

fn sample(out: &mut String, name: &str, suffix: &str, labels: &str, value: impl std::fmt::Display) {
    if labels.is_empty() {
        let _ = writeln!(out, "{name}{suffix} {value}");
    } else {
        let _ = writeln!(out, "{name}{suffix}{{{labels}}} {value}");
    }
}

fn render_histogram(out: &mut String, name: &str, labels: &str, h: &Histogram) {
    // Read the count last and never report fewer in `+Inf` than in any bucket: concurrent
    // observations may land between the loads, and buckets must stay monotonic.
    let mut cumulative = 0u64;
    let sep = if labels.is_empty() { "" } else { "," };
    for (i, bound) in ENVOY_BUCKETS_MS.iter().enumerate() {
        cumulative += h.0.buckets[i].load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "{name}_bucket{{{labels}{sep}le=\"{bound}\"}} {cumulative}"
        );
    }
    cumulative += h.0.buckets[ENVOY_BUCKETS_MS.len()].load(Ordering::Relaxed);
    let _ = writeln!(
        out,
        "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {cumulative}"
    );
    let sum_ms = h.0.sum_us.load(Ordering::Relaxed) as f64 / 1000.0;
    sample(out, name, "_sum", labels, sum_ms);
    sample(out, name, "_count", labels, cumulative);
}

fn render_labels(labels: Labels<'_>) -> String {
    let mut s = String::new();
    for (i, (k, v)) in labels.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        s.push_str(k);
        s.push_str("=\"");
        for c in v.chars() {
            match c {
                '\\' => s.push_str("\\\\"),
                '"' => s.push_str("\\\""),
                '\n' => s.push_str("\\n"),
                c => s.push(c),
            }
        }
        s.push('"');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_envoy_style_names_and_buckets() {
        let r = Registry::default();
        let c = r.counter(
            "envoy_cluster_upstream_rq_total",
            "Total requests",
            &[("envoy_cluster_name", "outbound|80||a.b")],
        );
        c.add(3);
        let h = r.histogram(
            "envoy_cluster_upstream_rq_time",
            "Request time",
            &[("envoy_cluster_name", "x")],
        );
        h.observe(Duration::from_micros(700));
        h.observe(Duration::from_millis(2000));
        h.observe(Duration::from_secs(7200));
        let text = r.render();
        assert!(
            text.contains("# TYPE envoy_cluster_upstream_rq_total counter\n"),
            "{text}"
        );
        assert!(
            text.contains(
                "envoy_cluster_upstream_rq_total{envoy_cluster_name=\"outbound|80||a.b\"} 3\n"
            ),
            "{text}"
        );
        assert!(text.contains(
            "envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name=\"x\",le=\"0.5\"} 0\n"
        ));
        assert!(text.contains(
            "envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name=\"x\",le=\"1\"} 1\n"
        ));
        assert!(text.contains(
            "envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name=\"x\",le=\"2500\"} 2\n"
        ));
        assert!(text.contains(
            "envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name=\"x\",le=\"3600000\"} 2\n"
        ));
        assert!(text.contains(
            "envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name=\"x\",le=\"+Inf\"} 3\n"
        ));
        assert!(
            text.contains(
                "envoy_cluster_upstream_rq_time_sum{envoy_cluster_name=\"x\"} 7202000.7\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("envoy_cluster_upstream_rq_time_count{envoy_cluster_name=\"x\"} 3\n")
        );
    }

    #[test]
    fn the_same_series_is_shared_and_labels_are_escaped() {
        let r = Registry::default();
        r.counter("c", "h", &[("l", "a\"b\\c")]).inc();
        r.counter("c", "h", &[("l", "a\"b\\c")]).inc();
        assert!(
            r.render().contains("c{l=\"a\\\"b\\\\c\"} 2\n"),
            "{}",
            r.render()
        );
    }
}
