//! `shakedown run` and `shakedown recover`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use shakedown_engine::report::Verdict;

/// `shakedown run`.
#[derive(clap::Args, Debug)]
pub(crate) struct RunArgs {
    /// The experiment file (YAML, `kind: Experiment`).
    pub(crate) file: PathBuf,
    /// Validate and print the plan; start nothing.
    #[arg(long)]
    pub(crate) dry_run: bool,
    /// Where the journal lives (a killed run is recovered from here).
    #[arg(long, default_value = ".shakedown")]
    pub(crate) state_dir: PathBuf,
    /// Where report.json, junit.xml and service logs go (default: under the state dir).
    #[arg(long)]
    pub(crate) report_dir: Option<PathBuf>,
    /// Override a variable of `spec.vars` (`--set resilience=off`); repeatable.
    #[arg(long = "set", value_name = "NAME=VALUE", value_parser = parse_var)]
    pub(crate) vars: Vec<(String, String)>,
}

fn parse_var(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.trim().to_owned(), v.to_owned()))
        .filter(|(k, _)| !k.is_empty())
        .ok_or_else(|| format!("`{s}`: expected NAME=VALUE"))
}

/// `shakedown recover`.
#[derive(clap::Args, Debug)]
pub(crate) struct RecoverArgs {
    /// Where the journal of the killed run is.
    #[arg(long, default_value = ".shakedown")]
    pub(crate) state_dir: PathBuf,
}

/// Runs an experiment; the exit code is the verdict's.
pub(crate) async fn run(args: RunArgs) -> ExitCode {
    let origin = args.file.display().to_string();
    let text = match std::fs::read_to_string(&args.file) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("shakedown: cannot read {origin}: {e}");
            return ExitCode::from(Verdict::CouldNotRun.exit_code());
        }
    };
    if args.dry_run {
        let parsed = shakedown_model::Document::parse(&origin, &text).and_then(|doc| {
            let declared = shakedown_model::experiment::Declared::of(&doc);
            let vars =
                declared
                    .vars_with(&args.vars)
                    .map_err(|e| shakedown_model::ConfigError {
                        diagnostics: vec![doc.diagnostic("spec.vars", e)],
                    })?;
            let mut a = declared.placeholders();
            a.vars = vars;
            shakedown_model::experiment::Experiment::load_rendered(&doc, &a)
        });
        return match parsed {
            Ok(exp) => {
                print!("{}", shakedown_engine::plan(&exp));
                println!(
                    "(dry run: nothing was started; addresses shown are placeholders for ports chosen at start)"
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::from(Verdict::CouldNotRun.exit_code())
            }
        };
    }
    // A sweep runs the experiment once per intensity.
    let sweep = shakedown_model::experiment::Experiment::load(&origin, &text)
        .ok()
        .and_then(|(e, _)| e.sweep);
    let (tx, rx) = tokio::sync::watch::channel(false);
    let signals = tokio::spawn(async move {
        crate::shutdown_signal().await;
        eprintln!("shakedown: stopping — rolling back every fault first");
        let _ = tx.send(true);
        // A second signal while rolling back is ignored: rollback must finish.
        loop {
            crate::shutdown_signal().await;
            eprintln!(
                "shakedown: still rolling back; the journal makes `shakedown recover` possible if you kill -9"
            );
        }
    });
    let options = shakedown_engine::Options {
        state_dir: args.state_dir,
        report_dir: args.report_dir,
        interrupt: Some(rx),
        print: Arc::new(|line| println!("{line}")),
        vars: args.vars,
    };
    if let Some(sweep) = sweep {
        let done = shakedown_engine::sweep::run(&origin, &text, &sweep, options).await;
        signals.abort();
        return ExitCode::from(done.exit_code);
    }
    let finished = shakedown_engine::run(&origin, &text, options).await;
    signals.abort();
    if finished.report.is_none() {
        eprintln!("{}", finished.message);
    }
    ExitCode::from(finished.verdict.exit_code())
}

/// Undoes what a killed run left.
pub(crate) async fn recover(args: RecoverArgs) -> ExitCode {
    let r = shakedown_engine::recover::recover(&args.state_dir).await;
    for line in &r.lines {
        println!("{line}");
    }
    for f in &r.failures {
        eprintln!("NOT RECOVERED: {f}");
    }
    if r.failures.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(Verdict::RollbackFailed.exit_code())
    }
}
