//! What a run records: k6's built-in metrics as sinks of fixed size.
//!
//! Durations go into HDR histograms (µs resolution, 3 significant digits, values clamped at one
//! hour), so memory depends on the range of the values, never on their number or on the length
//! of the run. Everything here adds: two [`Samples`] merge into exactly the samples of the
//! combined run, which is what makes shards, per-interval series and multi-machine merges exact.

use std::collections::BTreeMap;

use base64::Engine as _;
use hdrhistogram::Histogram;
use hdrhistogram::serialization::{Deserializer, Serializer, V2DeflateSerializer};
use serde::{Deserialize, Serialize};
use shakedown_model::threshold::MetricRef;

/// The largest duration a histogram tracks, in µs (one hour); longer ones are recorded as this.
pub const MAX_TRACKED_US: u64 = 3_600_000_000;

/// A distribution of durations (k6's Trend), in µs: an HDR histogram for the percentiles, and
/// the exact count, sum, min and max beside it (HDR would round those to its buckets).
#[derive(Clone, Debug)]
pub struct Trend {
    hist: Histogram<u64>,
    sum: u64,
    min: u64,
    max: u64,
}

impl Default for Trend {
    fn default() -> Self {
        // Auto-resizing from a tiny range: a run that only sees milliseconds pays for those.
        let mut hist = Histogram::new_with_bounds(1, 2, 3).expect("valid HDR bounds");
        hist.auto(true);
        Self {
            hist,
            sum: 0,
            min: u64::MAX,
            max: 0,
        }
    }
}

impl PartialEq for Trend {
    fn eq(&self, o: &Self) -> bool {
        let a = self
            .hist
            .iter_recorded()
            .map(|v| (v.value_iterated_to(), v.count_at_value()));
        let b = o
            .hist
            .iter_recorded()
            .map(|v| (v.value_iterated_to(), v.count_at_value()));
        self.sum == o.sum && self.min == o.min && self.max == o.max && a.eq(b)
    }
}

/// A trend as exported: the histogram (compressed HdrHistogram V2, base64 — what HdrHistogram's
/// log tools read) and the exact statistics.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TrendExport {
    /// The encoded histogram.
    pub hdr: String,
    /// Exact sum, µs.
    pub sum_us: u64,
    /// Exact minimum, µs (absent without values).
    pub min_us: Option<u64>,
    /// Exact maximum, µs.
    pub max_us: u64,
}

impl Trend {
    /// Records one duration in µs.
    pub fn record(&mut self, us: u64) {
        let us = us.min(MAX_TRACKED_US);
        // Cannot fail: the histogram resizes itself up to the clamped value.
        let _ = self.hist.record(us);
        self.sum += us;
        self.min = self.min.min(us);
        self.max = self.max.max(us);
    }

    /// Adds another trend's values.
    pub fn add(&mut self, other: &Trend) {
        let _ = self.hist.add(&other.hist);
        self.sum += other.sum;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
    }

    /// Number of values.
    pub fn count(&self) -> u64 {
        self.hist.len()
    }

    /// Exact mean in ms (0 with no values).
    pub fn avg_ms(&self) -> f64 {
        if self.count() == 0 {
            0.0
        } else {
            self.sum as f64 / self.count() as f64 / 1000.0
        }
    }

    /// Exact sum in seconds.
    pub fn sum_seconds(&self) -> f64 {
        self.sum as f64 / 1e6
    }

    /// Exact smallest value in ms (0 with no values).
    pub fn min_ms(&self) -> f64 {
        if self.count() == 0 {
            0.0
        } else {
            self.min as f64 / 1000.0
        }
    }

    /// Exact largest value in ms.
    pub fn max_ms(&self) -> f64 {
        self.max as f64 / 1000.0
    }

    /// The `p`th percentile (0..=100) in ms: HDR's value at that quantile (within 0.1 %),
    /// never above the exact maximum.
    pub fn percentile_ms(&self, p: f64) -> f64 {
        if self.count() == 0 {
            return 0.0;
        }
        let v = self
            .hist
            .value_at_quantile(p / 100.0)
            .clamp(self.min, self.max);
        v as f64 / 1000.0
    }

    /// How many values are ≤ `us` (to the histogram's resolution). Beyond the counts array
    /// the last bucket is used; `Histogram::high` is no bound here: after an `add` that grew
    /// the array it is the addend's maximum, and larger values that fit are counted above it.
    pub fn count_at_most(&self, us: u64) -> u64 {
        self.hist.count_between(0, us)
    }

    /// Bytes the histogram's counters occupy (its footprint; the rest is a few fields).
    pub fn footprint_bytes(&self) -> usize {
        self.hist.distinct_values() * std::mem::size_of::<u64>()
    }

    /// The portable form.
    pub fn export(&self) -> TrendExport {
        let mut buf = Vec::new();
        // Serializing into a Vec cannot fail for a valid histogram.
        let _ = V2DeflateSerializer::new().serialize(&self.hist, &mut buf);
        TrendExport {
            hdr: base64::engine::general_purpose::STANDARD.encode(buf),
            sum_us: self.sum,
            min_us: (self.count() > 0).then_some(self.min),
            max_us: self.max,
        }
    }

    /// Reads [`Trend::export`]'s output.
    pub fn import(e: &TrendExport) -> Result<Self, String> {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(e.hdr.trim())
            .map_err(|err| format!("histogram is not base64: {err}"))?;
        let hist: Histogram<u64> = Deserializer::new()
            .deserialize(&mut bytes.as_slice())
            .map_err(|err| format!("histogram does not decode: {err:?}"))?;
        let mut t = Trend::default();
        let _ = t.hist.add(&hist);
        t.sum = e.sum_us;
        t.min = e.min_us.unwrap_or(u64::MAX);
        t.max = e.max_us;
        Ok(t)
    }
}

/// k6's Rate: how many samples were non-zero out of how many.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rate {
    /// Non-zero samples (for `http_req_failed`: failed requests).
    pub trues: u64,
    /// All samples.
    pub total: u64,
}

impl Rate {
    /// Adds one sample.
    pub fn record(&mut self, value: bool) {
        self.trues += u64::from(value);
        self.total += 1;
    }

    /// Adds another rate's samples.
    pub fn add(&mut self, other: &Rate) {
        self.trues += other.trues;
        self.total += other.total;
    }

    /// The fraction, or `None` without samples.
    pub fn value(&self) -> Option<f64> {
        (self.total > 0).then(|| self.trues as f64 / self.total as f64)
    }
}

/// k6's Gauge: the last value, and the extremes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gauge {
    /// Last value set.
    pub value: u64,
    /// Smallest value set.
    pub min: u64,
    /// Largest value set.
    pub max: u64,
    /// Whether any value was set.
    pub set: bool,
}

impl Gauge {
    /// Sets the value.
    pub fn set(&mut self, v: u64) {
        if !self.set {
            self.min = v;
            self.max = v;
        }
        self.value = v;
        self.min = self.min.min(v);
        self.max = self.max.max(v);
        self.set = true;
    }

    /// Merges gauges of runs that ran side by side: values add (VUs of two machines), extremes
    /// take the wider bound of each.
    pub fn add(&mut self, other: &Gauge) {
        if !other.set {
            return;
        }
        if !self.set {
            *self = *other;
            return;
        }
        self.value += other.value;
        self.min = self.min.min(other.min);
        self.max += other.max;
    }
}

/// Status classes counted per request: 1xx–5xx, and no response at all.
pub const STATUS_CLASSES: [&str; 6] = ["1xx", "2xx", "3xx", "4xx", "5xx", "error"];

/// One finished request, as a worker reports it.
#[derive(Clone, Debug, Default)]
pub struct Sample<'a> {
    /// Index of the request template.
    pub template: usize,
    /// Response status; `None` when no response came (error or timeout).
    pub status: Option<u16>,
    /// Why no response came.
    pub error: Option<&'static str>,
    /// Whether the status is an expected one (not `http_req_failed`).
    pub expected: bool,
    /// From the intended send time to the end of the body, µs.
    pub corrected_us: u64,
    /// From the actual send to the end of the body, µs.
    pub uncorrected_us: u64,
    /// Result of each check, in check order.
    pub checks: &'a [bool],
    /// Bytes written to the wire for it (connection set-up included).
    pub sent_bytes: u64,
    /// Bytes read from the wire for it.
    pub received_bytes: u64,
}

/// What a sub-metric keeps, by the metric it selects from.
#[derive(Clone, Debug, PartialEq)]
pub enum SubSink {
    /// `http_req_duration{…}` or `http_req_duration_uncorrected{…}`.
    Trend(Trend),
    /// `http_reqs{…}`.
    Counter(u64),
    /// `http_req_failed{…}` or `checks{…}`.
    Rate(Rate),
}

/// The static facts a sample's tags are read from: template names and methods, check names.
#[derive(Clone, Debug, Default)]
pub struct Tags {
    /// `name` of each template.
    pub names: Vec<String>,
    /// `method` of each template.
    pub methods: Vec<String>,
    /// Name of each check.
    pub checks: Vec<String>,
    /// The sub-metrics to keep (from thresholds).
    pub subs: Vec<MetricRef>,
}

/// Everything recorded over some span of a run; adds exactly.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Samples {
    /// `http_req_duration`, from the intended send (open model) or the send (closed model).
    pub duration: Trend,
    /// `http_req_duration{expected_response:true}`.
    pub duration_expected: Trend,
    /// `http_req_duration_uncorrected`: from the actual send.
    pub uncorrected: Trend,
    /// `http_reqs`.
    pub http_reqs: u64,
    /// `http_req_failed`.
    pub failed: Rate,
    /// Requests per status class ([`STATUS_CLASSES`]).
    pub classes: [u64; 6],
    /// Requests per exact status (0 = no response).
    pub statuses: BTreeMap<u16, u64>,
    /// Requests without a response, by reason.
    pub errors: BTreeMap<String, u64>,
    /// `iterations`.
    pub iterations: u64,
    /// `dropped_iterations`.
    pub dropped: u64,
    /// `checks`.
    pub checks: Rate,
    /// Each check's passes and failures, in check order.
    pub per_check: Vec<Rate>,
    /// `data_sent`, bytes on the wire.
    pub data_sent: u64,
    /// `data_received`, bytes on the wire.
    pub data_received: u64,
    /// `vus` (closed model: active users; open model: connections busy).
    pub vus: Gauge,
    /// `vus_max`.
    pub vus_max: Gauge,
    /// Sub-metrics in [`Tags::subs`] order.
    pub subs: Vec<SubSink>,
}

impl Samples {
    /// Empty samples shaped for `tags` (one slot per check and sub-metric).
    pub fn new(tags: &Tags) -> Self {
        Self {
            per_check: vec![Rate::default(); tags.checks.len()],
            subs: tags.subs.iter().map(|m| empty_sub(&m.name)).collect(),
            ..Self::default()
        }
    }

    /// Records one finished request (and the iteration it was).
    pub fn record(&mut self, tags: &Tags, s: &Sample<'_>) {
        self.http_reqs += 1;
        self.iterations += 1;
        self.data_sent += s.sent_bytes;
        self.data_received += s.received_bytes;
        self.duration.record(s.corrected_us);
        self.uncorrected.record(s.uncorrected_us);
        if s.expected {
            self.duration_expected.record(s.corrected_us);
        }
        self.failed.record(!s.expected);
        let class = match s.status {
            Some(code) => usize::from((code / 100).clamp(1, 5)) - 1,
            None => 5,
        };
        self.classes[class] += 1;
        *self.statuses.entry(s.status.unwrap_or(0)).or_default() += 1;
        if let Some(e) = s.error {
            *self.errors.entry(e.to_string()).or_default() += 1;
        }
        for (i, ok) in s.checks.iter().enumerate() {
            self.checks.record(*ok);
            if let Some(r) = self.per_check.get_mut(i) {
                r.record(*ok);
            }
        }
        for (metric, sink) in tags.subs.iter().zip(self.subs.iter_mut()) {
            record_sub(tags, metric, sink, s);
        }
    }

    /// Adds another span's samples (same [`Tags`]).
    pub fn add(&mut self, o: &Samples) {
        self.duration.add(&o.duration);
        self.duration_expected.add(&o.duration_expected);
        self.uncorrected.add(&o.uncorrected);
        self.http_reqs += o.http_reqs;
        self.failed.add(&o.failed);
        for (a, b) in self.classes.iter_mut().zip(o.classes) {
            *a += b;
        }
        for (k, v) in &o.statuses {
            *self.statuses.entry(*k).or_default() += v;
        }
        for (k, v) in &o.errors {
            *self.errors.entry(k.clone()).or_default() += v;
        }
        self.iterations += o.iterations;
        self.dropped += o.dropped;
        self.checks.add(&o.checks);
        if self.per_check.len() < o.per_check.len() {
            self.per_check.resize(o.per_check.len(), Rate::default());
        }
        for (a, b) in self.per_check.iter_mut().zip(&o.per_check) {
            a.add(b);
        }
        self.data_sent += o.data_sent;
        self.data_received += o.data_received;
        // Gauges are set by the collector on the run's total only; shards never carry them.
        self.vus.add(&o.vus);
        self.vus_max.add(&o.vus_max);
        if self.subs.is_empty() {
            self.subs = o.subs.clone();
        } else {
            for (a, b) in self.subs.iter_mut().zip(&o.subs) {
                match (a, b) {
                    (SubSink::Trend(a), SubSink::Trend(b)) => a.add(b),
                    (SubSink::Counter(a), SubSink::Counter(b)) => *a += b,
                    (SubSink::Rate(a), SubSink::Rate(b)) => a.add(b),
                    _ => {}
                }
            }
        }
    }

    /// Approximate bytes held, for the bounded-memory guarantee: histograms plus maps.
    pub fn footprint_bytes(&self) -> usize {
        let trends = self.duration.footprint_bytes()
            + self.duration_expected.footprint_bytes()
            + self.uncorrected.footprint_bytes();
        let subs: usize = self
            .subs
            .iter()
            .map(|s| match s {
                SubSink::Trend(t) => t.footprint_bytes(),
                _ => 16,
            })
            .sum();
        trends + subs + 32 * (self.statuses.len() + self.errors.len() + self.per_check.len())
    }
}

/// An empty sink for a sub-metric of `metric`.
pub(crate) fn empty_sub(metric: &str) -> SubSink {
    match metric {
        "http_req_duration" | "http_req_duration_uncorrected" => SubSink::Trend(Trend::default()),
        "http_reqs" => SubSink::Counter(0),
        _ => SubSink::Rate(Rate::default()),
    }
}

fn record_sub(tags: &Tags, metric: &MetricRef, sink: &mut SubSink, s: &Sample<'_>) {
    let status = s.status.unwrap_or(0);
    let mut check_filter = None;
    for (tag, want) in &metric.tags {
        let matches = match tag.as_str() {
            "name" => tags.names.get(s.template).is_some_and(|n| n == want),
            "method" => tags.methods.get(s.template).is_some_and(|m| m == want),
            "status" => want.parse::<u16>().is_ok_and(|w| w == status),
            "expected_response" => want == if s.expected { "true" } else { "false" },
            "check" => {
                check_filter = tags.checks.iter().position(|c| c == want);
                check_filter.is_some()
            }
            _ => false,
        };
        if !matches {
            return;
        }
    }
    match sink {
        SubSink::Trend(t) if metric.name == "http_req_duration_uncorrected" => {
            t.record(s.uncorrected_us)
        }
        SubSink::Trend(t) => t.record(s.corrected_us),
        SubSink::Counter(c) => *c += 1,
        SubSink::Rate(r) if metric.name == "checks" => match check_filter {
            Some(i) => {
                if let Some(ok) = s.checks.get(i) {
                    r.record(*ok)
                }
            }
            None => s.checks.iter().for_each(|ok| r.record(*ok)),
        },
        SubSink::Rate(r) => r.record(!s.expected),
    }
}

/// [`Samples`] as written in a summary export: histograms encoded, sub-metrics keyed by name.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SamplesExport {
    /// Trends by metric key.
    pub histograms: BTreeMap<String, TrendExport>,
    /// Counters by metric key.
    pub counters: BTreeMap<String, u64>,
    /// Rates by metric key.
    pub rates: BTreeMap<String, Rate>,
    /// Gauges by metric key.
    pub gauges: BTreeMap<String, Gauge>,
    /// Requests per status (`"0"`: no response).
    pub statuses: BTreeMap<String, u64>,
    /// Requests without a response, by reason.
    pub errors: BTreeMap<String, u64>,
    /// Per-check passes, by check name.
    pub checks: BTreeMap<String, Rate>,
}

impl Samples {
    /// The portable form, keyed by names so runs with different sub-metrics still merge.
    pub fn export(&self, tags: &Tags) -> SamplesExport {
        let mut e = SamplesExport::default();
        e.histograms
            .insert("http_req_duration".into(), self.duration.export());
        e.histograms.insert(
            "http_req_duration{expected_response:true}".into(),
            self.duration_expected.export(),
        );
        e.histograms.insert(
            "http_req_duration_uncorrected".into(),
            self.uncorrected.export(),
        );
        for (name, v) in [
            ("http_reqs", self.http_reqs),
            ("iterations", self.iterations),
            ("dropped_iterations", self.dropped),
            ("data_sent", self.data_sent),
            ("data_received", self.data_received),
        ] {
            e.counters.insert(name.into(), v);
        }
        for (class, n) in STATUS_CLASSES.iter().zip(self.classes) {
            e.counters
                .insert(format!("http_reqs{{status_class:{class}}}"), n);
        }
        e.rates.insert("http_req_failed".into(), self.failed);
        e.rates.insert("checks".into(), self.checks);
        e.gauges.insert("vus".into(), self.vus);
        e.gauges.insert("vus_max".into(), self.vus_max);
        e.statuses = self
            .statuses
            .iter()
            .map(|(k, v)| (k.to_string(), *v))
            .collect();
        e.errors = self.errors.clone();
        e.checks = tags
            .checks
            .iter()
            .zip(&self.per_check)
            .map(|(n, r)| (n.clone(), *r))
            .collect();
        for (m, sink) in tags.subs.iter().zip(&self.subs) {
            let key = m.to_string();
            match sink {
                SubSink::Trend(t) => {
                    e.histograms.insert(key, t.export());
                }
                SubSink::Counter(c) => {
                    e.counters.insert(key, *c);
                }
                SubSink::Rate(r) => {
                    e.rates.insert(key, *r);
                }
            }
        }
        e
    }

    /// Rebuilds samples from an export; returns them with the tags they carry.
    pub fn import(e: &SamplesExport) -> Result<(Samples, Tags), String> {
        let trend = |k: &str| -> Result<Trend, String> {
            e.histograms
                .get(k)
                .map(|t| Trend::import(t).map_err(|err| format!("{k}: {err}")))
                .unwrap_or_else(|| Ok(Trend::default()))
        };
        let counter = |k: &str| e.counters.get(k).copied().unwrap_or(0);
        let mut s = Samples {
            duration: trend("http_req_duration")?,
            duration_expected: trend("http_req_duration{expected_response:true}")?,
            uncorrected: trend("http_req_duration_uncorrected")?,
            http_reqs: counter("http_reqs"),
            iterations: counter("iterations"),
            dropped: counter("dropped_iterations"),
            data_sent: counter("data_sent"),
            data_received: counter("data_received"),
            failed: e.rates.get("http_req_failed").copied().unwrap_or_default(),
            checks: e.rates.get("checks").copied().unwrap_or_default(),
            vus: e.gauges.get("vus").copied().unwrap_or_default(),
            vus_max: e.gauges.get("vus_max").copied().unwrap_or_default(),
            errors: e.errors.clone(),
            ..Samples::default()
        };
        for (i, class) in STATUS_CLASSES.iter().enumerate() {
            s.classes[i] = counter(&format!("http_reqs{{status_class:{class}}}"));
        }
        for (k, v) in &e.statuses {
            let code = k
                .parse()
                .map_err(|_| format!("statuses: `{k}` is not a status"))?;
            s.statuses.insert(code, *v);
        }
        let mut tags = Tags::default();
        for (name, r) in &e.checks {
            tags.checks.push(name.clone());
            s.per_check.push(*r);
        }
        let builtin = |k: &str| {
            !k.contains('{')
                || k == "http_req_duration{expected_response:true}"
                || k.starts_with("http_reqs{status_class:")
        };
        for (k, h) in e.histograms.iter().filter(|(k, _)| !builtin(k)) {
            tags.subs.push(metric_key(k)?);
            s.subs.push(SubSink::Trend(
                Trend::import(h).map_err(|err| format!("{k}: {err}"))?,
            ));
        }
        for (k, c) in e.counters.iter().filter(|(k, _)| !builtin(k)) {
            tags.subs.push(metric_key(k)?);
            s.subs.push(SubSink::Counter(*c));
        }
        for (k, r) in e.rates.iter().filter(|(k, _)| !builtin(k)) {
            tags.subs.push(metric_key(k)?);
            s.subs.push(SubSink::Rate(*r));
        }
        Ok((s, tags))
    }
}

fn metric_key(k: &str) -> Result<MetricRef, String> {
    shakedown_model::threshold::parse_metric(k).map(|(m, _)| m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn count_at_most_sees_values_recorded_after_a_resize() {
        // How the collector builds its totals: shards added in.
        let mut t = Trend::default();
        let mut shard = Trend::default();
        shard.record(250_001);
        t.add(&shard);
        // Fits the array grown for 250 001 without growing it again.
        let mut shard = Trend::default();
        shard.record(260_000);
        shard.record(1_000);
        t.add(&shard);
        assert_eq!(t.count_at_most(500_000), 3);
        assert_eq!(t.count_at_most(10_000_000), 3);
        assert_eq!(t.count_at_most(u64::MAX), 3);
        assert_eq!(t.count_at_most(2_000), 1);
        assert_eq!(Trend::default().count_at_most(1_000), 0);
    }

    fn tags() -> Tags {
        Tags {
            names: vec!["a".into(), "b".into()],
            methods: vec!["GET".into(), "POST".into()],
            checks: vec!["ok".into()],
            subs: vec![
                metric_key("http_req_duration{name:b}").unwrap(),
                metric_key("http_reqs{status:503}").unwrap(),
                metric_key("checks{check:ok}").unwrap(),
            ],
        }
    }

    fn sample(template: usize, status: u16, us: u64) -> Sample<'static> {
        Sample {
            template,
            status: Some(status),
            expected: status < 400,
            corrected_us: us,
            uncorrected_us: us / 2,
            checks: if status == 200 { &[true] } else { &[false] },
            ..Sample::default()
        }
    }

    #[test]
    fn records_and_tags() {
        let t = tags();
        let mut s = Samples::new(&t);
        s.record(&t, &sample(0, 200, 1000));
        s.record(&t, &sample(1, 503, 9000));
        s.record(
            &t,
            &Sample {
                template: 1,
                error: Some("timeout"),
                corrected_us: 5,
                ..Sample::default()
            },
        );
        assert_eq!(s.http_reqs, 3);
        assert_eq!(s.failed, Rate { trues: 2, total: 3 });
        assert_eq!(s.classes, [0, 1, 0, 0, 1, 1]);
        assert_eq!(s.statuses.get(&0), Some(&1));
        assert_eq!(s.errors.get("timeout"), Some(&1));
        assert_eq!(s.duration_expected.count(), 1);
        let SubSink::Trend(b) = &s.subs[0] else {
            panic!()
        };
        assert_eq!(b.count(), 2);
        assert_eq!(s.subs[1], SubSink::Counter(1));
        assert_eq!(s.subs[2], SubSink::Rate(Rate { trues: 1, total: 2 }));
        assert_eq!(s.checks, Rate { trues: 1, total: 2 });
    }

    #[test]
    fn export_import_round_trips_and_merges_exactly() {
        let t = tags();
        let (mut a, mut b, mut both) = (Samples::new(&t), Samples::new(&t), Samples::new(&t));
        for i in 0..5000u64 {
            let s = sample(
                (i % 2) as usize,
                if i % 10 == 0 { 503 } else { 200 },
                100 + i * 37,
            );
            if i % 3 == 0 {
                a.record(&t, &s)
            } else {
                b.record(&t, &s)
            }
            both.record(&t, &s);
        }
        let (mut merged, mtags) = Samples::import(&a.export(&t)).unwrap();
        let (b2, _) = Samples::import(&b.export(&t)).unwrap();
        merged.add(&b2);
        let (mut got, mut want) = (merged.export(&mtags), both.export(&t));
        // Encodings may differ in their internal sizing; the values must not.
        let decode = |e: &SamplesExport| -> Vec<(String, Trend)> {
            e.histograms
                .iter()
                .map(|(k, h)| (k.clone(), Trend::import(h).unwrap()))
                .collect()
        };
        assert_eq!(decode(&got), decode(&want));
        got.histograms.clear();
        want.histograms.clear();
        assert_eq!(got, want);
        for p in [50.0, 90.0, 99.0, 99.9, 100.0] {
            assert_eq!(
                merged.duration.percentile_ms(p),
                both.duration.percentile_ms(p)
            );
        }
    }

    #[test]
    fn footprint_does_not_grow_with_the_number_of_samples() {
        let t = tags();
        let mut s = Samples::new(&t);
        // Spread over the whole tracked range first, so the histograms reach their full size.
        let mut v = 1u64;
        while v < MAX_TRACKED_US {
            s.record(&t, &sample(1, 200, v));
            v = v * 3 / 2 + 1;
        }
        s.record(&t, &sample(1, 200, 2 * MAX_TRACKED_US));
        let full = s.footprint_bytes();
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..2_000_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            s.record(&t, &sample((x % 2) as usize, 200, x % (2 * MAX_TRACKED_US)));
        }
        assert_eq!(s.footprint_bytes(), full);
        assert!(full < 1 << 20, "{full} bytes");
    }

    #[test]
    fn percentiles_are_within_hdr_precision() {
        let mut t = Trend::default();
        for v in 1..=100_000u64 {
            t.record(v);
        }
        let p99 = t.percentile_ms(99.0);
        assert!((p99 - 99.0).abs() <= 99.0 * 0.001, "{p99}");
        assert_eq!(t.min_ms(), 0.001);
        assert!((t.avg_ms() - 50.0).abs() < 0.05);
        assert_eq!(Trend::default().percentile_ms(99.0), 0.0);
    }

    #[test]
    fn gauges_of_side_by_side_runs_add() {
        let (mut a, mut b) = (Gauge::default(), Gauge::default());
        a.set(3);
        a.set(10);
        b.set(5);
        a.add(&b);
        assert_eq!((a.value, a.min, a.max), (15, 3, 15));
    }
}
