//! Judging k6 thresholds against a run's samples.
//!
//! Over all samples since the start, as k6 does. One deliberate difference: a threshold on a
//! trend or rate with no samples at all fails ("no samples") instead of comparing 0 — k6 passes
//! `rate>=0.9` on an empty `checks` metric (k6#4283), and a verdict must not pass on no data.
//! Counters have a true zero, so `dropped_iterations: count<1` passes on a clean run.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use shakedown_model::threshold::{Aggregation, MetricKind, MetricRef, Threshold};

use crate::samples::{Gauge, Rate, Samples, SubSink, Tags, Trend};

/// One threshold's verdict.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    /// `metric` or `metric{tag:value}`.
    pub metric: String,
    /// The expression as written.
    pub source: String,
    /// Whether it held.
    pub ok: bool,
    /// The aggregate compared (`None` with no samples).
    pub observed: Option<f64>,
    /// How the observed value is printed: `p(95)=148.21ms`, `rate=0.50%`.
    pub shown: String,
    /// Whether crossing it stops the run.
    pub abort_on_fail: bool,
}

/// Judges one threshold; `elapsed` turns counters into per-second rates.
pub fn judge(t: &Threshold, samples: &Samples, tags: &Tags, elapsed: Duration) -> Verdict {
    let observed = aggregate(t, samples, tags, elapsed);
    let ok = observed.is_some_and(|v| t.assertion.operator.holds(v, t.assertion.value));
    let shown = match observed {
        None => format!("{}=no samples", t.assertion.aggregation),
        Some(v) => format!(
            "{}={}",
            t.assertion.aggregation,
            show(t.kind, t.assertion.aggregation, v)
        ),
    };
    Verdict {
        metric: t.metric.to_string(),
        source: t.source.clone(),
        ok,
        observed,
        shown,
        abort_on_fail: t.abort_on_fail,
    }
}

/// Formats a value of a metric kind the way the summary prints it.
pub fn show(kind: MetricKind, aggregation: Aggregation, v: f64) -> String {
    match (kind, aggregation) {
        (MetricKind::Trend, _) => crate::summary::ms(v),
        (MetricKind::Rate, _) => format!("{:.2}%", v * 100.0),
        (MetricKind::Counter, Aggregation::Rate) => format!("{v:.2}/s"),
        _ => format!("{v}"),
    }
}

enum Sink<'a> {
    Trend(&'a Trend),
    Rate(Rate),
    Counter(u64),
    Gauge(Gauge),
}

fn sink<'a>(metric: &MetricRef, s: &'a Samples, tags: &Tags) -> Option<Sink<'a>> {
    if !metric.tags.is_empty() {
        let builtin_expected = metric.name == "http_req_duration"
            && metric.tags == [("expected_response".to_string(), "true".to_string())];
        if builtin_expected {
            return Some(Sink::Trend(&s.duration_expected));
        }
        let i = tags.subs.iter().position(|m| m == metric)?;
        return Some(match s.subs.get(i)? {
            SubSink::Trend(t) => Sink::Trend(t),
            SubSink::Counter(c) => Sink::Counter(*c),
            SubSink::Rate(r) => Sink::Rate(*r),
        });
    }
    Some(match metric.name.as_str() {
        "http_req_duration" => Sink::Trend(&s.duration),
        "http_req_duration_uncorrected" => Sink::Trend(&s.uncorrected),
        "http_reqs" => Sink::Counter(s.http_reqs),
        "iterations" => Sink::Counter(s.iterations),
        "dropped_iterations" => Sink::Counter(s.dropped),
        "data_sent" => Sink::Counter(s.data_sent),
        "data_received" => Sink::Counter(s.data_received),
        "http_req_failed" => Sink::Rate(s.failed),
        "checks" => Sink::Rate(s.checks),
        "vus" => Sink::Gauge(s.vus),
        "vus_max" => Sink::Gauge(s.vus_max),
        _ => return None,
    })
}

fn aggregate(t: &Threshold, s: &Samples, tags: &Tags, elapsed: Duration) -> Option<f64> {
    match (sink(&t.metric, s, tags)?, t.assertion.aggregation) {
        (Sink::Trend(tr), _) if tr.count() == 0 => None,
        (Sink::Trend(tr), Aggregation::Avg) => Some(tr.avg_ms()),
        (Sink::Trend(tr), Aggregation::Min) => Some(tr.min_ms()),
        (Sink::Trend(tr), Aggregation::Max) => Some(tr.max_ms()),
        (Sink::Trend(tr), Aggregation::Med) => Some(tr.percentile_ms(50.0)),
        (Sink::Trend(tr), Aggregation::Percentile(p)) => Some(tr.percentile_ms(p)),
        (Sink::Rate(r), Aggregation::Rate) => r.value(),
        (Sink::Counter(c), Aggregation::Count) => Some(c as f64),
        (Sink::Counter(c), Aggregation::Rate) => {
            Some(c as f64 / elapsed.as_secs_f64().max(f64::MIN_POSITIVE))
        }
        (Sink::Gauge(g), Aggregation::Value) => g.set.then_some(g.value as f64),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::samples::Sample;
    use shakedown_model::load::threshold_from_arg;

    fn run() -> (Samples, Tags) {
        let tags = Tags {
            names: vec!["search".into()],
            methods: vec!["GET".into()],
            checks: vec!["status was 200".into()],
            subs: vec![
                threshold_from_arg("http_req_duration{status:503}=max<1")
                    .unwrap()
                    .metric,
            ],
        };
        let mut s = Samples::new(&tags);
        for i in 0..100u64 {
            let status = if i < 3 { 503 } else { 200 };
            let ok = [status == 200];
            s.record(
                &tags,
                &Sample {
                    status: Some(status),
                    expected: status == 200,
                    corrected_us: (i + 1) * 1000,
                    uncorrected_us: 1000,
                    checks: &ok,
                    ..Sample::default()
                },
            );
        }
        (s, tags)
    }

    fn verdict(arg: &str) -> Verdict {
        let (s, tags) = run();
        judge(
            &threshold_from_arg(arg).unwrap(),
            &s,
            &tags,
            Duration::from_secs(10),
        )
    }

    #[test]
    fn trends_rates_counters() {
        assert!(verdict("http_req_duration=p(95)<100").ok);
        assert!(!verdict("http_req_duration=p(99)<99").ok);
        assert_eq!(verdict("http_req_duration=max<1").shown, "max=100.00ms");
        assert!(verdict("http_req_duration=avg<=50.5").ok);
        assert!(verdict("http_req_duration=med<51").ok);
        assert!(verdict("http_req_duration_uncorrected=max<=1").ok);
        let failed = verdict("http_req_failed=rate<0.01");
        assert!(!failed.ok);
        assert_eq!(failed.shown, "rate=3.00%");
        assert!(verdict("checks=rate>=0.97").ok);
        assert!(verdict("http_reqs=count==100").ok);
        assert!(verdict("http_reqs=rate>9.9").ok);
        assert!(verdict("dropped_iterations=count<1").ok);
        // The sub-metric holds only the three 503s (1, 2 and 3 ms).
        assert!(verdict("http_req_duration{status:503}=max<=3").ok);
        assert!(verdict("http_req_duration{expected_response:true}=min>=4").ok);
    }

    #[test]
    fn no_samples_fail_rather_than_pass() {
        let tags = Tags::default();
        let s = Samples::new(&tags);
        let v = judge(
            &threshold_from_arg("checks=rate>=0.9").unwrap(),
            &s,
            &tags,
            Duration::from_secs(1),
        );
        assert!(!v.ok);
        assert_eq!(v.shown, "rate=no samples");
        let v = judge(
            &threshold_from_arg("http_req_duration=p(95)<500").unwrap(),
            &s,
            &tags,
            Duration::from_secs(1),
        );
        assert!(!v.ok);
        let v = judge(
            &threshold_from_arg("dropped_iterations=count<1").unwrap(),
            &s,
            &tags,
            Duration::from_secs(1),
        );
        assert!(v.ok);
    }
}
