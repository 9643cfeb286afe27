//! The HTML report of a run: one self-contained page (inline CSS and SVG, no scripts, no
//! external assets) that an on-call engineer can open from a CI artifact and read at a glance.
//!
//! Top to bottom: the verdict banner, key figures, latency and error-rate plots over the run with
//! every fault window shaded, then the tables (SLOs, thresholds, faults, steps, guardrails,
//! steady state) and the event log folded away. Everything is rendered from [`RunReport`] alone,
//! so a `report.json` from any run can be re-rendered.
//!
//! The plots share one small renderer (`Plot`): an x range, a y `Scale`, lines and shaded
//! bands. A future sweep section (x = the swept parameter) is another `Plot` with its own `x_fmt`
//! and no bands, added as one more section in [`html`].

use std::collections::HashSet;
use std::fmt::Write as _;

use shakedown_load::series::Point;

use crate::probe::ProbeResult;
use crate::report::{LoadRecord, RunReport, SloRecord, Verdict, escape as esc};

/// The report as one HTML page.
pub fn html(r: &RunReport) -> String {
    let mut out = String::with_capacity(32 * 1024);
    let (label, class) = verdict_look(r.verdict);
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\"/>\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"/>\n\
         <title>{} — {label} — Shakedown</title>\n<style>{CSS}</style>\n</head>\n<body>\n",
        esc(&r.experiment)
    );
    header(&mut out, r, label, class);
    out.push_str("<main>\n");
    figures(&mut out, r);
    load_section(&mut out, r);
    slo_section(&mut out, &r.slos);
    thresholds_section(&mut out, r);
    faults_section(&mut out, r);
    steps_section(&mut out, r);
    guardrails_section(&mut out, r);
    steady_state_section(&mut out, r);
    events_section(&mut out, r);
    out.push_str("</main>\n</body>\n</html>\n");
    out
}

/// The banner text and CSS class of a verdict.
fn verdict_look(v: Verdict) -> (&'static str, &'static str) {
    match v {
        Verdict::Passed => ("PASSED", "passed"),
        Verdict::Failed => ("FAILED", "failed"),
        Verdict::Aborted => ("ABORTED", "aborted"),
        Verdict::RollbackFailed => ("ROLLBACK FAILED", "rollback-failed"),
        Verdict::CouldNotRun => ("COULD NOT RUN", "could-not-run"),
    }
}

fn header(out: &mut String, r: &RunReport, label: &str, class: &str) {
    let _ = write!(
        out,
        "<header class=\"banner {class}\">\n<div class=\"verdict\">{label}<span class=\"exit\">exit {}</span></div>\n\
         <div class=\"title\"><h1>{}</h1>\n",
        r.exit_code,
        esc(&r.experiment)
    );
    if let Some(d) = &r.description {
        let _ = writeln!(out, "<p class=\"desc\">{}</p>", esc(d));
    }
    let _ = write!(
        out,
        "<p class=\"reason\">{}</p>\n</div>\n<dl class=\"meta\">\
         <div><dt>started</dt><dd>{}</dd></div>\
         <div><dt>duration</dt><dd>{}</dd></div>\
         <div><dt>seed</dt><dd>{}</dd></div></dl>\n</header>\n",
        esc(&r.reason),
        esc(&r.started_at),
        duration(r.duration_s),
        r.seed
    );
    if r.verdict == Verdict::RollbackFailed {
        out.push_str(
            "<p class=\"alarm\">A rollback failed: a fault may still be in place. \
             Run <code>shakedown recover</code> and check the faults table below.</p>\n",
        );
    }
}

/// A row of cards with the numbers an SRE looks for first.
fn figures(out: &mut String, r: &RunReport) {
    let finals = final_slos(&r.slos);
    let met = finals.iter().filter(|s| s.outcome == "met").count();
    let held = r.thresholds.iter().filter(|t| t.ok).count();
    let applied: Vec<_> = r.faults.iter().filter(|f| f.applied_s.is_some()).collect();
    let clean = applied.iter().filter(|f| f.verified_absent).count();
    let tripped = r.guardrails.iter().filter(|g| g.tripped).count();
    let reqs: u64 = r.loads.iter().map(|l| l.requests).sum();
    let failed: f64 = r
        .loads
        .iter()
        .map(|l| l.failed_ratio * l.requests as f64)
        .sum();
    let mut cards = vec![
        card(
            "SLOs met",
            &format!("{met}/{}", finals.len()),
            ratio_tone(met, finals.len()),
        ),
        card(
            "thresholds held",
            &format!("{held}/{}", r.thresholds.len()),
            ratio_tone(held, r.thresholds.len()),
        ),
        card(
            "faults rolled back",
            &format!("{clean}/{}", applied.len()),
            ratio_tone(clean, applied.len()),
        ),
        card(
            "guardrails tripped",
            &tripped.to_string(),
            if tripped == 0 { Tone::Good } else { Tone::Bad },
        ),
    ];
    if !r.loads.is_empty() {
        let share = if reqs == 0 { 0.0 } else { failed / reqs as f64 };
        let p99 = r.loads.iter().map(|l| l.p99_ms).fold(0.0, f64::max);
        cards.push(card("requests", &reqs.to_string(), Tone::Neutral));
        cards.push(card("failed", &percent(share * 100.0), Tone::Neutral));
        cards.push(card("p99 latency", &ms(p99), Tone::Neutral));
    }
    let _ = writeln!(out, "<section class=\"cards\">{}</section>", cards.concat());
}

fn card(name: &str, value: &str, tone: Tone) -> String {
    format!(
        "<div class=\"card {}\"><div class=\"v\">{}</div><div class=\"k\">{}</div></div>",
        tone.class(),
        esc(value),
        esc(name)
    )
}

fn ratio_tone(good: usize, of: usize) -> Tone {
    match (good, of) {
        (_, 0) => Tone::Neutral,
        (g, o) if g == o => Tone::Good,
        _ => Tone::Bad,
    }
}

/// The loads table and both plots, or a note when no load ran.
fn load_section(out: &mut String, r: &RunReport) {
    out.push_str("<section>\n<h2>Load</h2>\n");
    if r.loads.is_empty() {
        out.push_str(
            "<p class=\"note\">No load ran in this experiment: nothing to plot.</p>\n</section>\n",
        );
        return;
    }
    let rows: Vec<Vec<String>> = r
        .loads
        .iter()
        .map(|l| {
            vec![
                secs(l.started_s),
                esc(&l.scenario),
                l.requests.to_string(),
                percent(l.failed_ratio * 100.0),
                ms(l.p50_ms),
                ms(l.p95_ms),
                ms(l.p99_ms),
            ]
        })
        .collect();
    table(
        out,
        &[
            "started", "scenario", "requests", "failed", "p50", "p95", "p99",
        ],
        &rows,
        "",
    );
    if r.loads.iter().all(|l| l.series.is_empty()) {
        out.push_str(
            "<p class=\"note\">The load recorded no intervals: nothing to plot.</p>\n</section>\n",
        );
        return;
    }
    let x_max = time_end(r);
    let bands = fault_bands(r);
    let latency = Plot {
        label: "Latency percentiles per interval over the run",
        x_max,
        x_fmt: time_tick,
        x_label: "seconds since the run started",
        y: Scale::fit(
            r.loads
                .iter()
                .flat_map(|l| l.series.iter().filter(|p| p.reqs > 0))
                .flat_map(|p| [p.p50, p.p90, p.p99]),
            true,
            f64::INFINITY,
        ),
        y_tick: ms_tick,
        y_fmt: ms,
        y_label: "latency",
        lines: vec![
            series_line(&r.loads, Pen::line("p50", "#1c5fd4", 1.75), |p| p.p50),
            series_line(&r.loads, Pen::line("p90", "#2f9e44", 3.0), |p| p.p90),
            series_line(&r.loads, Pen::halo("p99", "#d6336c", 8.0), |p| p.p99),
        ],
        bands: &bands,
    };
    let failed = |p: &Point| p.failed as f64 / p.reqs as f64 * 100.0;
    let fivexx = |p: &Point| p.classes[4] as f64 / p.reqs as f64 * 100.0;
    let top = r
        .loads
        .iter()
        .flat_map(|l| l.series.iter().filter(|p| p.reqs > 0))
        .map(|p| failed(p).max(fivexx(p)));
    let errors = Plot {
        label: "Failed requests and 5xx responses per interval over the run",
        x_max,
        x_fmt: time_tick,
        x_label: "seconds since the run started",
        y: Scale::fit(top.chain([1.0]), false, 100.0),
        y_tick: percent,
        y_fmt: percent,
        y_label: "share of requests",
        lines: vec![
            series_line(&r.loads, Pen::halo("failed", "#e03131", 8.0), failed),
            series_line(&r.loads, Pen::dashed("5xx", "#5c2d00", 2.0), fivexx),
        ],
        bands: &bands,
    };
    let _ = write!(
        out,
        "<h3>Latency per interval</h3>\n{}<h3>Errors per interval</h3>\n{}</section>\n",
        latency.svg(),
        errors.svg()
    );
}

/// The end of the time axis: the run, or anything recorded past it.
fn time_end(r: &RunReport) -> f64 {
    let points = r
        .loads
        .iter()
        .flat_map(|l| l.series.iter().map(move |p| l.started_s + p.t));
    let faults = r
        .faults
        .iter()
        .flat_map(|f| [f.applied_s, f.removed_s])
        .flatten();
    let end = points
        .chain(faults)
        .filter(|v| v.is_finite())
        .fold(r.duration_s, f64::max);
    if end > 0.0 { end } else { 1.0 }
}

/// One shaded band per applied fault, to the end of the axis if it was never removed.
fn fault_bands(r: &RunReport) -> Vec<Band> {
    r.faults
        .iter()
        .filter_map(|f| {
            let from = f.applied_s?;
            Some(Band {
                from,
                to: f.removed_s,
                label: format!("{} ({})", f.name, f.kind),
            })
        })
        .collect()
}

/// A line across every load, in run time, broken where an interval had no requests.
fn series_line(loads: &[LoadRecord], pen: Pen, value: impl Fn(&Point) -> f64) -> Line {
    let mut segments = Vec::new();
    for l in loads {
        let mut seg = Vec::new();
        for p in &l.series {
            let v = if p.reqs > 0 { value(p) } else { f64::NAN };
            if v.is_finite() {
                seg.push((l.started_s + p.t, v));
            } else if !seg.is_empty() {
                segments.push(std::mem::take(&mut seg));
            }
        }
        if !seg.is_empty() {
            segments.push(seg);
        }
    }
    Line { pen, segments }
}

fn slo_section(out: &mut String, slos: &[SloRecord]) {
    out.push_str("<section>\n<h2>SLOs</h2>\n");
    let row = |s: &SloRecord| {
        vec![
            esc(&s.name),
            badge(outcome_tone(&s.outcome), &s.outcome),
            s.value.map(number).unwrap_or_else(|| "—".into()),
            esc(&s.detail),
            secs(s.at_s),
            esc(&s.by),
        ]
    };
    let head = ["SLO", "outcome", "value", "detail", "at", "by"];
    let finals: Vec<_> = final_slos(slos).into_iter().map(row).collect();
    table(out, &head, &finals, "No SLOs were declared.");
    if !slos.is_empty() {
        let _ = writeln!(
            out,
            "<details><summary>Every judgement ({})</summary>",
            slos.len()
        );
        let all: Vec<_> = slos.iter().map(row).collect();
        table(out, &head, &all, "");
        out.push_str("</details>\n");
    }
    out.push_str("</section>\n");
}

/// The verdict of each SLO: its last judgement, in the order SLOs were first judged.
fn final_slos(slos: &[SloRecord]) -> Vec<&SloRecord> {
    let mut seen = HashSet::new();
    let mut last: Vec<&SloRecord> = slos
        .iter()
        .rev()
        .filter(|s| seen.insert(s.name.as_str()))
        .collect();
    last.reverse();
    let first = |name: &str| slos.iter().position(|s| s.name == name);
    last.sort_by_key(|s| first(&s.name));
    last
}

fn outcome_tone(outcome: &str) -> Tone {
    match outcome {
        "met" => Tone::Good,
        "violated" => Tone::Bad,
        _ => Tone::Warn,
    }
}

fn thresholds_section(out: &mut String, r: &RunReport) {
    out.push_str("<section>\n<h2>k6 thresholds</h2>\n");
    let rows: Vec<_> = r
        .thresholds
        .iter()
        .map(|t| {
            vec![
                esc(&t.metric),
                format!("<code>{}</code>", esc(&t.expression)),
                esc(&t.observed),
                if t.ok {
                    badge(Tone::Good, "held")
                } else {
                    badge(Tone::Bad, "crossed")
                },
            ]
        })
        .collect();
    table(
        out,
        &["metric", "threshold", "observed", "result"],
        &rows,
        "No thresholds were declared.",
    );
    out.push_str("</section>\n");
}

fn faults_section(out: &mut String, r: &RunReport) {
    out.push_str("<section>\n<h2>Faults</h2>\n");
    let rows: Vec<_> = r
        .faults
        .iter()
        .map(|f| {
            let applied = f.applied_s.is_some();
            let (present, absent) = if !applied {
                (
                    badge(Tone::Neutral, "never applied"),
                    badge(Tone::Neutral, "—"),
                )
            } else {
                (
                    check(f.verified_present, "verified", "not seen"),
                    check(f.verified_absent, "verified", "NOT VERIFIED"),
                )
            };
            vec![
                esc(&f.name),
                esc(&f.kind),
                esc(&f.what),
                f.applied_s.map(secs).unwrap_or_else(|| "—".into()),
                match (applied, f.removed_s) {
                    (_, Some(t)) => secs(t),
                    (true, None) => badge(Tone::Bad, "never removed"),
                    (false, None) => "—".into(),
                },
                present,
                absent,
                esc(&f.detail),
            ]
        })
        .collect();
    table(
        out,
        &[
            "fault", "kind", "what", "applied", "removed", "present", "absent", "detail",
        ],
        &rows,
        "No faults were declared.",
    );
    out.push_str("</section>\n");
}

fn steps_section(out: &mut String, r: &RunReport) {
    out.push_str("<section>\n<h2>Steps</h2>\n");
    let rows: Vec<_> = r
        .steps
        .iter()
        .map(|s| {
            vec![
                format!("<code>{}</code>", esc(&s.path)),
                esc(&s.step),
                secs(s.started_s),
                took(s.took_s),
                check(s.ok, "ok", "FAILED"),
                esc(&s.detail),
            ]
        })
        .collect();
    table(
        out,
        &["path", "step", "start", "took", "ok", "detail"],
        &rows,
        "No steps ran.",
    );
    out.push_str("</section>\n");
}

fn guardrails_section(out: &mut String, r: &RunReport) {
    out.push_str("<section>\n<h2>Guardrails</h2>\n");
    let rows: Vec<_> = r
        .guardrails
        .iter()
        .map(|g| {
            vec![
                esc(&g.name),
                if g.tripped {
                    badge(Tone::Bad, "TRIPPED")
                } else {
                    badge(Tone::Good, "held")
                },
                g.checks.to_string(),
                esc(&g.detail),
            ]
        })
        .collect();
    table(
        out,
        &["guardrail", "result", "checks", "last finding"],
        &rows,
        "No guardrails were declared.",
    );
    out.push_str("</section>\n");
}

fn steady_state_section(out: &mut String, r: &RunReport) {
    out.push_str("<section>\n<h2>Steady state</h2>\n");
    let row = |when: &str, p: &ProbeResult| {
        vec![
            esc(when),
            esc(&p.name),
            check(p.ok, "ok", "FAILED"),
            format!("{} ms", number(p.took_ms)),
            esc(&p.detail),
        ]
    };
    let rows: Vec<_> = r
        .steady_state_before
        .iter()
        .map(|p| row("before", p))
        .chain(r.steady_state_after.iter().map(|p| row("after", p)))
        .collect();
    table(
        out,
        &["when", "probe", "ok", "took", "detail"],
        &rows,
        "No steady-state probes ran.",
    );
    out.push_str("</section>\n");
}

fn events_section(out: &mut String, r: &RunReport) {
    let _ = writeln!(
        out,
        "<section>\n<details class=\"events\"><summary>Event log ({} lines)</summary>",
        r.events.len()
    );
    let rows: Vec<_> = r
        .events
        .iter()
        .map(|(t, line)| vec![secs(*t), format!("<code>{}</code>", esc(line))])
        .collect();
    table(out, &["time", "line"], &rows, "Nothing was logged.");
    out.push_str("</details>\n</section>\n");
}

/// A table of cells that are already HTML; `empty` (if any) replaces a table with no rows.
fn table(out: &mut String, head: &[&str], rows: &[Vec<String>], empty: &str) {
    if rows.is_empty() {
        if !empty.is_empty() {
            let _ = writeln!(out, "<p class=\"note\">{}</p>", esc(empty));
        }
        return;
    }
    out.push_str("<table>\n<thead><tr>");
    for h in head {
        let _ = write!(out, "<th>{}</th>", esc(h));
    }
    out.push_str("</tr></thead>\n<tbody>\n");
    for row in rows {
        out.push_str("<tr>");
        for c in row {
            let _ = write!(out, "<td>{c}</td>");
        }
        out.push_str("</tr>\n");
    }
    out.push_str("</tbody>\n</table>\n");
}

/// How a value reads: good, bad, worth a look, or just a fact.
#[derive(Clone, Copy)]
enum Tone {
    Good,
    Warn,
    Bad,
    Neutral,
}

impl Tone {
    fn class(self) -> &'static str {
        match self {
            Tone::Good => "good",
            Tone::Warn => "warn",
            Tone::Bad => "bad",
            Tone::Neutral => "neutral",
        }
    }
}

fn badge(tone: Tone, text: &str) -> String {
    format!(
        "<span class=\"badge {}\">{}</span>",
        tone.class(),
        esc(text)
    )
}

fn check(ok: bool, yes: &str, no: &str) -> String {
    if ok {
        badge(Tone::Good, yes)
    } else {
        badge(Tone::Bad, no)
    }
}

/// A shaded stretch of the x axis (a fault window); `to: None` runs to the end.
struct Band {
    from: f64,
    to: Option<f64>,
    label: String,
}

/// One named line, in pieces where it has no data.
struct Line {
    pen: Pen,
    segments: Vec<Vec<(f64, f64)>>,
}

/// How a line is drawn. Wider lines are drawn first, and the widest as a translucent halo, so
/// lines that run on top of each other (p50 = p90 = p99 when an interval has a few requests,
/// failed = 5xx) still show every one.
struct Pen {
    name: &'static str,
    colour: &'static str,
    width: f64,
    opacity: f64,
    dashed: bool,
}

impl Pen {
    fn line(name: &'static str, colour: &'static str, width: f64) -> Pen {
        Pen {
            name,
            colour,
            width,
            opacity: 1.0,
            dashed: false,
        }
    }

    fn halo(name: &'static str, colour: &'static str, width: f64) -> Pen {
        Pen {
            opacity: 0.45,
            ..Pen::line(name, colour, width)
        }
    }

    fn dashed(name: &'static str, colour: &'static str, width: f64) -> Pen {
        Pen {
            dashed: true,
            ..Pen::line(name, colour, width)
        }
    }

    /// SVG stroke attributes, at `width` (the legend draws thinner keys).
    fn stroke(&self, width: f64) -> String {
        let dash = if self.dashed {
            " stroke-dasharray=\"6 4\""
        } else {
            ""
        };
        format!(
            "stroke=\"{}\" stroke-width=\"{width}\" stroke-opacity=\"{}\"{dash}",
            self.colour, self.opacity
        )
    }
}

/// How values map to the height of a plot.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Scale {
    /// 0 at the bottom.
    Linear { max: f64, step: f64 },
    /// For values spanning orders of magnitude (latency under a delay fault).
    Log { min: f64, max: f64 },
}

impl Scale {
    /// A scale for `values`, with a little headroom (up to `ceiling`, such as 100 %):
    /// logarithmic when `allow_log` and they span more than ~two decades.
    fn fit(values: impl Iterator<Item = f64>, allow_log: bool, ceiling: f64) -> Scale {
        let (mut lo, mut hi) = (f64::INFINITY, 0.0_f64);
        for v in values.filter(|v| v.is_finite() && *v > 0.0) {
            lo = lo.min(v);
            hi = hi.max(v);
        }
        if hi <= 0.0 {
            return Scale::Linear {
                max: 1.0,
                step: 0.2,
            };
        }
        if allow_log && hi / lo > 50.0 {
            return Scale::Log {
                min: nice_125((lo / 1.5).max(0.01), false),
                max: nice_125(hi * 1.1, true),
            };
        }
        let step = nice_step(hi / 5.0);
        let mut max = (hi / step).ceil() * step;
        if max - hi < step / 10.0 {
            max += step;
        }
        Scale::Linear {
            max: if hi <= ceiling { max.min(ceiling) } else { max },
            step,
        }
    }

    /// Where `v` sits, 0 (bottom) to 1 (top), clamped.
    fn frac(self, v: f64) -> f64 {
        let f = match self {
            Scale::Linear { max, .. } => v / max,
            Scale::Log { min, max } => (v.max(min).ln() - min.ln()) / (max.ln() - min.ln()),
        };
        f.clamp(0.0, 1.0)
    }

    fn ticks(self) -> Vec<f64> {
        match self {
            Scale::Linear { max, step } => (0..)
                .map(|i| i as f64 * step)
                .take_while(|v| *v <= max * (1.0 + 1e-9))
                .collect(),
            Scale::Log { min, max } => {
                let mut all = Vec::new();
                let mut decade = 10f64.powf(min.log10().floor());
                while decade <= max * (1.0 + 1e-9) {
                    for m in [1.0, 2.0, 5.0] {
                        let v = decade * m;
                        if v >= min * (1.0 - 1e-9) && v <= max * (1.0 + 1e-9) {
                            all.push(v);
                        }
                    }
                    decade *= 10.0;
                }
                if all.len() > 9 {
                    // Decades only, so labels do not crowd.
                    all.retain(|v| {
                        let m = v / 10f64.powf(v.log10().floor());
                        (m - 1.0).abs() < 1e-6
                    });
                }
                // And the ends, which may be a 2 or a 3.
                if all.first().is_none_or(|v| *v > min * (1.0 + 1e-9)) {
                    all.insert(0, min);
                }
                if all.last().is_none_or(|v| *v < max * (1.0 - 1e-9)) {
                    all.push(max);
                }
                all
            }
        }
    }
}

/// The next 1-2-5 value at or above (`up`) or below `v`.
fn nice_125(v: f64, up: bool) -> f64 {
    let decade = 10f64.powf(v.log10().floor());
    if up {
        // A 3 too, so 2.002 s tops out at 3 s, not 5.
        [1.0, 2.0, 3.0, 5.0, 10.0]
            .iter()
            .map(|m| m * decade)
            .find(|c| *c >= v * (1.0 - 1e-9))
            .unwrap_or(10.0 * decade)
    } else {
        [1.0, 2.0, 5.0, 10.0]
            .iter()
            .rev()
            .map(|m| m * decade)
            .find(|c| *c <= v * (1.0 + 1e-9))
            .unwrap_or(decade)
    }
}

/// A round step (1, 2, 5 × 10ⁿ) near `raw`.
fn nice_step(raw: f64) -> f64 {
    if !(raw.is_finite() && raw > 0.0) {
        return 1.0;
    }
    let decade = 10f64.powf(raw.log10().floor());
    let m = raw / decade;
    let nice = if m <= 1.0 {
        1.0
    } else if m <= 2.0 {
        2.0
    } else if m <= 5.0 {
        5.0
    } else {
        10.0
    };
    nice * decade
}

/// A round step for a time axis: seconds, then minutes, then hours.
fn time_step(raw: f64) -> f64 {
    const STEPS: [f64; 14] = [
        1.0, 2.0, 5.0, 10.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1800.0, 3600.0, 7200.0,
    ];
    STEPS
        .into_iter()
        .find(|s| *s >= raw)
        .unwrap_or_else(|| nice_step(raw / 3600.0) * 3600.0)
}

/// A chart: x from 0 to `x_max`, a y scale, lines and shaded bands, a legend above the area.
struct Plot<'a> {
    /// What it shows, for screen readers.
    label: &'a str,
    x_max: f64,
    x_fmt: fn(f64) -> String,
    x_label: &'a str,
    y: Scale,
    /// Labels of the round values on the axis.
    y_tick: fn(f64) -> String,
    /// Values in tooltips.
    y_fmt: fn(f64) -> String,
    y_label: &'a str,
    lines: Vec<Line>,
    bands: &'a [Band],
}

const W: f64 = 1160.0;
const H: f64 = 320.0;
/// Plot area margins: left (y ticks), right, top (legend), bottom (x ticks and label).
const ML: f64 = 78.0;
const MR: f64 = 18.0;
const MT: f64 = 66.0;
const MB: f64 = 46.0;

impl Plot<'_> {
    fn x(&self, v: f64) -> f64 {
        ML + (v / self.x_max).clamp(0.0, 1.0) * (W - ML - MR)
    }

    fn y(&self, v: f64) -> f64 {
        MT + (1.0 - self.y.frac(v)) * (H - MT - MB)
    }

    fn svg(&self) -> String {
        let mut s = String::new();
        let (left, right, top, bottom) = (ML, W - MR, MT, H - MB);
        let _ = writeln!(
            s,
            "<svg class=\"plot\" viewBox=\"0 0 {W} {H}\" role=\"img\" aria-label=\"{}\" xmlns=\"http://www.w3.org/2000/svg\">",
            esc(self.label)
        );
        let _ = writeln!(
            s,
            "<rect class=\"area\" x=\"{left}\" y=\"{top}\" width=\"{}\" height=\"{}\"/>",
            right - left,
            bottom - top
        );
        for (i, b) in self.bands.iter().enumerate() {
            let (x0, x1) = (self.x(b.from), self.x(b.to.unwrap_or(self.x_max)));
            let open = if b.to.is_none() { " open" } else { "" };
            let until = b.to.map(secs).unwrap_or_else(|| "never removed".into());
            let _ = writeln!(
                s,
                "<rect class=\"fault{open}\" x=\"{x0:.1}\" y=\"{top}\" width=\"{:.1}\" height=\"{}\"><title>{} {} → {until}</title></rect>",
                (x1 - x0).max(1.0),
                bottom - top,
                esc(&b.label),
                secs(b.from),
            );
            // Above the area, so it never hides data: a bar over the window and its name,
            // overlapping windows on alternate rows.
            let row = (i % 2) as f64;
            let _ = writeln!(
                s,
                "<rect class=\"band-bar{open}\" x=\"{x0:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"4\"/><text class=\"band\" x=\"{x0:.1}\" y=\"{:.1}\">{}{}</text>",
                top - 6.0 - 17.0 * row,
                (x1 - x0).max(1.0),
                top - 10.0 - 17.0 * row,
                esc(&b.label),
                if b.to.is_none() {
                    " — never removed"
                } else {
                    ""
                }
            );
        }
        for v in self.y.ticks() {
            let y = self.y(v);
            let _ = writeln!(
                s,
                "<line class=\"grid\" x1=\"{left}\" y1=\"{y:.1}\" x2=\"{right}\" y2=\"{y:.1}\"/><text class=\"ytick\" x=\"{:.1}\" y=\"{:.1}\">{}</text>",
                left - 6.0,
                y + 4.0,
                esc(&(self.y_tick)(v))
            );
        }
        let step = time_step(self.x_max / 10.0);
        let ticks = (0..).map(|i| i as f64 * step);
        for v in ticks.take_while(|v| *v <= self.x_max * (1.0 + 1e-9)) {
            let x = self.x(v);
            let _ = writeln!(
                s,
                "<line class=\"grid\" x1=\"{x:.1}\" y1=\"{top}\" x2=\"{x:.1}\" y2=\"{bottom}\"/><text class=\"xtick\" x=\"{x:.1}\" y=\"{:.1}\">{}</text>",
                bottom + 16.0,
                esc(&(self.x_fmt)(v))
            );
        }
        let _ = writeln!(
            s,
            "<line class=\"axis\" x1=\"{left}\" y1=\"{bottom}\" x2=\"{right}\" y2=\"{bottom}\"/><line class=\"axis\" x1=\"{left}\" y1=\"{top}\" x2=\"{left}\" y2=\"{bottom}\"/>"
        );
        let _ = writeln!(
            s,
            "<text class=\"xlabel\" x=\"{:.1}\" y=\"{:.1}\">{}</text><text class=\"ylabel\" transform=\"translate(16 {:.1}) rotate(-90)\">{}{}</text>",
            (left + right) / 2.0,
            H - 6.0,
            esc(self.x_label),
            (top + bottom) / 2.0,
            esc(self.y_label),
            if matches!(self.y, Scale::Log { .. }) {
                " (log scale)"
            } else {
                ""
            }
        );
        let mut lines: Vec<&Line> = self.lines.iter().collect();
        lines.sort_by(|a, b| b.pen.width.total_cmp(&a.pen.width));
        for l in lines {
            self.line(&mut s, l);
        }
        self.legend(&mut s);
        s.push_str("</svg>\n");
        s
    }

    fn line(&self, s: &mut String, l: &Line) {
        let pen = &l.pen;
        let total: usize = l.segments.iter().map(Vec::len).sum();
        for seg in &l.segments {
            let pts: Vec<String> = seg
                .iter()
                .map(|&(x, y)| format!("{:.1},{:.1}", self.x(x), self.y(y)))
                .collect();
            if seg.len() > 1 {
                let _ = writeln!(
                    s,
                    "<polyline class=\"series\" {} points=\"{}\"/>",
                    pen.stroke(pen.width),
                    pts.join(" ")
                );
            }
            // Dots (with a tooltip) when the points are few enough to tell apart.
            if seg.len() == 1 || total <= 90 {
                for &(x, y) in seg {
                    let _ = writeln!(
                        s,
                        "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"{}\" fill=\"{}\" fill-opacity=\"{}\"><title>{} at {}: {}</title></circle>",
                        self.x(x),
                        self.y(y),
                        (pen.width / 2.0).max(2.5),
                        pen.colour,
                        pen.opacity,
                        esc(pen.name),
                        secs(x),
                        esc(&(self.y_fmt)(y))
                    );
                }
            }
        }
    }

    fn legend(&self, s: &mut String) {
        let mut x = ML;
        let y = 20.0;
        for l in &self.lines {
            let pen = &l.pen;
            let _ = writeln!(
                s,
                "<line x1=\"{x}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" {}/><text class=\"legend\" x=\"{}\" y=\"{}\">{}</text>",
                y - 4.0,
                x + 24.0,
                y - 4.0,
                pen.stroke(pen.width.min(6.0)),
                x + 30.0,
                y,
                esc(pen.name)
            );
            x += 30.0 + 8.0 * pen.name.chars().count() as f64 + 22.0;
        }
        if !self.bands.is_empty() {
            let _ = writeln!(
                s,
                "<rect class=\"fault\" x=\"{x}\" y=\"{}\" width=\"24\" height=\"12\"/><text class=\"legend\" x=\"{}\" y=\"{y}\">fault active</text>",
                y - 10.0,
                x + 30.0
            );
        }
    }
}

/// A number with as many decimals as its size needs.
fn number(v: f64) -> String {
    if !v.is_finite() {
        return "—".into();
    }
    let s = match v.abs() {
        a if a >= 100.0 => format!("{v:.0}"),
        a if a >= 10.0 => format!("{v:.1}"),
        a if a >= 1.0 => format!("{v:.2}"),
        _ => format!("{v:.3}"),
    };
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

/// Milliseconds as measured: whole ms up to 10 s, so 2001 and 2002 stay apart.
fn ms(v: f64) -> String {
    if v.is_finite() && v.abs() >= 10_000.0 {
        format!("{}\u{a0}s", number(v / 1000.0))
    } else {
        format!("{}\u{a0}ms", number(v))
    }
}

/// Milliseconds on an axis, where the ticks are round: `500 ms`, `1 s`.
fn ms_tick(v: f64) -> String {
    if v.is_finite() && v.abs() >= 1000.0 {
        format!("{} s", number(v / 1000.0))
    } else {
        format!("{} ms", number(v))
    }
}

fn percent(v: f64) -> String {
    format!("{}\u{a0}%", number(v))
}

fn secs(v: f64) -> String {
    if v.is_finite() {
        format!("{v:.2}\u{a0}s")
    } else {
        "—".into()
    }
}

/// A span: ms under a second (steps often take microseconds), seconds above.
fn took(v: f64) -> String {
    if v.is_finite() && v < 1.0 {
        ms(v * 1000.0)
    } else {
        secs(v)
    }
}

fn duration(v: f64) -> String {
    if v.is_finite() && v >= 120.0 {
        let s = v.round() as u64;
        format!("{}m {:02}s", s / 60, s % 60)
    } else {
        format!("{}\u{a0}s", number(v))
    }
}

fn time_tick(v: f64) -> String {
    let s = v.round() as u64;
    match s {
        s if s < 120 => format!("{s}s"),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{}m{:02}s", s / 60, s % 60),
    }
}

const CSS: &str = r#"
:root { --fg: #1d2128; --muted: #5c6470; --line: #d9dde3; --bg: #f6f7f9; }
* { box-sizing: border-box; }
body { margin: 0; background: var(--bg); color: var(--fg);
  font: 14px/1.45 system-ui, -apple-system, "Segoe UI", "DejaVu Sans", sans-serif; }
main { max-width: 1220px; margin: 0 auto; padding: 0 20px 40px; }
code { font: 12.5px/1.4 ui-monospace, "DejaVu Sans Mono", monospace; }
.banner { display: flex; gap: 24px; align-items: flex-start; padding: 18px 28px;
  color: #fff; border-bottom: 4px solid rgba(0,0,0,.25); }
.banner h1 { margin: 0; font-size: 24px; }
.banner .title { flex: 1; min-width: 0; }
.banner .desc { margin: 2px 0 0; opacity: .92; }
.banner .reason { margin: 8px 0 0; font-weight: 600; }
.verdict { font-size: 26px; font-weight: 800; letter-spacing: .04em; padding: 8px 16px;
  border: 2px solid currentColor; border-radius: 6px; white-space: nowrap; text-align: center; }
.verdict .exit { display: block; font-size: 13px; font-weight: 600; letter-spacing: 0; opacity: .85; }
.meta { margin: 0; display: grid; gap: 4px; font-size: 13px; white-space: nowrap; }
.meta div { display: flex; gap: 8px; }
.meta dt { opacity: .8; min-width: 64px; text-align: right; }
.meta dd { margin: 0; font-weight: 600; }
.passed { background: #1f7a3a; }
.failed { background: #d97b06; }
.aborted { background: #c2410c; }
.rollback-failed { background: #c1121f; border-bottom: 8px solid #6b0000; }
.rollback-failed .verdict { background: #fff; color: #c1121f; }
.could-not-run { background: #6b7280; }
.alarm { max-width: 1220px; margin: 12px auto 0; padding: 10px 20px; background: #ffe3e3;
  border: 2px solid #c1121f; color: #8a0000; font-weight: 700; }
.cards { display: flex; flex-wrap: wrap; gap: 12px; margin: 18px 0 4px; }
.card { flex: 1 1 120px; background: #fff; border: 1px solid var(--line); border-top: 4px solid #adb5bd;
  border-radius: 6px; padding: 8px 14px; }
.card .v { font-size: 22px; font-weight: 700; }
.card .k { color: var(--muted); font-size: 12px; text-transform: uppercase; letter-spacing: .05em; }
.card.good { border-top-color: #2b8a3e; } .card.bad { border-top-color: #c92a2a; }
.card.warn { border-top-color: #e67700; }
section { background: #fff; border: 1px solid var(--line); border-radius: 6px; padding: 6px 18px 14px;
  margin-top: 16px; overflow-x: auto; }
h2 { font-size: 17px; margin: 10px 0 8px; }
h3 { font-size: 14px; margin: 14px 0 2px; color: var(--muted); font-weight: 600; }
.note { color: var(--muted); font-style: italic; margin: 6px 0; }
table { border-collapse: collapse; width: 100%; font-size: 13px; }
th { text-align: left; font-weight: 600; color: var(--muted); border-bottom: 2px solid var(--line);
  padding: 5px 8px; white-space: nowrap; }
td { border-bottom: 1px solid #eceef1; padding: 5px 8px; vertical-align: top; overflow-wrap: break-word; }
td code { white-space: nowrap; }
.events td code { white-space: pre-wrap; }
tbody tr:nth-child(even) { background: #fafbfc; }
.badge { display: inline-block; padding: 1px 8px; border-radius: 10px; font-size: 12px;
  font-weight: 700; white-space: nowrap; }
.badge.good { background: #d3f9d8; color: #1b5e20; }
.badge.bad { background: #ffe3e3; color: #a51111; }
.badge.warn { background: #fff3bf; color: #8a5300; }
.badge.neutral { background: #eceef1; color: #495057; }
details summary { cursor: pointer; color: var(--muted); margin: 8px 0; }
.events summary { font-size: 17px; font-weight: 700; color: var(--fg); }
.events td:first-child { white-space: nowrap; color: var(--muted); }
svg.plot { width: 100%; height: auto; display: block; }
svg .area { fill: #fff; }
svg .grid { stroke: #e9ecef; stroke-width: 1; }
svg .axis { stroke: #868e96; stroke-width: 1; }
svg .fault { fill: #ffa94d; fill-opacity: .22; stroke: #e8590c; stroke-opacity: .55; stroke-dasharray: 4 3; }
svg .fault.open { fill: #ff6b6b; fill-opacity: .22; }
svg .band { font-size: 12px; fill: #b34700; font-weight: 600; }
svg .band-bar { fill: #e8590c; fill-opacity: .8; }
svg .band-bar.open { fill: #e03131; }
svg .series { fill: none; stroke-linejoin: round; stroke-linecap: round; }
svg text { font-family: system-ui, "DejaVu Sans", sans-serif; fill: #495057; }
svg .ytick { font-size: 12px; text-anchor: end; }
svg .xtick { font-size: 12px; text-anchor: middle; }
svg .xlabel, svg .ylabel { font-size: 12px; text-anchor: middle; fill: #5c6470; }
svg .legend { font-size: 13px; fill: #1d2128; }
"#;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{FaultRecord, GuardrailRecord, StepRecord, ThresholdRecord};

    fn empty() -> RunReport {
        RunReport {
            experiment: "empty".into(),
            description: None,
            started_at: "2026-01-01T00:00:00Z".into(),
            duration_s: 0.0,
            seed: 1,
            verdict: Verdict::CouldNotRun,
            exit_code: 4,
            reason: "nothing".into(),
            steady_state_before: vec![],
            steady_state_after: vec![],
            steps: vec![],
            faults: vec![],
            slos: vec![],
            thresholds: vec![],
            loads: vec![],
            guardrails: vec![],
            events: vec![],
        }
    }

    fn point(t: f64, reqs: u64, failed: u64, p99: f64) -> Point {
        Point {
            t,
            reqs,
            failed,
            classes: [0, reqs.saturating_sub(failed), 0, 0, failed, 0],
            p50: 2.0,
            p90: p99 / 2.0,
            p99,
            max: p99,
            ..Point::default()
        }
    }

    fn fault(name: &str, applied: Option<f64>, removed: Option<f64>) -> FaultRecord {
        FaultRecord {
            name: name.into(),
            kind: "http".into(),
            what: "503 <10 %>".into(),
            applied_s: applied,
            removed_s: removed,
            verified_present: applied.is_some(),
            verified_absent: removed.is_some(),
            detail: String::new(),
        }
    }

    fn full() -> RunReport {
        let slo = |outcome: &str, at_s| SloRecord {
            name: "p99<b>".into(),
            outcome: outcome.into(),
            value: Some(2400.0),
            detail: "2400 < 2500".into(),
            at_s,
            by: "final".into(),
        };
        RunReport {
            experiment: "x<script>alert(1)</script>".into(),
            description: Some("a \"quoted\" & <tagged> description".into()),
            duration_s: 40.0,
            verdict: Verdict::RollbackFailed,
            exit_code: 3,
            steps: vec![StepRecord {
                path: "method[0]".into(),
                step: "inject <f1>".into(),
                started_s: 1.0,
                took_s: 0.1,
                ok: true,
                detail: String::new(),
            }],
            faults: vec![
                fault("f1", Some(2.0), Some(30.0)),
                fault("f2", Some(10.0), None),
                fault("never", None, None),
            ],
            slos: vec![slo("violated", 12.0), slo("met", 35.0)],
            thresholds: vec![ThresholdRecord {
                metric: "http_req_duration".into(),
                expression: "p(95)<500".into(),
                ok: false,
                observed: "p(95)=2001".into(),
            }],
            loads: vec![LoadRecord {
                started_s: 3.0,
                scenario: "10 VUs for 30s".into(),
                requests: 300,
                failed_ratio: 0.1,
                p50_ms: 2.0,
                p95_ms: 2000.0,
                p99_ms: 2010.0,
                series: (1..=30)
                    .map(|i| match i {
                        15 => point(15.0, 0, 0, 0.0),
                        i => point(i as f64, 10, 1, 2000.0),
                    })
                    .collect(),
            }],
            guardrails: vec![GuardrailRecord {
                name: "g".into(),
                tripped: false,
                checks: 12,
                detail: "0.1 < 0.5".into(),
            }],
            events: vec![(0.5, "inject f1 <&>".into())],
            ..empty()
        }
    }

    /// Every opened element is closed in order (the page is written XHTML-style).
    fn assert_balanced(page: &str) {
        let (head, rest) = page.split_once("<style>").expect("style");
        let body = format!(
            "{head}<style>{}",
            rest.split_once("</style>").expect("style").1
        );
        let mut stack: Vec<&str> = Vec::new();
        for tag in body.split('<').skip(1) {
            let tag = &tag[..tag.find('>').expect("unclosed tag")];
            if tag.ends_with('/') || tag.starts_with('!') || tag == "style" {
                continue;
            }
            if let Some(name) = tag.strip_prefix('/') {
                assert_eq!(stack.pop(), Some(name), "mismatched </{name}>");
            } else {
                stack.push(tag.split_whitespace().next().expect("tag name"));
            }
        }
        assert!(stack.is_empty(), "unclosed: {stack:?}");
    }

    #[test]
    fn full_report_renders_plots_escaped_and_balanced() {
        let page = html(&full());
        assert_balanced(&page);
        assert_eq!(page.matches("<svg ").count(), 2, "two plots");
        assert!(page.contains("<polyline"));
        assert!(page.contains("x&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(!page.contains("<script"));
        assert!(page.contains("a &quot;quoted&quot; &amp; &lt;tagged&gt; description"));
        assert!(page.contains("inject &lt;f1&gt;"));
        // One band per applied fault in each plot, plus the legend swatch; the open one marked.
        assert_eq!(page.matches("<rect class=\"fault\"").count(), 2 + 2);
        assert_eq!(page.matches("<rect class=\"fault open\"").count(), 2);
        assert!(page.contains("never removed"));
        assert!(page.contains("ROLLBACK FAILED"));
        // The final verdict of the SLO is its last judgement; every judgement is listed too.
        assert!(page.contains("Every judgement (2)"));
        assert!(page.contains("<div class=\"v\">1/1</div><div class=\"k\">SLOs met</div>"));
        // The empty interval breaks each line into two.
        assert_eq!(page.matches("<polyline").count(), 5 * 2);
        assert!(page.contains("(log scale)"), "latency spans 2 ms to 2 s");
    }

    #[test]
    fn empty_report_renders_a_note_instead_of_plots() {
        let page = html(&empty());
        assert_balanced(&page);
        assert!(!page.contains("<svg"));
        assert!(page.contains("No load ran"));
        assert!(page.contains("COULD NOT RUN"));

        let mut no_points = full();
        no_points.loads[0].series.clear();
        no_points.faults.clear();
        let page = html(&no_points);
        assert_balanced(&page);
        assert!(!page.contains("<svg"));
        assert!(page.contains("recorded no intervals"));
    }

    #[test]
    fn scales_pick_round_ticks() {
        let fit = |v: &[f64], log| Scale::fit(v.iter().copied(), log, 100.0);
        assert_eq!(
            fit(&[0.0, 3.2], true),
            Scale::Linear {
                max: 4.0,
                step: 1.0
            }
        );
        // Headroom above a line that would touch the top, but not past 100 %.
        assert_eq!(
            fit(&[50.0], false),
            Scale::Linear {
                max: 60.0,
                step: 10.0
            }
        );
        assert_eq!(
            fit(&[100.0], false),
            Scale::Linear {
                max: 100.0,
                step: 20.0
            }
        );
        assert_eq!(
            fit(&[], true),
            Scale::Linear {
                max: 1.0,
                step: 0.2
            }
        );
        let log = fit(&[1.3, 2100.0], true);
        assert_eq!(
            log,
            Scale::Log {
                min: 0.5,
                max: 3000.0
            }
        );
        assert_eq!(log.ticks(), [0.5, 1.0, 10.0, 100.0, 1000.0, 3000.0]);
        assert_eq!(
            Scale::Linear {
                max: 60.0,
                step: 20.0
            }
            .ticks(),
            [0.0, 20.0, 40.0, 60.0]
        );
        assert_eq!(time_tick(90.0), "90s");
        assert_eq!(time_tick(150.0), "2m30s");
    }
}
