//! The resilience inflection point: the experiment run once per intensity of one variable, as a
//! grid or as a search for the highest intensity at which it still passes.
//!
//! The search assumes that more intensity never helps. It checks both ends, bisects on the grid
//! `min, min + resolution, …, max` with one run per point, and then runs the last passing and
//! the first failing intensity until each has `repeats` runs: the breaking point lies between
//! them, and each side's pass rate comes with a 95 % Wilson interval. That is
//! `2 + ⌈log₂ steps⌉ + 2·(repeats − 1)` runs where a grid with the same repeats needs
//! `(steps + 1)·repeats`.

use std::path::Path;
use std::sync::Arc;

use serde::Serialize;
use shakedown_model::experiment::{Sweep, SweepMode};

use crate::report::Verdict;
use crate::{Finished, Options};

/// One run of a sweep.
#[derive(Debug, Clone, Serialize)]
pub struct Trial {
    /// The intensity.
    pub value: f64,
    /// Its verdict.
    pub verdict: Verdict,
    /// SLO name → the value judged at the end.
    pub slos: Vec<(String, Option<f64>)>,
    /// Threshold → held.
    pub thresholds: Vec<(String, bool)>,
    /// Where its reports are.
    pub report_dir: Option<String>,
}

/// One intensity and what its runs found.
#[derive(Debug, Clone, Serialize)]
pub struct Point {
    /// The intensity.
    pub value: f64,
    /// Runs.
    pub runs: u32,
    /// Runs that passed.
    pub passes: u32,
    /// 95 % Wilson interval of the pass probability.
    pub pass_ci: (f64, f64),
}

/// What a sweep found.
#[derive(Debug, Clone, Serialize)]
pub struct SweepReport {
    /// The variable swept.
    pub var: String,
    /// `grid` or `search`.
    pub mode: String,
    /// Every run, in order.
    pub trials: Vec<Trial>,
    /// Per intensity, sorted.
    pub points: Vec<Point>,
    /// The highest intensity that passed every run, if any.
    pub last_pass: Option<f64>,
    /// The lowest intensity that failed a run, if any.
    pub first_fail: Option<f64>,
    /// The conclusion, in words.
    pub summary: String,
    /// Runs made.
    pub runs: u32,
    /// Runs a grid at the same resolution and repeats would make.
    pub grid_runs: u32,
}

/// A sweep's verdict: 0 when it ran to its end (whatever it found), else the code of the run
/// that stopped it (2 aborted, 3 rollback failed, 4 could not run).
pub struct SweepFinished {
    /// The exit code.
    pub exit_code: u8,
    /// The report (also written as `sweep.json`).
    pub report: SweepReport,
}

/// Runs the sweep; each run is a full experiment run with the variable set.
pub async fn run(origin: &str, text: &str, sweep: &Sweep, opts: Options) -> SweepFinished {
    let base_dir = opts
        .report_dir
        .clone()
        .unwrap_or_else(|| opts.state_dir.join("reports").join("sweep"));
    let mut trials: Vec<Trial> = Vec::new();
    let mut stop: Option<u8> = None;
    let print = opts.print.clone();
    let trial = async |value: f64, trials: &mut Vec<Trial>| -> Option<bool> {
        let n = trials.len() + 1;
        print(&format!("── sweep run {n}: {} = {}", sweep.var, fmt(value)));
        let mut vars = opts.vars.clone();
        vars.retain(|(k, _)| *k != sweep.var);
        vars.push((sweep.var.clone(), fmt(value)));
        let prefix = format!("  [{} = {}] ", sweep.var, fmt(value));
        let inner_print = print.clone();
        let finished: Finished = crate::run(
            origin,
            text,
            Options {
                state_dir: opts.state_dir.clone(),
                report_dir: Some(base_dir.join(format!("run-{n:02}-{}", fmt(value)))),
                interrupt: opts.interrupt.clone(),
                print: Arc::new(move |l| inner_print(&format!("{prefix}{l}"))),
                vars,
            },
        )
        .await;
        let verdict = finished.verdict;
        if finished.report.is_none() {
            print(&finished.message);
        }
        let (slos, thresholds) = finished
            .report
            .as_ref()
            .map(|r| {
                let mut slos: Vec<(String, Option<f64>)> = Vec::new();
                for s in r.slos.iter().rev() {
                    if !slos.iter().any(|x| x.0 == s.name) {
                        slos.push((s.name.clone(), s.value));
                    }
                }
                slos.reverse();
                let thresholds = r
                    .thresholds
                    .iter()
                    .map(|t| (format!("{} {}", t.metric, t.expression), t.ok))
                    .collect();
                (slos, thresholds)
            })
            .unwrap_or_default();
        trials.push(Trial {
            value,
            verdict,
            slos,
            thresholds,
            report_dir: finished.report_dir.map(|d| d.display().to_string()),
        });
        match verdict {
            Verdict::Passed => Some(true),
            Verdict::Failed => Some(false),
            other => {
                print(&format!("sweep stopped: run {n} ended {other:?}"));
                None
            }
        }
    };

    let (mode, grid_runs) = match &sweep.mode {
        SweepMode::Grid(values) => {
            for v in values {
                if trial(*v, &mut trials).await.is_none() {
                    stop = trials.last().map(|t| t.verdict.exit_code());
                    break;
                }
            }
            ("grid", values.len() as u32)
        }
        SweepMode::Search {
            min,
            max,
            resolution,
            repeats,
        } => {
            let steps = ((max - min) / resolution).round() as usize;
            let at = |i: usize| (min + i as f64 * resolution).min(*max);
            let grid_runs = (steps as u32 + 1) * repeats;
            let mut lo = 0usize;
            let mut hi = steps;
            'search: {
                match trial(at(lo), &mut trials).await {
                    None => {
                        stop = trials.last().map(|t| t.verdict.exit_code());
                        break 'search;
                    }
                    Some(false) => break 'search, // breaks at the lowest intensity already
                    Some(true) => {}
                }
                match trial(at(hi), &mut trials).await {
                    None => {
                        stop = trials.last().map(|t| t.verdict.exit_code());
                        break 'search;
                    }
                    Some(true) => break 'search, // holds over the whole range
                    Some(false) => {}
                }
                while hi - lo > 1 {
                    let mid = lo + (hi - lo) / 2;
                    match trial(at(mid), &mut trials).await {
                        None => {
                            stop = trials.last().map(|t| t.verdict.exit_code());
                            break 'search;
                        }
                        Some(true) => lo = mid,
                        Some(false) => hi = mid,
                    }
                }
                // Both sides of the boundary, `repeats` runs each.
                for side in [lo, hi] {
                    while trials.iter().filter(|t| t.value == at(side)).count() < *repeats as usize
                    {
                        if trial(at(side), &mut trials).await.is_none() {
                            stop = trials.last().map(|t| t.verdict.exit_code());
                            break 'search;
                        }
                    }
                }
            }
            ("search", grid_runs)
        }
    };

    let report = summarize(&sweep.var, mode, trials, grid_runs);
    print(&format!("sweep: {}", report.summary));
    for p in &report.points {
        print(&format!(
            "  {} = {:>8}: {}/{} passed (95% CI {:.2}–{:.2})",
            sweep.var,
            fmt(p.value),
            p.passes,
            p.runs,
            p.pass_ci.0,
            p.pass_ci.1
        ));
    }
    let slos: Vec<(String, String, f64)> =
        shakedown_model::experiment::Experiment::load(origin, text)
            .map(|(e, _)| {
                e.slos
                    .iter()
                    .map(|s| (s.name.clone(), s.op.as_str().to_owned(), s.threshold))
                    .collect()
            })
            .unwrap_or_default();
    if let Err(e) = write(&base_dir, &report, &slos) {
        print(&format!("sweep reports could not be written: {e}"));
    } else {
        print(&format!(
            "sweep report: {} and sweep.html",
            base_dir.join("sweep.json").display()
        ));
    }
    SweepFinished {
        exit_code: stop.unwrap_or(0),
        report,
    }
}

fn write(dir: &Path, report: &SweepReport, slos: &[(String, String, f64)]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let json = serde_json::to_string_pretty(report).map_err(std::io::Error::other)?;
    std::fs::write(dir.join("sweep.json"), json + "\n")?;
    std::fs::write(dir.join("sweep.html"), html(report, slos))
}

/// The sweep as a page: per SLO, its value in every run against the intensity, the SLO's
/// threshold as a line, passing and failing runs told apart, and the breaking point marked.
pub fn html(r: &SweepReport, slos: &[(String, String, f64)]) -> String {
    use crate::report::escape as esc;
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = write!(
        out,
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>sweep of {var}</title><style>\
         body{{font:14px system-ui,sans-serif;margin:24px;color:#222}}h1{{font-size:20px}}\
         .box{{border:1px solid #ddd;border-radius:6px;padding:12px;margin:12px 0}}\
         table{{border-collapse:collapse}}td,th{{border-bottom:1px solid #eee;padding:4px 10px;text-align:right}}\
         </style></head><body><h1>Resilience inflection point: {var}</h1><p class=\"box\"><b>{summary}</b><br>\
         {runs} runs ({mode}); a grid at the same resolution and repeats: {grid}.</p>",
        var = esc(&r.var),
        summary = esc(&r.summary),
        runs = r.runs,
        mode = esc(&r.mode),
        grid = r.grid_runs,
    );
    let xs: Vec<f64> = r.trials.iter().map(|t| t.value).collect();
    let (x0, x1) = bounds(&xs);
    for (name, op, threshold) in slos {
        let ys: Vec<f64> = r
            .trials
            .iter()
            .filter_map(|t| t.slos.iter().find(|s| s.0 == *name).and_then(|s| s.1))
            .chain(std::iter::once(*threshold))
            .collect();
        let (y0, y1) = bounds(&ys);
        let (w, h, l, b) = (720.0, 300.0, 60.0, 40.0);
        let px = |x: f64| l + (x - x0) / (x1 - x0) * (w - l - 20.0);
        let py = |y: f64| h - b - (y - y0) / (y1 - y0) * (h - b - 20.0);
        let _ = write!(
            out,
            "<div class=\"box\"><h2 style=\"font-size:16px\">{} (must be {} {})</h2><svg width=\"{w}\" height=\"{h}\" role=\"img\">",
            esc(name),
            esc(op),
            threshold
        );
        if let (Some(lo), Some(hi)) = (r.last_pass, r.first_fail) {
            let _ = write!(
                out,
                "<rect x=\"{:.1}\" y=\"20\" width=\"{:.1}\" height=\"{:.1}\" fill=\"#fde2c4\"><title>breaking point</title></rect>\
                 <text x=\"{:.1}\" y=\"16\" font-size=\"12\" fill=\"#b45309\">breaks here</text>",
                px(lo),
                (px(hi) - px(lo)).max(2.0),
                h - b - 20.0,
                px(lo)
            );
        }
        let _ = write!(
            out,
            "<line x1=\"{l}\" y1=\"{y:.1}\" x2=\"{x2}\" y2=\"{y:.1}\" stroke=\"#dc2626\" stroke-dasharray=\"6 4\"/>\
             <text x=\"{x2}\" y=\"{ty:.1}\" font-size=\"11\" text-anchor=\"end\" fill=\"#dc2626\">threshold {threshold}</text>\
             <line x1=\"{l}\" y1=\"{base}\" x2=\"{x2}\" y2=\"{base}\" stroke=\"#888\"/>\
             <line x1=\"{l}\" y1=\"20\" x2=\"{l}\" y2=\"{base}\" stroke=\"#888\"/>",
            y = py(*threshold),
            ty = py(*threshold) - 4.0,
            x2 = w - 20.0,
            base = h - b,
        );
        for i in 0..=4 {
            let xv = x0 + (x1 - x0) * f64::from(i) / 4.0;
            let yv = y0 + (y1 - y0) * f64::from(i) / 4.0;
            let _ = write!(
                out,
                "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"11\" text-anchor=\"middle\">{}</text>\
                 <text x=\"{:.1}\" y=\"{:.1}\" font-size=\"11\" text-anchor=\"end\">{}</text>",
                px(xv),
                h - b + 16.0,
                short(xv),
                l - 6.0,
                py(yv) + 4.0,
                short(yv)
            );
        }
        let _ = write!(
            out,
            "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"12\" text-anchor=\"middle\">{}</text>",
            (w + l) / 2.0,
            h - 6.0,
            esc(&r.var)
        );
        for t in &r.trials {
            if let Some(v) = t.slos.iter().find(|s| s.0 == *name).and_then(|s| s.1) {
                let pass = t.verdict == Verdict::Passed;
                let _ = write!(
                    out,
                    "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"5\" fill=\"{}\" fill-opacity=\"0.75\"><title>{} = {}: {} ({:?})</title></circle>",
                    px(t.value),
                    py(v),
                    if pass { "#16a34a" } else { "#dc2626" },
                    esc(&r.var),
                    fmt(t.value),
                    short(v),
                    t.verdict
                );
            }
        }
        out.push_str("</svg><p style=\"font-size:12px;color:#555\">green: the run passed; red: it failed; shaded: between the last intensity that always passed and the first that failed.</p></div>");
    }
    out.push_str("<div class=\"box\"><table><tr><th>intensity</th><th>runs</th><th>passed</th><th>95% CI of passing</th></tr>");
    for p in &r.points {
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{:.2}–{:.2}</td></tr>",
            fmt(p.value),
            p.runs,
            p.passes,
            p.pass_ci.0,
            p.pass_ci.1
        );
    }
    out.push_str("</table></div></body></html>\n");
    out
}

fn bounds(v: &[f64]) -> (f64, f64) {
    let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if !lo.is_finite() || !hi.is_finite() {
        return (0.0, 1.0);
    }
    let pad = ((hi - lo) * 0.08).max(hi.abs() * 0.05).max(1e-9);
    // Values that cannot be negative keep 0 as the floor of their axis.
    let floor = if lo >= 0.0 {
        (lo - pad).max(0.0)
    } else {
        lo - pad
    };
    (floor, hi + pad)
}

fn short(v: f64) -> String {
    if v.abs() >= 100.0 || v == v.trunc() {
        format!("{v:.0}")
    } else if v.abs() >= 1.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.3}")
    }
}

/// Points, boundary and summary from the runs.
pub fn summarize(var: &str, mode: &str, trials: Vec<Trial>, grid_runs: u32) -> SweepReport {
    let mut values: Vec<f64> = trials.iter().map(|t| t.value).collect();
    values.sort_by(f64::total_cmp);
    values.dedup();
    let points: Vec<Point> = values
        .iter()
        .map(|v| {
            let runs = trials.iter().filter(|t| t.value == *v).count() as u32;
            let passes = trials
                .iter()
                .filter(|t| t.value == *v && t.verdict == Verdict::Passed)
                .count() as u32;
            Point {
                value: *v,
                runs,
                passes,
                pass_ci: wilson(passes, runs),
            }
        })
        .collect();
    let first_fail = points.iter().find(|p| p.passes < p.runs).map(|p| p.value);
    let last_pass = points
        .iter()
        .filter(|p| p.passes == p.runs && first_fail.is_none_or(|f| p.value < f))
        .map(|p| p.value)
        .next_back();
    let summary = match (last_pass, first_fail) {
        (Some(lo), Some(hi)) => {
            let lp = points.iter().find(|p| p.value == lo);
            let hp = points.iter().find(|p| p.value == hi);
            let side = |p: Option<&Point>| {
                p.map(|p| {
                    format!(
                        "{}/{} passed, CI {:.2}–{:.2}",
                        p.passes, p.runs, p.pass_ci.0, p.pass_ci.1
                    )
                })
                .unwrap_or_default()
            };
            format!(
                "breaking point of {var} between {} ({}) and {} ({})",
                fmt(lo),
                side(lp),
                fmt(hi),
                side(hp)
            )
        }
        (None, Some(hi)) => format!(
            "fails already at {var} = {} (the lowest intensity run)",
            fmt(hi)
        ),
        (Some(lo), None) => format!(
            "holds up to {var} = {} (the highest intensity run): no breaking point in range",
            fmt(lo)
        ),
        (None, None) => "no run finished".into(),
    };
    SweepReport {
        var: var.to_owned(),
        mode: mode.to_owned(),
        runs: trials.len() as u32,
        trials,
        points,
        last_pass,
        first_fail,
        summary,
        grid_runs,
    }
}

/// 95 % Wilson score interval of `k` successes in `n`.
pub fn wilson(k: u32, n: u32) -> (f64, f64) {
    if n == 0 {
        return (0.0, 1.0);
    }
    let z = 1.959_963_984_540_054_f64;
    let n = f64::from(n);
    let p = f64::from(k) / n;
    let denom = 1.0 + z * z / n;
    let center = (p + z * z / (2.0 * n)) / denom;
    let half = z * ((p * (1.0 - p) + z * z / (4.0 * n)) / n).sqrt() / denom;
    // At the ends the interval touches 0 or 1 exactly (rounding would leave a hair).
    let lo = if k == 0 {
        0.0
    } else {
        (center - half).max(0.0)
    };
    let hi = if f64::from(k) == n {
        1.0
    } else {
        (center + half).min(1.0)
    };
    (lo, hi)
}

/// A value without a trailing `.0`.
fn fmt(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(value: f64, pass: bool) -> Trial {
        Trial {
            value,
            verdict: if pass {
                Verdict::Passed
            } else {
                Verdict::Failed
            },
            slos: vec![],
            thresholds: vec![],
            report_dir: None,
        }
    }

    #[test]
    fn wilson_matches_known_values() {
        let (lo, hi) = wilson(3, 3);
        assert!((lo - 0.4385).abs() < 1e-3 && hi == 1.0, "{lo} {hi}");
        let (lo, hi) = wilson(0, 3);
        assert!(lo == 0.0 && (hi - 0.5615).abs() < 1e-3, "{lo} {hi}");
        let (lo, hi) = wilson(5, 10);
        assert!(
            (lo - 0.2366).abs() < 1e-3 && (hi - 0.7634).abs() < 1e-3,
            "{lo} {hi}"
        );
    }

    #[test]
    fn the_boundary_is_the_last_clean_pass_and_the_first_failure() {
        let trials = vec![
            t(0.0, true),
            t(50.0, false),
            t(25.0, false),
            t(12.5, true),
            t(12.5, true),
            t(15.0, false),
            t(15.0, true),
        ];
        let r = summarize("abort", "search", trials, 63);
        assert_eq!(r.last_pass, Some(12.5));
        assert_eq!(r.first_fail, Some(15.0));
        assert!(
            r.summary.contains("between 12.5 (2/2 passed"),
            "{}",
            r.summary
        );
        assert_eq!(r.runs, 7);
        let page = html(&r, &[("x<y".into(), "<".into(), 0.15)]);
        assert!(
            page.contains("x&lt;y") && page.contains("breaks here"),
            "{page}"
        );
    }
}
