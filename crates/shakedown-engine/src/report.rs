//! What a run reports: the JSON record of every step, fault, measurement and verdict, and the
//! same verdicts as JUnit XML (one test case per SLO, threshold, probe and rollback) so CI
//! systems show them.

use std::fmt::Write as _;

use serde::Serialize;
use shakedown_load::series::Point;

use crate::probe::ProbeResult;

/// How a run ended, with its exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Every SLO, threshold, probe and the hypothesis held; everything rolled back.
    Passed,
    /// An SLO, threshold, probe or the hypothesis was violated (or could not be judged).
    Failed,
    /// A guardrail, Ctrl-C or SIGTERM stopped the run; it rolled back.
    Aborted,
    /// A rollback failed: something may still be in place.
    RollbackFailed,
    /// The experiment is invalid or could not start.
    CouldNotRun,
}

impl Verdict {
    /// The exit code: 0 passed, 1 failed, 2 aborted, 3 rollback failed, 4 could not run.
    pub fn exit_code(self) -> u8 {
        match self {
            Verdict::Passed => 0,
            Verdict::Failed => 1,
            Verdict::Aborted => 2,
            Verdict::RollbackFailed => 3,
            Verdict::CouldNotRun => 4,
        }
    }
}

/// One step as it ran.
#[derive(Debug, Clone, Serialize)]
pub struct StepRecord {
    /// `method[2]`, `method[3].parallel[0]`.
    pub path: String,
    /// `inject seed-000`, `load`, `pause 5s`, ….
    pub step: String,
    /// Seconds from the start of the run.
    pub started_s: f64,
    /// Seconds it took.
    pub took_s: f64,
    /// Whether it did what it should.
    pub ok: bool,
    /// What happened.
    pub detail: String,
}

/// One fault's life: Init → Inject → Verify → Recover.
#[derive(Debug, Clone, Serialize)]
pub struct FaultRecord {
    /// Name.
    pub name: String,
    /// `http`, `tcp`, `process`.
    pub kind: String,
    /// What it does, in words.
    pub what: String,
    /// Seconds from the start of the run when it took effect.
    pub applied_s: Option<f64>,
    /// Seconds from the start when it was removed.
    pub removed_s: Option<f64>,
    /// Observed in place after injection.
    pub verified_present: bool,
    /// Observed gone after recovery.
    pub verified_absent: bool,
    /// Problems, if any.
    pub detail: String,
}

/// One SLO judgement.
#[derive(Debug, Clone, Serialize)]
pub struct SloRecord {
    /// Name.
    pub name: String,
    /// `met`, `violated`, `unjudged`.
    pub outcome: String,
    /// The value compared.
    pub value: Option<f64>,
    /// `245 < 2500`, or why it could not be judged.
    pub detail: String,
    /// When (seconds from the start), and by which step (`final` at the end).
    pub at_s: f64,
    /// `check` step path or `final`.
    pub by: String,
}

/// One k6 threshold of the load.
#[derive(Debug, Clone, Serialize)]
pub struct ThresholdRecord {
    /// Metric.
    pub metric: String,
    /// Expression.
    pub expression: String,
    /// Held.
    pub ok: bool,
    /// Observed, as shown.
    pub observed: String,
}

/// The load's figures and series.
#[derive(Debug, Clone, Serialize)]
pub struct LoadRecord {
    /// Seconds from the start of the run when the load started.
    pub started_s: f64,
    /// The scenario in one line.
    pub scenario: String,
    /// Requests finished.
    pub requests: u64,
    /// Failed fraction.
    pub failed_ratio: f64,
    /// Percentiles of latency from the intended start, ms.
    pub p50_ms: f64,
    /// 95th.
    pub p95_ms: f64,
    /// 99th.
    pub p99_ms: f64,
    /// Per-interval series (t is seconds from the load's start).
    pub series: Vec<Point>,
}

/// A guardrail's watch.
#[derive(Debug, Clone, Serialize)]
pub struct GuardrailRecord {
    /// Name.
    pub name: String,
    /// Whether it stopped the run.
    pub tripped: bool,
    /// Checks made.
    pub checks: u64,
    /// The last finding.
    pub detail: String,
}

/// The whole record of a run.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    /// Experiment name.
    pub experiment: String,
    /// Its description.
    pub description: Option<String>,
    /// Start, RFC 3339.
    pub started_at: String,
    /// Seconds it took.
    pub duration_s: f64,
    /// The seed every random choice came from.
    pub seed: u64,
    /// The verdict.
    pub verdict: Verdict,
    /// Its exit code.
    pub exit_code: u8,
    /// Why, in one sentence.
    pub reason: String,
    /// Steady-state probes before the method.
    pub steady_state_before: Vec<ProbeResult>,
    /// And after recovery.
    pub steady_state_after: Vec<ProbeResult>,
    /// Steps in the order they ended.
    pub steps: Vec<StepRecord>,
    /// Faults.
    pub faults: Vec<FaultRecord>,
    /// SLO judgements (checks and the final one).
    pub slos: Vec<SloRecord>,
    /// Load thresholds.
    pub thresholds: Vec<ThresholdRecord>,
    /// Load runs.
    pub loads: Vec<LoadRecord>,
    /// Guardrails.
    pub guardrails: Vec<GuardrailRecord>,
    /// The live lines, with their time.
    pub events: Vec<(f64, String)>,
}

/// JUnit XML of a report: one suite, one test case per verdict.
pub fn junit(r: &RunReport) -> String {
    struct Case {
        class: &'static str,
        name: String,
        failure: Option<String>,
        skipped: bool,
        time: f64,
    }
    let mut cases = Vec::new();
    for (when, probes) in [
        ("before", &r.steady_state_before),
        ("after", &r.steady_state_after),
    ] {
        for p in probes.iter() {
            cases.push(Case {
                class: "steady_state",
                name: format!("{} ({when})", p.name),
                failure: (!p.ok).then(|| p.detail.clone()),
                skipped: false,
                time: p.took_ms / 1000.0,
            });
        }
    }
    // The last judgement of each SLO is its verdict.
    let mut seen = std::collections::HashSet::new();
    for s in r.slos.iter().rev() {
        if seen.insert(s.name.clone()) {
            cases.push(Case {
                class: "slo",
                name: s.name.clone(),
                failure: (s.outcome != "met").then(|| format!("{}: {}", s.outcome, s.detail)),
                skipped: false,
                time: 0.0,
            });
        }
    }
    for t in &r.thresholds {
        cases.push(Case {
            class: "threshold",
            name: format!("{} {}", t.metric, t.expression),
            failure: (!t.ok).then(|| format!("crossed: {}", t.observed)),
            skipped: false,
            time: 0.0,
        });
    }
    for s in r.steps.iter().filter(|s| s.step.starts_with("probe")) {
        cases.push(Case {
            class: "probe",
            name: s.step.clone(),
            failure: (!s.ok).then(|| s.detail.clone()),
            skipped: false,
            time: s.took_s,
        });
    }
    for f in &r.faults {
        let never = f.applied_s.is_none();
        cases.push(Case {
            class: "rollback",
            name: f.name.clone(),
            failure: (!never && !f.verified_absent)
                .then(|| format!("not verified absent: {}", f.detail)),
            skipped: never,
            time: 0.0,
        });
    }
    for g in &r.guardrails {
        cases.push(Case {
            class: "guardrail",
            name: g.name.clone(),
            failure: g.tripped.then(|| g.detail.clone()),
            skipped: false,
            time: 0.0,
        });
    }
    let failures = cases.iter().filter(|c| c.failure.is_some()).count();
    let skipped = cases.iter().filter(|c| c.skipped).count();
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        out,
        "<testsuites name=\"shakedown\" tests=\"{}\" failures=\"{failures}\" time=\"{:.3}\">",
        cases.len(),
        r.duration_s
    );
    let _ = writeln!(
        out,
        "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{failures}\" skipped=\"{skipped}\" time=\"{:.3}\" timestamp=\"{}\">",
        escape(&r.experiment),
        cases.len(),
        r.duration_s,
        escape(&r.started_at)
    );
    let _ = writeln!(
        out,
        "    <properties><property name=\"verdict\" value=\"{}\"/><property name=\"exit_code\" value=\"{}\"/><property name=\"seed\" value=\"{}\"/></properties>",
        escape(&format!("{:?}", r.verdict)),
        r.exit_code,
        r.seed
    );
    for c in &cases {
        let _ = write!(
            out,
            "    <testcase classname=\"{}.{}\" name=\"{}\" time=\"{:.3}\"",
            escape(&r.experiment),
            c.class,
            escape(&c.name),
            c.time
        );
        match (&c.failure, c.skipped) {
            (Some(msg), _) => {
                let _ = writeln!(
                    out,
                    ">\n      <failure message=\"{}\">{}</failure>\n    </testcase>",
                    escape(msg),
                    escape(msg)
                );
            }
            (None, true) => {
                let _ = writeln!(
                    out,
                    ">\n      <skipped message=\"never applied\"/>\n    </testcase>"
                );
            }
            (None, false) => {
                let _ = writeln!(out, "/>");
            }
        }
    }
    out.push_str("  </testsuite>\n</testsuites>\n");
    out
}

/// Escapes text for XML and HTML, attributes and content alike (JUnit, `report.html`,
/// `sweep.html`); drops control characters XML 1.0 cannot carry.
pub(crate) fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' | '\r' => out.push(c),
            c if (c as u32) < 0x20 => {}
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn junit_escapes_and_counts() {
        let r = RunReport {
            experiment: "a<b".into(),
            description: None,
            started_at: "t".into(),
            duration_s: 1.0,
            seed: 1,
            verdict: Verdict::Failed,
            exit_code: 1,
            reason: "r".into(),
            steady_state_before: vec![],
            steady_state_after: vec![],
            steps: vec![],
            faults: vec![],
            slos: vec![SloRecord {
                name: "p99".into(),
                outcome: "violated".into(),
                value: Some(3.0),
                detail: "3 < 2 \"no\"".into(),
                at_s: 1.0,
                by: "final".into(),
            }],
            thresholds: vec![],
            loads: vec![],
            guardrails: vec![],
            events: vec![],
        };
        let x = junit(&r);
        assert!(
            x.contains("name=\"a&lt;b\" tests=\"1\" failures=\"1\""),
            "{x}"
        );
        assert!(x.contains("violated: 3 &lt; 2 &quot;no&quot;"), "{x}");
    }
}
