//! `shakedown slo check`: SLOs judged against a Prometheus, from flags or a file; exit 0 when all
//! are met, 1 when one is violated, 2 when one could not be judged (and none was violated).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};
use shakedown_model::duration::parse_duration;
use shakedown_model::slo::{PrometheusTarget, RawSlo, Slo, SloFile, slo};
use shakedown_model::source::Problems;
use shakedown_slo::{Outcome, Prometheus, check_all, exit_code};

/// Exit code when nothing could be judged or the arguments are wrong.
const EXIT_UNJUDGED: u8 = 2;

/// Arguments of `shakedown slo`.
#[derive(Args, Debug)]
pub(crate) struct SloArgs {
    #[command(subcommand)]
    command: SloCommand,
}

#[derive(Subcommand, Debug)]
enum SloCommand {
    /// Judge SLOs against a Prometheus: one from --query/--op/--threshold, or a --file of them.
    Check(CheckArgs),
}

#[derive(Args, Debug)]
struct CheckArgs {
    /// Prometheus base URL (overrides the file's `prometheus.url`).
    #[arg(long)]
    prometheus: Option<String>,
    /// PromQL returning one number.
    #[arg(long, requires_all = ["op", "threshold"])]
    query: Option<String>,
    /// `<`, `<=`, `>` or `>=`: how the value must compare to be met.
    #[arg(long)]
    op: Option<String>,
    /// The bound.
    #[arg(long, allow_negative_numbers = true)]
    threshold: Option<f64>,
    /// Name of the SLO given by flags.
    #[arg(long, default_value = "slo")]
    name: String,
    /// A file of SLOs (YAML: `prometheus:` and `slos:`).
    #[arg(long, short, conflicts_with = "query")]
    file: Option<PathBuf>,
    /// Per-attempt timeout.
    #[arg(long)]
    timeout: Option<String>,
    /// Attempts after the first, on connection errors, timeouts and 5xx.
    #[arg(long)]
    retries: Option<u32>,
    /// File holding a bearer token.
    #[arg(long)]
    bearer_token_file: Option<String>,
    /// PEM file of CA certificates to trust for an https Prometheus.
    #[arg(long)]
    ca_file: Option<String>,
    /// A load run's summary export (`shakedown load --summary-export`), for `sli: {source: load}`.
    #[arg(long)]
    load_summary: Option<PathBuf>,
    /// Basic auth user (with --password-file).
    #[arg(long, requires = "password_file")]
    username: Option<String>,
    /// File holding the basic auth password.
    #[arg(long, requires = "username")]
    password_file: Option<String>,
}

/// Runs `shakedown slo …`.
pub(crate) async fn main(args: SloArgs) -> ExitCode {
    let SloCommand::Check(a) = args.command;
    let (target, slos) = match plan(&a) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("shakedown slo check: {e}");
            return ExitCode::from(EXIT_UNJUDGED);
        }
    };
    let prom = match target.as_ref().map(Prometheus::new).transpose() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("shakedown slo check: {e}");
            return ExitCode::from(EXIT_UNJUDGED);
        }
    };
    let load = match a.load_summary.as_ref().map(|p| read_summary(p)).transpose() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("shakedown slo check: {e}");
            return ExitCode::from(EXIT_UNJUDGED);
        }
    };
    let judgements = check_all(prom.as_ref(), load.as_ref(), &slos).await;
    for (j, s) in judgements.iter().zip(&slos) {
        let (mark, word) = match j.outcome {
            Outcome::Met => ('✓', "met"),
            Outcome::Violated => ('✗', "VIOLATED"),
            Outcome::Unjudged => ('?', "COULD NOT JUDGE"),
        };
        println!(
            "{mark} {} {word}: {} (want {} {})",
            j.name,
            j.detail,
            s.op.as_str(),
            s.threshold
        );
    }
    ExitCode::from(exit_code(&judgements))
}

/// A load run rebuilt from its summary export (the histograms in its `shakedown` section).
fn read_summary(path: &std::path::Path) -> Result<shakedown_load::Report, String> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| format!("{name}: {e}"))?;
    let value: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| format!("{name}:{}:{}: {e}", e.line(), e.column()))?;
    shakedown_load::summary::merge(&[(name, value)])
}

fn plan(a: &CheckArgs) -> Result<(Option<PrometheusTarget>, Vec<Slo>), String> {
    let (file_target, slos) = match (&a.file, &a.query) {
        (Some(path), _) => {
            let text =
                std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
            let f = SloFile::load(&path.display().to_string(), &text).map_err(|e| e.to_string())?;
            (f.prometheus, f.slos)
        }
        (None, Some(q)) => {
            let raw = RawSlo {
                name: a.name.clone(),
                query: q.clone(),
                sli: None,
                op: a.op.clone().unwrap_or_default(),
                threshold: a.threshold.unwrap_or(f64::NAN),
                window: None,
            };
            let mut problems = Problems::default();
            let s = slo(&raw, "", &mut problems);
            let s = s.ok_or_else(|| {
                let lines: Vec<String> = problems
                    .into_vec()
                    .into_iter()
                    .map(|p| format!("--{}: {}", p.path.trim_start_matches('.'), p.message))
                    .collect();
                lines.join("; ")
            })?;
            (None, vec![s])
        }
        (None, None) => return Err("give --query, --op and --threshold, or --file".into()),
    };
    let needs_prometheus = slos.iter().any(|s| s.query().is_some());
    let mut target = match (file_target, &a.prometheus) {
        (_, Some(url)) => PrometheusTarget {
            url: url
                .parse()
                .ok()
                .filter(|u: &http::Uri| matches!(u.scheme_str(), Some("http" | "https")))
                .ok_or_else(|| format!("--prometheus `{url}` is not an http(s) URL"))?,
            timeout: Duration::from_secs(10),
            retries: 2,
            bearer_token_file: None,
            ca_file: None,
            basic_auth: None,
        },
        (Some(t), None) => t,
        (None, None) if needs_prometheus => {
            return Err("give --prometheus URL (or `prometheus.url` in the file)".into());
        }
        (None, None) => return Ok((None, slos)),
    };
    if let Some(t) = &a.timeout {
        target.timeout = parse_duration(t).map_err(|e| format!("--timeout: {e}"))?;
    }
    if let Some(r) = a.retries {
        target.retries = r;
    }
    if let Some(f) = &a.bearer_token_file {
        target.bearer_token_file = Some(f.clone());
    }
    if let Some(f) = &a.ca_file {
        target.ca_file = Some(f.clone());
    }
    if let (Some(u), Some(p)) = (&a.username, &a.password_file) {
        target.basic_auth = Some((u.clone(), p.clone()));
    }
    Ok((Some(target), slos))
}
