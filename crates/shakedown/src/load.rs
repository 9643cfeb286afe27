//! `shakedown load` and `shakedown load merge`: flags (or a load file) to a [`LoadSpec`], a run
//! with live progress, k6's summary and exit codes.

use std::collections::BTreeMap;
use std::io::{IsTerminal as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use shakedown_load::run::ProgressFn;
use shakedown_load::{Progress, Report, RunOptions, StopReason, summary};
use shakedown_model::LoadSpec;
use shakedown_model::load::{
    RawCheck, RawHttp, RawLoad, RawRequest, RawScenario, RawStage, RawStatuses, RawThreshold,
    threshold_from_arg,
};

/// k6's exit code for crossed thresholds (also after `abortOnFail`).
pub(crate) const EXIT_THRESHOLDS: u8 = 99;
/// k6's exit code for an invalid configuration.
pub(crate) const EXIT_INVALID_CONFIG: u8 = 104;
/// k6's exit code for a run stopped by a signal.
pub(crate) const EXIT_INTERRUPTED: u8 = 105;

/// Arguments of `shakedown load`.
#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub(crate) struct LoadArgs {
    #[command(subcommand)]
    command: Option<LoadCommand>,
    /// Target URL (one GET request template); or use --config.
    url: Option<String>,
    /// A load file (YAML or JSON): target, requests, scenario, checks, thresholds.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Open model: arrivals per --time-unit (constant-arrival-rate; with --stages, the start).
    #[arg(long)]
    rate: Option<f64>,
    /// Unit of --rate and of arrival-rate stage targets.
    #[arg(long)]
    time_unit: Option<String>,
    /// Closed model: virtual users (constant-vus; with --stages, the start).
    #[arg(long)]
    vus: Option<u32>,
    /// Ramp stages `DURATION:TARGET,…` (e.g. `30s:100,1m:100,10s:0`): arrival rates, or VUs
    /// with --vus.
    #[arg(long)]
    stages: Option<String>,
    /// Length of a constant scenario.
    #[arg(long, short)]
    duration: Option<String>,
    /// Closed model: pause after each response (k6's `sleep`).
    #[arg(long)]
    think: Option<String>,
    /// Open model: connections sending the planned requests.
    #[arg(long, short = 'C')]
    connections: Option<u32>,
    /// Open model: planned-but-unfinished requests beyond which new ones are dropped.
    #[arg(long)]
    max_in_flight: Option<u32>,
    /// Time left to requests in flight when the schedule ends.
    #[arg(long)]
    graceful_stop: Option<String>,
    /// HTTP method.
    #[arg(long, short = 'X')]
    method: Option<String>,
    /// Request header `name: value` (repeatable).
    #[arg(long = "header", short = 'H')]
    headers: Vec<String>,
    /// Request body.
    #[arg(long)]
    body: Option<String>,
    /// Use HTTP/2 (prior knowledge on http://, ALPN on https://).
    #[arg(long, conflicts_with = "http1")]
    http2: bool,
    /// Use HTTP/1.1 only.
    #[arg(long)]
    http1: bool,
    /// Per-request timeout.
    #[arg(long)]
    timeout: Option<String>,
    /// Accept any TLS certificate (self-signed test servers).
    #[arg(long)]
    insecure: bool,
    /// PEM file of CA certificates to trust in addition to Mozilla's roots.
    #[arg(long)]
    ca_file: Option<String>,
    /// Threshold `metric=expression` (repeatable), e.g. `http_req_duration=p(95)<500`; a
    /// trailing `!` aborts the run when crossed.
    #[arg(long = "threshold", short = 't')]
    thresholds: Vec<String>,
    /// Check that the status is this (repeatable: any of them); the `checks` metric.
    #[arg(long)]
    check_status: Vec<u16>,
    /// Seed of the weighted choice of request templates.
    #[arg(long)]
    seed: Option<u64>,
    /// Write the summary as JSON (k6's --summary-export shape, plus mergeable histograms).
    #[arg(long)]
    summary_export: Option<PathBuf>,
    /// Serve the run's metrics in Prometheus's format at this address (e.g. 127.0.0.1:9464).
    #[arg(long)]
    metrics_listen: Option<std::net::SocketAddr>,
    /// No live progress.
    #[arg(long, short)]
    quiet: bool,
}

#[derive(Subcommand, Debug)]
enum LoadCommand {
    /// Merge summary exports of runs made side by side (several machines): histograms add, so
    /// percentiles of the merge are exact; thresholds are judged again.
    Merge {
        /// Summary exports to merge.
        #[arg(required = true, num_args = 1..)]
        files: Vec<PathBuf>,
        /// Write the merged summary as JSON.
        #[arg(long)]
        summary_export: Option<PathBuf>,
    },
}

/// Runs `shakedown load …`.
pub(crate) async fn main(args: LoadArgs) -> anyhow::Result<ExitCode> {
    if let Some(LoadCommand::Merge {
        files,
        summary_export,
    }) = args.command
    {
        return merge(&files, summary_export.as_deref());
    }
    let spec = match spec(&args) {
        Ok(s) => s,
        Err(message) => {
            eprintln!("shakedown load: {message}");
            return Ok(ExitCode::from(EXIT_INVALID_CONFIG));
        }
    };
    let (interrupt_tx, interrupt_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        let mut signals = 0;
        loop {
            tokio::select! {
                r = tokio::signal::ctrl_c() => if r.is_err() { return },
                _ = terminate() => {}
            }
            signals += 1;
            if signals == 1 {
                eprintln!("\nshakedown load: stopping (the summary follows; again to quit now)");
                let _ = interrupt_tx.send(true);
            } else {
                std::process::exit(i32::from(EXIT_INTERRUPTED));
            }
        }
    });
    let progress: Option<ProgressFn> = if args.quiet {
        None
    } else {
        Some(progress_printer())
    };
    let metrics = match args.metrics_listen {
        None => None,
        Some(addr) => {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("--metrics-listen {addr}"))?;
            if !addr.ip().is_loopback() {
                tracing::warn!("metrics served on {addr}, off loopback");
            }
            eprintln!("metrics: http://{}/metrics", listener.local_addr()?);
            Some(listener)
        }
    };
    let report = shakedown_load::run(
        &spec,
        RunOptions {
            progress,
            interrupt: Some(interrupt_rx),
            metrics,
            publish: None,
        },
    )
    .await
    .context("load")?;
    finish(&report, args.summary_export.as_deref())
}

#[cfg(unix)]
async fn terminate() {
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut s) => {
            s.recv().await;
        }
        Err(_) => std::future::pending().await,
    }
}

#[cfg(not(unix))]
async fn terminate() {
    std::future::pending::<()>().await
}

fn finish(report: &Report, export: Option<&Path>) -> anyhow::Result<ExitCode> {
    print!("{}", summary::text(report));
    let _ = std::io::stdout().flush();
    if let Some(path) = export {
        let json = serde_json::to_string_pretty(&summary::export(report))?;
        std::fs::write(path, json).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(ExitCode::from(exit_code(report)))
}

/// k6's exit codes: 105 when interrupted, 99 when a threshold was crossed, else 0.
pub(crate) fn exit_code(report: &Report) -> u8 {
    match (&report.stop, report.thresholds_ok()) {
        (StopReason::Interrupted, _) => EXIT_INTERRUPTED,
        (StopReason::Threshold(..), _) | (_, false) => EXIT_THRESHOLDS,
        (StopReason::Completed, true) => 0,
    }
}

fn merge(files: &[PathBuf], export: Option<&Path>) -> anyhow::Result<ExitCode> {
    let mut exports = Vec::new();
    for f in files {
        let text =
            std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?;
        let value: serde_json::Value = match serde_json::from_str(&text) {
            Ok(v) => v,
            Err(e) => {
                eprintln!(
                    "shakedown load merge: {}:{}:{}: {e}",
                    f.display(),
                    e.line(),
                    e.column()
                );
                return Ok(ExitCode::from(EXIT_INVALID_CONFIG));
            }
        };
        exports.push((f.display().to_string(), value));
    }
    match summary::merge(&exports) {
        Ok(report) => finish(&report, export),
        Err(e) => {
            eprintln!("shakedown load merge: {e}");
            Ok(ExitCode::from(EXIT_INVALID_CONFIG))
        }
    }
}

/// The spec from a load file, or from the flags; extra `--threshold`s add to a file's.
fn spec(a: &LoadArgs) -> Result<LoadSpec, String> {
    let mut extra = Vec::new();
    for t in &a.thresholds {
        extra.push(threshold_from_arg(t).map_err(|e| format!("--threshold {e}"))?);
    }
    let mut spec = if let Some(path) = &a.config {
        let scenario_flags = a.url.is_some()
            || a.rate.is_some()
            || a.vus.is_some()
            || a.stages.is_some()
            || a.duration.is_some();
        if scenario_flags {
            return Err("give the target and scenario in --config or as flags, not both".into());
        }
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
        LoadSpec::load(&path.display().to_string(), &text).map_err(|e| e.to_string())?
    } else {
        let raw = raw_from_flags(a)?;
        LoadSpec::validate(&raw).map_err(|problems| {
            let lines: Vec<String> = problems
                .into_vec()
                .into_iter()
                .map(|p| format!("  {}: {}", flag_of(&p.path), p.message))
                .collect();
            format!("invalid arguments:\n{}", lines.join("\n"))
        })?
    };
    spec.thresholds.extend(extra);
    Ok(spec)
}

/// Names the flag behind a spec path, for error messages.
fn flag_of(path: &str) -> String {
    let field = path.rsplit('.').next().unwrap_or(path);
    let flag = match field {
        "target" => "URL",
        "think_time" => "--think",
        "stages" | "duration" | "rate" | "vus" | "connections" | "max_in_flight" | "time_unit"
        | "graceful_stop" | "timeout" | "method" | "body" => {
            return format!("--{}", field.replace('_', "-"));
        }
        _ => return path.to_string(),
    };
    flag.to_string()
}

fn raw_from_flags(a: &LoadArgs) -> Result<RawLoad, String> {
    let url = a
        .url
        .clone()
        .ok_or("give a target URL, or --config FILE (see --help)")?;
    let mut headers = BTreeMap::new();
    for h in &a.headers {
        let (k, v) = h
            .split_once(':')
            .ok_or_else(|| format!("--header `{h}`: expected `name: value`"))?;
        headers.insert(k.trim().to_string(), v.trim().to_string());
    }
    let stages = match &a.stages {
        None => Vec::new(),
        Some(s) => s
            .split(',')
            .filter(|p| !p.trim().is_empty())
            .map(|p| {
                let (d, t) = p
                    .split_once(':')
                    .ok_or_else(|| format!("--stages `{p}`: expected DURATION:TARGET"))?;
                let target = t
                    .trim()
                    .parse()
                    .map_err(|_| format!("--stages `{p}`: `{t}` is not a number"))?;
                Ok(RawStage {
                    duration: d.trim().to_string(),
                    target,
                })
            })
            .collect::<Result<_, String>>()?,
    };
    let ramping = !stages.is_empty();
    let closed = a.vus.is_some() || a.think.is_some() || a.rate.is_none() && !ramping;
    let executor = match (closed, ramping) {
        (false, false) => "constant-arrival-rate",
        (false, true) => "ramping-arrival-rate",
        (true, false) => "constant-vus",
        (true, true) => "ramping-vus",
    };
    let scenario = RawScenario {
        executor: executor.into(),
        rate: a.rate.filter(|_| !ramping),
        start_rate: a.rate.filter(|_| ramping),
        time_unit: a.time_unit.clone(),
        duration: if ramping {
            a.duration.clone()
        } else {
            Some(a.duration.clone().unwrap_or_else(|| "10s".into()))
        },
        stages,
        vus: if ramping {
            None
        } else {
            a.vus.or(Some(1)).filter(|_| closed)
        },
        start_vus: a.vus.filter(|_| ramping && closed),
        think_time: a.think.clone(),
        connections: a.connections,
        max_in_flight: a.max_in_flight,
        graceful_stop: a.graceful_stop.clone(),
    };
    let checks = if a.check_status.is_empty() {
        Vec::new()
    } else {
        let name = if a.check_status.len() == 1 {
            format!("status is {}", a.check_status[0])
        } else {
            let list: Vec<String> = a.check_status.iter().map(u16::to_string).collect();
            format!("status is one of {}", list.join(", "))
        };
        vec![RawCheck {
            name,
            status: Some(RawStatuses::Many(a.check_status.clone())),
            body_contains: None,
        }]
    };
    let has_request_fields = a.method.is_some() || a.body.is_some() || !headers.is_empty();
    Ok(RawLoad {
        target: Some(url.clone()),
        requests: if has_request_fields {
            vec![RawRequest {
                method: a.method.clone(),
                url: Some(url),
                headers,
                body: a.body.clone(),
                ..RawRequest::default()
            }]
        } else {
            Vec::new()
        },
        scenario,
        http: RawHttp {
            version: if a.http2 {
                Some("http2".into())
            } else if a.http1 {
                Some("http1".into())
            } else {
                None
            },
            timeout: a.timeout.clone(),
            insecure: a.insecure,
            ca_file: a.ca_file.clone(),
            expected_statuses: None,
        },
        checks,
        thresholds: BTreeMap::<String, Vec<RawThreshold>>::new(),
        seed: a.seed,
    })
}

/// Live progress on stderr: one line redrawn each second on a terminal, a plain line every
/// five seconds otherwise (CI logs).
fn progress_printer() -> ProgressFn {
    let tty = std::io::stderr().is_terminal();
    let mut last_plain = Duration::ZERO;
    Box::new(move |p: &Progress| {
        let errors = if p.reqs == 0 {
            0.0
        } else {
            100.0 * p.failed as f64 / p.reqs as f64
        };
        let line = format!(
            "{}{:>6.1}s/{:.0}s  {:>9.1} req/s  in flight {:>5}  reqs {:>9}  failed {:.2}%  dropped {}  p99 {}",
            if p.stopping { "stopping " } else { "" },
            p.elapsed.as_secs_f64(),
            p.planned.as_secs_f64(),
            p.rate,
            p.in_flight,
            p.reqs,
            errors,
            p.dropped,
            summary::ms(p.p99_ms),
        );
        let mut err = std::io::stderr().lock();
        if tty {
            let _ = write!(err, "\r\x1b[2K{line}");
        } else if p.elapsed >= last_plain + Duration::from_secs(5) {
            last_plain = p.elapsed;
            let _ = writeln!(err, "{line}");
        }
        let _ = err.flush();
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct T {
        #[command(flatten)]
        load: LoadArgs,
    }

    fn spec_of(args: &[&str]) -> Result<LoadSpec, String> {
        let mut all = vec!["t"];
        all.extend_from_slice(args);
        spec(&T::parse_from(all).load)
    }

    #[test]
    fn flags_pick_the_executor() {
        use shakedown_model::Scenario;
        let s = spec_of(&[
            "http://127.0.0.1:0/",
            "--rate",
            "500",
            "-d",
            "10s",
            "-C",
            "10",
        ])
        .unwrap();
        assert!(matches!(
            s.scenario,
            Scenario::Open {
                executor: "constant-arrival-rate",
                connections: 10,
                ..
            }
        ));
        let s = spec_of(&[
            "http://127.0.0.1:0/",
            "--vus",
            "10",
            "--think",
            "1s",
            "-d",
            "30s",
        ])
        .unwrap();
        assert!(matches!(
            s.scenario,
            Scenario::Closed {
                executor: "constant-vus",
                ..
            }
        ));
        let s = spec_of(&["http://127.0.0.1:0/", "--stages", "5s:100,5s:0"]).unwrap();
        assert!(matches!(
            s.scenario,
            Scenario::Open {
                executor: "ramping-arrival-rate",
                ..
            }
        ));
        let s = spec_of(&["http://127.0.0.1:0/", "--vus", "2", "--stages", "5s:10"]).unwrap();
        assert!(matches!(
            s.scenario,
            Scenario::Closed {
                executor: "ramping-vus",
                ..
            }
        ));
        let s = spec_of(&["http://127.0.0.1:0/", "-t", "http_req_duration=p(95)<500"]).unwrap();
        assert_eq!(s.thresholds.len(), 1);
    }

    #[test]
    fn bad_flags_name_the_flag() {
        let e = spec_of(&["http://127.0.0.1:0/", "--rate=-5"]).unwrap_err();
        assert!(e.contains("--rate: must be a number > 0"), "{e}");
        let e = spec_of(&["http://127.0.0.1:0/", "--vus", "1", "-d", "soon"]).unwrap_err();
        assert!(e.contains("--duration:"), "{e}");
        let e = spec_of(&["http://127.0.0.1:0/", "-t", "http_req_duration=p(200)<5"]).unwrap_err();
        assert!(e.contains("outside 0..100"), "{e}");
        assert!(
            spec_of(&["--rate", "5"])
                .unwrap_err()
                .contains("target URL")
        );
    }
}
