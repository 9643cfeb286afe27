//! The end-of-test summary (text, in k6's layout) and `--summary-export` (JSON, in k6's legacy
//! export shape plus a `shakedown` section with the serialized histograms), and the merge of
//! exports from several machines.
//!
//! In the `metrics` part, as in k6's `--summary-export`, a threshold maps to `true` when it
//! **failed** (k6#1498 kept that for compatibility), a rate's `passes` counts its non-zero
//! samples (for `http_req_failed`: the failed requests), and trend values are milliseconds.
//! The `shakedown` section is what a merge reads: histograms add, so the merged percentiles are
//! those of the combined run, not averages of percentiles.

use std::fmt::Write as _;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use shakedown_model::load::threshold_from_arg;

use crate::samples::{
    Gauge, Rate, STATUS_CLASSES, Samples, SamplesExport, SubSink, Tags, Trend, empty_sub,
};
use crate::series::Series;
use crate::thresholds::{Verdict, judge};
use crate::{Report, StopReason};

/// Trend statistics printed and exported, as k6's `--summary-trend-stats` default plus p(99).
pub const TREND_STATS: &[&str] = &["avg", "min", "med", "max", "p(90)", "p(95)", "p(99)"];

/// Formats milliseconds the way k6 does: `850µs`, `12.34ms`, `1.5s`.
pub fn ms(v: f64) -> String {
    if v < 1.0 {
        format!("{:.0}µs", v * 1000.0)
    } else if v < 1000.0 {
        format!("{v:.2}ms")
    } else {
        format!("{:.2}s", v / 1000.0)
    }
}

fn bytes(n: f64) -> String {
    let units = ["B", "kB", "MB", "GB", "TB"];
    let mut v = n;
    let mut u = 0;
    while v >= 1000.0 && u < units.len() - 1 {
        v /= 1000.0;
        u += 1;
    }
    if u == 0 {
        format!("{v:.0} B")
    } else {
        format!("{v:.1} {}", units[u])
    }
}

fn stat(t: &Trend, name: &str) -> f64 {
    match name {
        "avg" => t.avg_ms(),
        "min" => t.min_ms(),
        "med" => t.percentile_ms(50.0),
        "max" => t.max_ms(),
        p => p
            .strip_prefix("p(")
            .and_then(|r| r.strip_suffix(')'))
            .and_then(|n| n.parse().ok())
            .map(|n| t.percentile_ms(n))
            .unwrap_or(0.0),
    }
}

fn line(out: &mut String, indent: usize, label: &str, value: &str) {
    let dots = 52usize.saturating_sub(indent + label.chars().count());
    let _ = writeln!(
        out,
        "{:indent$}{label}{}: {value}",
        "",
        ".".repeat(dots.max(3))
    );
}

fn trend_line(t: &Trend) -> String {
    TREND_STATS
        .iter()
        .map(|s| format!("{s}={}", ms(stat(t, s))))
        .collect::<Vec<_>>()
        .join(" ")
}

fn per_second(n: u64, elapsed: Duration) -> f64 {
    n as f64 / elapsed.as_secs_f64().max(f64::MIN_POSITIVE)
}

/// The end-of-test summary a k6 user expects.
pub fn text(r: &Report) -> String {
    let s = &r.samples;
    let mut out = String::new();
    let _ = writeln!(out, "\n  scenario: {}", r.scenario);
    let _ = writeln!(
        out,
        "  ran {:.1}s of {:.1}s planned: {}",
        r.elapsed.as_secs_f64(),
        r.planned.as_secs_f64(),
        r.stop
    );
    if !r.verdicts.is_empty() {
        let _ = writeln!(out, "\n  █ THRESHOLDS\n");
        let mut current = "";
        for v in &r.verdicts {
            if v.metric != current {
                if !current.is_empty() {
                    out.push('\n');
                }
                let _ = writeln!(out, "    {}", v.metric);
                current = &v.metric;
            }
            let mark = if v.ok { '✓' } else { '✗' };
            let _ = writeln!(out, "    {mark} '{}' {}", v.source, v.shown);
        }
    }
    let _ = writeln!(out, "\n  █ TOTAL RESULTS\n");
    if s.checks.total > 0 {
        let total = s.checks.total;
        let ok = s.checks.trues;
        line(
            &mut out,
            4,
            "checks_total",
            &format!("{total:<8} {:.2}/s", per_second(total, r.elapsed)),
        );
        line(
            &mut out,
            4,
            "checks_succeeded",
            &format!(
                "{:.2}% {ok} out of {total}",
                100.0 * ok as f64 / total as f64
            ),
        );
        line(
            &mut out,
            4,
            "checks_failed",
            &format!(
                "{:.2}% {} out of {total}",
                100.0 * (total - ok) as f64 / total as f64,
                total - ok
            ),
        );
        out.push('\n');
        for (name, rate) in r.tags.checks.iter().zip(&s.per_check) {
            if rate.trues == rate.total {
                let _ = writeln!(out, "    ✓ {name}");
            } else {
                let _ = writeln!(
                    out,
                    "    ✗ {name}\n      ↳ {:.0}% — ✓ {} / ✗ {}",
                    100.0 * rate.trues as f64 / rate.total.max(1) as f64,
                    rate.trues,
                    rate.total - rate.trues
                );
            }
        }
        out.push('\n');
    }
    let _ = writeln!(out, "    HTTP");
    line(&mut out, 4, "http_req_duration", &trend_line(&s.duration));
    line(
        &mut out,
        6,
        "{ expected_response:true }",
        &trend_line(&s.duration_expected),
    );
    line(
        &mut out,
        4,
        "http_req_duration_uncorrected",
        &trend_line(&s.uncorrected),
    );
    line(
        &mut out,
        4,
        "http_req_failed",
        &format!(
            "{:.2}% {} out of {}",
            100.0 * s.failed.value().unwrap_or(0.0),
            s.failed.trues,
            s.failed.total
        ),
    );
    line(
        &mut out,
        4,
        "http_reqs",
        &format!(
            "{:<8} {:.2}/s",
            s.http_reqs,
            per_second(s.http_reqs, r.elapsed)
        ),
    );
    let classes: Vec<String> = STATUS_CLASSES
        .iter()
        .zip(s.classes)
        .filter(|(_, n)| *n > 0)
        .map(|(c, n)| format!("{c}={n}"))
        .collect();
    if !classes.is_empty() {
        line(&mut out, 6, "by status", &classes.join(" "));
    }
    if !s.errors.is_empty() {
        let errors: Vec<String> = s.errors.iter().map(|(e, n)| format!("{e}={n}")).collect();
        line(&mut out, 6, "errors", &errors.join(" "));
    }
    for (m, sink) in r.tags.subs.iter().zip(&s.subs) {
        let value = match sink {
            SubSink::Trend(t) => trend_line(t),
            SubSink::Counter(c) => format!("{c:<8} {:.2}/s", per_second(*c, r.elapsed)),
            SubSink::Rate(rt) => format!(
                "{:.2}% {} out of {}",
                100.0 * rt.value().unwrap_or(0.0),
                rt.trues,
                rt.total
            ),
        };
        line(&mut out, 4, &m.to_string(), &value);
    }
    let _ = writeln!(out, "\n    EXECUTION");
    line(
        &mut out,
        4,
        "dropped_iterations",
        &format!("{:<8} {:.2}/s", s.dropped, per_second(s.dropped, r.elapsed)),
    );
    line(
        &mut out,
        4,
        "iterations",
        &format!(
            "{:<8} {:.2}/s",
            s.iterations,
            per_second(s.iterations, r.elapsed)
        ),
    );
    line(
        &mut out,
        4,
        "vus",
        &format!("{:<8} min={} max={}", s.vus.value, s.vus.min, s.vus.max),
    );
    line(
        &mut out,
        4,
        "vus_max",
        &format!(
            "{:<8} min={} max={}",
            s.vus_max.value, s.vus_max.min, s.vus_max.max
        ),
    );
    let _ = writeln!(out, "\n    NETWORK");
    for (name, n) in [
        ("data_received", s.data_received),
        ("data_sent", s.data_sent),
    ] {
        let value = format!(
            "{:<8} {}/s",
            bytes(n as f64),
            bytes(per_second(n, r.elapsed))
        );
        line(&mut out, 4, name, &value);
    }
    out
}

/// The `shakedown` section of an export: what a merge needs.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Portable {
    /// Format version (1).
    pub version: u32,
    /// The scenario, described.
    pub scenario: String,
    /// How the run ended.
    pub stop: StopReason,
    /// Actual length, ms.
    pub elapsed_ms: f64,
    /// Planned length, ms.
    pub planned_ms: f64,
    /// All samples, histograms serialized.
    pub samples: SamplesExport,
    /// The per-interval series.
    pub series: Series,
    /// The thresholds' verdicts.
    pub thresholds: Vec<Verdict>,
}

/// `--summary-export`: k6's legacy export shape, plus the portable samples.
pub fn export(r: &Report) -> Value {
    let s = &r.samples;
    let mut metrics = Map::new();
    let trend = |t: &Trend| {
        let mut m = Map::new();
        for name in TREND_STATS {
            m.insert((*name).into(), json!(stat(t, name)));
        }
        m.insert("count".into(), json!(t.count()));
        m
    };
    let counter = |n: u64| {
        let mut m = Map::new();
        m.insert("count".into(), json!(n));
        m.insert("rate".into(), json!(per_second(n, r.elapsed)));
        m
    };
    let rate = |x: &Rate| {
        let mut m = Map::new();
        m.insert("passes".into(), json!(x.trues));
        m.insert("fails".into(), json!(x.total - x.trues));
        m.insert("value".into(), json!(x.value().unwrap_or(0.0)));
        m
    };
    let gauge = |g: &Gauge| {
        let mut m = Map::new();
        m.insert("value".into(), json!(g.value));
        m.insert("min".into(), json!(g.min));
        m.insert("max".into(), json!(g.max));
        m
    };
    metrics.insert("http_req_duration".into(), trend(&s.duration).into());
    metrics.insert(
        "http_req_duration{expected_response:true}".into(),
        trend(&s.duration_expected).into(),
    );
    metrics.insert(
        "http_req_duration_uncorrected".into(),
        trend(&s.uncorrected).into(),
    );
    for (name, n) in [
        ("http_reqs", s.http_reqs),
        ("iterations", s.iterations),
        ("dropped_iterations", s.dropped),
        ("data_sent", s.data_sent),
        ("data_received", s.data_received),
    ] {
        metrics.insert(name.into(), counter(n).into());
    }
    metrics.insert("http_req_failed".into(), rate(&s.failed).into());
    if s.checks.total > 0 {
        metrics.insert("checks".into(), rate(&s.checks).into());
    }
    metrics.insert("vus".into(), gauge(&s.vus).into());
    metrics.insert("vus_max".into(), gauge(&s.vus_max).into());
    for (m, sink) in r.tags.subs.iter().zip(&s.subs) {
        let v = match sink {
            SubSink::Trend(t) => trend(t),
            SubSink::Counter(c) => counter(*c),
            SubSink::Rate(x) => rate(x),
        };
        metrics.insert(m.to_string(), v.into());
    }
    for v in &r.verdicts {
        if let Some(Value::Object(m)) = metrics.get_mut(&v.metric) {
            let t = m.entry("thresholds").or_insert_with(|| json!({}));
            // k6's export: `true` means the threshold FAILED.
            t[&v.source] = json!(!v.ok);
        }
    }
    let checks: Map<String, Value> = r
        .tags
        .checks
        .iter()
        .zip(&s.per_check)
        .map(|(name, x)| {
            (name.clone(), json!({"name": name, "path": format!("::{name}"), "id": "", "passes": x.trues, "fails": x.total - x.trues}))
        })
        .collect();
    let portable = Portable {
        version: 1,
        scenario: r.scenario.clone(),
        stop: r.stop.clone(),
        elapsed_ms: r.elapsed.as_secs_f64() * 1000.0,
        planned_ms: r.planned.as_secs_f64() * 1000.0,
        samples: s.export(&r.tags),
        series: r.series.clone(),
        thresholds: r.verdicts.clone(),
    };
    json!({
        "root_group": {"name": "", "path": "", "id": "", "groups": {}, "checks": checks},
        "options": {"summaryTrendStats": TREND_STATS, "summaryTimeUnit": "ms", "noColor": true},
        "state": {"isStdOutTTY": false, "isStdErrTTY": false, "testRunDurationMs": r.elapsed.as_secs_f64() * 1000.0},
        "metrics": metrics,
        "shakedown": portable,
    })
}

/// Merges exports of runs that ran side by side (several machines, one target): samples add,
/// the length is the longest run's, thresholds are judged again on the merged samples.
pub fn merge(exports: &[(String, Value)]) -> Result<Report, String> {
    let mut merged: Option<(Samples, Tags, Portable)> = None;
    for (origin, value) in exports {
        let portable: Portable =
            serde_json::from_value(value.get("shakedown").cloned().ok_or_else(|| {
                format!("{origin}: no `shakedown` section (not a Shakedown summary export)")
            })?)
            .map_err(|e| format!("{origin}: shakedown: {e}"))?;
        if portable.version != 1 {
            return Err(format!(
                "{origin}: summary format version {} is not 1",
                portable.version
            ));
        }
        let (samples, tags) =
            Samples::import(&portable.samples).map_err(|e| format!("{origin}: {e}"))?;
        merged = Some(match merged {
            None => (samples, tags, portable),
            Some((mut acc, mut acc_tags, mut p)) => {
                let aligned = align(&mut acc, &mut acc_tags, &tags, &samples);
                acc.add(&aligned);
                p.elapsed_ms = p.elapsed_ms.max(portable.elapsed_ms);
                p.planned_ms = p.planned_ms.max(portable.planned_ms);
                p.series.merge(&portable.series);
                for t in portable.thresholds {
                    if !p
                        .thresholds
                        .iter()
                        .any(|x| x.metric == t.metric && x.source == t.source)
                    {
                        p.thresholds.push(t);
                    }
                }
                if portable.stop != StopReason::Completed && p.stop == StopReason::Completed {
                    p.stop = portable.stop;
                }
                if p.scenario != portable.scenario {
                    p.scenario = format!("{} + {}", p.scenario, portable.scenario);
                }
                (acc, acc_tags, p)
            }
        });
    }
    let (samples, tags, p) = merged.ok_or("nothing to merge")?;
    let elapsed = Duration::from_secs_f64(p.elapsed_ms / 1000.0);
    let mut verdicts = Vec::new();
    for v in &p.thresholds {
        let t = threshold_from_arg(&format!(
            "{}={}{}",
            v.metric,
            v.source,
            if v.abort_on_fail { "!" } else { "" }
        ))
        .map_err(|e| format!("threshold {}: {e}", v.metric))?;
        verdicts.push(judge(&t, &samples, &tags, elapsed));
    }
    Ok(Report {
        samples,
        tags,
        series: p.series,
        elapsed,
        planned: Duration::from_secs_f64(p.planned_ms / 1000.0),
        stop: p.stop,
        verdicts,
        scenario: p.scenario,
    })
}

/// Extends `acc` with the checks and sub-metrics only `tags` has, then returns `other`
/// reordered to `acc`'s order (by name), so the two add slot by slot.
fn align(acc: &mut Samples, acc_tags: &mut Tags, tags: &Tags, other: &Samples) -> Samples {
    for name in &tags.checks {
        if !acc_tags.checks.contains(name) {
            acc_tags.checks.push(name.clone());
            acc.per_check.push(Rate::default());
        }
    }
    for m in &tags.subs {
        if !acc_tags.subs.contains(m) {
            acc_tags.subs.push(m.clone());
            acc.subs.push(empty_sub(&m.name));
        }
    }
    let mut out = other.clone();
    out.per_check = acc_tags
        .checks
        .iter()
        .map(|name| {
            tags.checks
                .iter()
                .position(|c| c == name)
                .map(|i| other.per_check[i])
                .unwrap_or_default()
        })
        .collect();
    out.subs = acc_tags
        .subs
        .iter()
        .map(|m| match tags.subs.iter().position(|x| x == m) {
            Some(i) => other.subs[i].clone(),
            None => empty_sub(&m.name),
        })
        .collect();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::samples::Sample;
    use shakedown_model::threshold::Threshold;

    fn report(samples: Samples, tags: &Tags, thresholds: &[Threshold]) -> Report {
        let elapsed = Duration::from_secs(10);
        Report {
            verdicts: thresholds
                .iter()
                .map(|t| judge(t, &samples, tags, elapsed))
                .collect(),
            samples,
            tags: tags.clone(),
            series: Series::new(1.0),
            elapsed,
            planned: elapsed,
            stop: StopReason::Completed,
            scenario: "test".into(),
        }
    }

    #[test]
    fn the_merge_of_two_exports_is_the_export_of_the_combined_run() {
        let thresholds: Vec<Threshold> = [
            "http_req_duration=p(99)<900",
            "http_req_failed=rate<0.05",
            "http_reqs{name:b}=count>0",
        ]
        .iter()
        .map(|t| threshold_from_arg(t).unwrap())
        .collect();
        let tags = Tags {
            names: vec!["a".into(), "b".into()],
            methods: vec!["GET".into(), "GET".into()],
            checks: vec!["ok".into()],
            subs: vec![thresholds[2].metric.clone()],
        };
        let (mut a, mut b, mut all) = (
            Samples::new(&tags),
            Samples::new(&tags),
            Samples::new(&tags),
        );
        let mut x = 7u64;
        for i in 0..20_000u64 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let status = if x.is_multiple_of(17) { 503 } else { 200 };
            let ok = [status == 200];
            let s = Sample {
                template: (i % 2) as usize,
                status: Some(status),
                expected: status == 200,
                corrected_us: 200 + (x >> 40) % 1_000_000,
                uncorrected_us: 100 + (x >> 44) % 1000,
                checks: &ok,
                sent_bytes: 80,
                received_bytes: 120,
                ..Sample::default()
            };
            // Two "machines" with different shares of the traffic.
            if x.is_multiple_of(3) {
                a.record(&tags, &s)
            } else {
                b.record(&tags, &s)
            }
            all.record(&tags, &s);
        }
        let exports = vec![
            ("a.json".to_string(), export(&report(a, &tags, &thresholds))),
            ("b.json".to_string(), export(&report(b, &tags, &thresholds))),
        ];
        let merged = export(&merge(&exports).unwrap());
        let combined = export(&report(all, &tags, &thresholds));
        assert_eq!(merged["metrics"], combined["metrics"]);
        assert_eq!(merged["root_group"], combined["root_group"]);
        assert!(
            merged["metrics"]["http_req_duration"]["p(99)"]
                .as_f64()
                .unwrap()
                > 900.0
        );
    }

    #[test]
    fn formats_like_k6() {
        assert_eq!(ms(0.85), "850µs");
        assert_eq!(ms(12.345), "12.35ms");
        assert_eq!(ms(1500.0), "1.50s");
        assert_eq!(bytes(999.0), "999 B");
        assert_eq!(bytes(1_250_000.0), "1.2 MB");
    }
}
