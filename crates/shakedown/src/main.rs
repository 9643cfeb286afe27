//! The `shakedown` command: parses arguments and calls into the libraries.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use shakedown_model::ProxyConfig;
use shakedown_proxy::demo::{self, DemoOptions};
use shakedown_proxy::{Proxy, ProxyOptions};

mod experiment;
mod load;
mod slo;

/// Exit code for an invalid config or a run that could not start.
const EXIT_INVALID: u8 = 4;

#[derive(Parser, Debug)]
#[command(
    name = "shakedown",
    version,
    about = "Resilience testing: inject faults, drive load, judge SLOs"
)]
struct Cli {
    /// Log filter (e.g. `info`, `shakedown_proxy=debug`); also RUST_LOG.
    #[arg(long, global = true, default_value = "info", env = "SHAKEDOWN_LOG")]
    log: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run an experiment: services, faults, load, SLOs; exit 0 passed, 1 failed, 2 aborted,
    /// 3 rollback failed, 4 invalid or could not run.
    Run(experiment::RunArgs),
    /// Undo what a killed `shakedown run` left behind (from its journal).
    Recover(experiment::RecoverArgs),
    /// Run the fault-injecting HTTP proxy from a config file.
    Proxy {
        /// The proxy config (YAML).
        #[arg(long, short)]
        config: PathBuf,
        /// Seed for fault decisions (overrides the file's `seed`).
        #[arg(long)]
        seed: Option<u64>,
        /// Admin address (overrides the file's `admin.address`).
        #[arg(long)]
        admin: Option<SocketAddr>,
        /// Reload the config when the file changes (it also reloads on SIGHUP).
        #[arg(long)]
        watch: bool,
    },
    /// Check a proxy config, a load file or an SLO file: every problem with file:line:column.
    Validate {
        /// The config file.
        file: PathBuf,
    },
    /// Run seed 000's scenario end to end on loopback: upstream, proxy, fault, load, metrics;
    /// or, with a subcommand, one of the demo experiment's services.
    Demo(DemoArgs),
    /// Drive load at a target (open or closed model) and judge k6 thresholds; exit 99 when one
    /// is crossed. `shakedown load merge` merges summary exports of several machines.
    Load(Box<load::LoadArgs>),
    /// Judge SLOs (PromQL against a Prometheus): exit 0 met, 1 violated, 2 could not judge.
    Slo(Box<slo::SloArgs>),
    /// A drop-in Toxiproxy server: its REST API and TCP proxies with its toxics (plus toxic
    /// deadlines, and toxics honoured in the --config file).
    Toxiproxy {
        /// Address of the API.
        #[arg(long, default_value = "127.0.0.1")]
        host: std::net::IpAddr,
        /// Port of the API (Toxiproxy's clients expect 8474).
        #[arg(long, default_value_t = 8474)]
        port: u16,
        /// Proxies to create at start: a JSON array as `POST /populate` takes it; their
        /// `toxics` are applied (Toxiproxy ignores them).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Seed for toxicity and jitter draws.
        #[arg(long)]
        seed: Option<u64>,
    },
    /// Serve a stub upstream (HTTP/1.1 + h2c) for tests and benchmarks.
    Stub {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
    },
}

#[derive(clap::Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
struct DemoArgs {
    #[command(subcommand)]
    service: Option<DemoService>,
    /// Requests per phase.
    #[arg(long, default_value_t = 200)]
    requests: usize,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 50)]
    concurrency: usize,
    /// Seed for fault decisions.
    #[arg(long, default_value_t = 42)]
    seed: u64,
}

#[derive(Subcommand, Debug)]
enum DemoService {
    /// The recommendation service (`GET /recommendations?q=…`).
    Recommendation {
        /// Address to listen on.
        #[arg(long)]
        listen: SocketAddr,
    },
    /// The search service (`GET /search?q=…`), which calls the recommendation service.
    Search {
        /// Address to listen on.
        #[arg(long)]
        listen: SocketAddr,
        /// Base URL of the recommendation service.
        #[arg(long)]
        recommendation: String,
        /// `on`: guard the recommendation call with a timeout and a fallback; `off`: wait for
        /// it and fail when it fails.
        #[arg(long, default_value = "off", value_parser = ["on", "off"])]
        resilience: String,
        /// The timeout of a resilient call.
        #[arg(long, default_value = "300ms", value_parser = humantime::parse_duration)]
        timeout: Duration,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&cli.log));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("shakedown: cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_INVALID);
        }
    };
    match runtime.block_on(run(cli.command)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("shakedown: {e:#}");
            ExitCode::from(EXIT_INVALID)
        }
    }
}

async fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Proxy {
            config,
            seed,
            admin,
            watch,
        } => proxy(config, seed, admin, watch).await,
        Command::Validate { file } => Ok(validate(&file)),
        Command::Run(args) => Ok(experiment::run(args).await),
        Command::Recover(args) => Ok(experiment::recover(args).await),
        Command::Load(args) => load::main(*args).await,
        Command::Slo(args) => Ok(slo::main(*args).await),
        Command::Demo(DemoArgs {
            service: Some(service),
            ..
        }) => {
            let served = match service {
                DemoService::Recommendation { listen } => {
                    shakedown_engine::demo::recommendation(listen).await
                }
                DemoService::Search {
                    listen,
                    recommendation,
                    resilience,
                    timeout,
                } => {
                    shakedown_engine::demo::search(
                        listen,
                        shakedown_engine::demo::SearchOptions {
                            recommendation,
                            resilient: resilience == "on",
                            timeout,
                        },
                    )
                    .await
                }
            };
            served?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Demo(DemoArgs {
            service: None,
            requests,
            concurrency,
            seed,
        }) => {
            let report = demo::run(
                DemoOptions {
                    requests,
                    concurrency,
                    seed,
                },
                |line| println!("{line}"),
            )
            .await?;
            let ok = report.faulted.status_503 > 0
                && report.after.status_503 == 0
                && report.baseline.status_503 == 0;
            println!(
                "\n{}",
                if ok {
                    "demo finished: the fault was applied, observed, measured and removed"
                } else {
                    "demo finished with unexpected results"
                }
            );
            Ok(if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Toxiproxy {
            host,
            port,
            config,
            seed,
        } => toxiproxy(SocketAddr::new(host, port), config, seed).await,
        Command::Stub { listen } => {
            let stub = shakedown_testkit::Stub::bind(listen).await?;
            eprintln!("stub upstream on http://{}", stub.addr());
            shutdown_signal().await;
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn validate(file: &Path) -> ExitCode {
    // A load file is told apart by its `scenario:` key; everything else is a proxy config.
    let text = std::fs::read_to_string(file).unwrap_or_default();
    if shakedown_model::experiment::is_experiment(&text) {
        return match shakedown_model::experiment::Experiment::load(
            &file.display().to_string(),
            &text,
        ) {
            Ok((e, _)) => {
                println!(
                    "{}: OK (experiment {}: {} services, {} faults, {} steps, {} SLOs)",
                    file.display(),
                    e.name,
                    e.services.len(),
                    e.faults.len(),
                    e.method.len(),
                    e.slos.len()
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::from(EXIT_INVALID)
            }
        };
    }
    let is_load = text
        .lines()
        .any(|l| l.starts_with("scenario:") || l.starts_with("\"scenario\""));
    if text.lines().any(|l| l.starts_with("slos:")) {
        return match shakedown_model::slo::SloFile::load(&file.display().to_string(), &text) {
            Ok(f) => {
                println!("{}: OK (slo: {} SLOs)", file.display(), f.slos.len());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::from(EXIT_INVALID)
            }
        };
    }
    if is_load {
        return match shakedown_model::LoadSpec::load(&file.display().to_string(), &text) {
            Ok(spec) => {
                println!(
                    "{}: OK (load: {} requests, {} thresholds, {})",
                    file.display(),
                    spec.requests.len(),
                    spec.thresholds.len(),
                    shakedown_load::run::describe(&spec.scenario)
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::from(EXIT_INVALID)
            }
        };
    }
    match load(file) {
        Ok(c) => {
            let tcp = if c.tcp_proxies.is_empty() {
                String::new()
            } else {
                format!(
                    ", {} tcp proxies with {} toxics",
                    c.tcp_proxies.len(),
                    c.tcp_proxies.iter().map(|p| p.toxics.len()).sum::<usize>()
                )
            };
            println!(
                "{}: OK ({} listeners, {} clusters, {} faults{tcp})",
                file.display(),
                c.listeners.len(),
                c.clusters.len(),
                c.faults.len(),
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e:#}");
            ExitCode::from(EXIT_INVALID)
        }
    }
}

fn load(file: &Path) -> anyhow::Result<ProxyConfig> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    Ok(ProxyConfig::load(&file.display().to_string(), &text)?)
}

async fn proxy(
    path: PathBuf,
    seed: Option<u64>,
    admin: Option<SocketAddr>,
    watch: bool,
) -> anyhow::Result<ExitCode> {
    let first_read = fingerprint(&path);
    let config = match load(&path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e:#}");
            return Ok(ExitCode::from(EXIT_INVALID));
        }
    };
    let proxy = Proxy::start(
        config,
        ProxyOptions {
            config_path: Some(path.clone()),
            seed,
            admin,
            ..Default::default()
        },
    )
    .await?;
    eprintln!(
        "shakedown proxy: admin on http://{} (seed {})",
        proxy.admin_addr(),
        proxy.seed()
    );
    let reloads = tokio::spawn(reload_on_sighup(proxy.clone()));
    let watcher = watch.then(|| tokio::spawn(watch_file(proxy.clone(), path, first_read)));
    shutdown_signal().await;
    eprintln!("shakedown proxy: draining in-flight requests");
    reloads.abort();
    if let Some(w) = watcher {
        w.abort();
    }
    proxy.shutdown().await;
    Ok(ExitCode::SUCCESS)
}

async fn toxiproxy(
    api: SocketAddr,
    config: Option<PathBuf>,
    seed: Option<u64>,
) -> anyhow::Result<ExitCode> {
    let proxies = match &config {
        None => Vec::new(),
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            match toxiproxy_config(&path.display().to_string(), &text) {
                Ok(p) => p,
                Err(e) => {
                    eprintln!("{e}");
                    return Ok(ExitCode::from(EXIT_INVALID));
                }
            }
        }
    };
    let raw = shakedown_model::proxy::RawProxyConfig {
        admin: Some(shakedown_model::proxy::RawAdmin {
            address: "127.0.0.1:0".into(),
        }),
        tcp_proxies: proxies,
        ..Default::default()
    };
    let config = ProxyConfig::validate(raw)
        .map_err(|p| anyhow::anyhow!("invalid proxies: {:?}", p.into_vec()))?;
    let proxy = Proxy::start(
        config,
        ProxyOptions {
            seed,
            toxiproxy: Some(api),
            ..Default::default()
        },
    )
    .await?;
    if let Some(addr) = proxy.toxiproxy_addr() {
        eprintln!(
            "shakedown toxiproxy: API on http://{addr} (seed {}), {} proxies",
            proxy.seed(),
            proxy.tcp().names().len()
        );
    }
    shutdown_signal().await;
    proxy.shutdown().await;
    Ok(ExitCode::SUCCESS)
}

/// A `--config` file of `shakedown toxiproxy`: Toxiproxy's JSON array of proxies.
fn toxiproxy_config(
    origin: &str,
    text: &str,
) -> Result<Vec<shakedown_model::toxic::RawTcpProxy>, shakedown_model::ConfigError> {
    let doc = shakedown_model::Document::parse(origin, text)?;
    let raw: Vec<shakedown_model::toxic::RawTcpProxy> = doc.deserialize()?;
    let mut problems = shakedown_model::Problems::default();
    for (i, p) in raw.iter().enumerate() {
        let _ = shakedown_model::TcpProxySpec::from_raw(p, &format!("[{i}]"), &mut problems);
    }
    if problems.is_empty() {
        Ok(raw)
    } else {
        Err(doc.errors(problems.into_vec()))
    }
}

async fn reload_on_sighup(proxy: Proxy) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut hup) = signal(SignalKind::hangup()) else {
            return;
        };
        while hup.recv().await.is_some() {
            let _ = proxy.reload().await;
        }
    }
    #[cfg(not(unix))]
    std::future::pending::<()>().await;
}

/// Polls the file once a second; reloads when its length, mtime or content changes.
/// What `--watch` compares: size, modification time and a hash of the content.
type Fingerprint = Option<(u64, SystemTime, u64)>;

fn fingerprint(p: &Path) -> Fingerprint {
    let meta = std::fs::metadata(p).ok()?;
    let text = std::fs::read(p).ok()?;
    let hash = text.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    });
    Some((meta.len(), meta.modified().ok()?, hash))
}

/// Reloads when the file differs from `last`, which was taken before the file was first read:
/// a change made while the proxy was starting is not missed.
async fn watch_file(proxy: Proxy, path: PathBuf, mut last: Fingerprint) {
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = fingerprint(&path);
        if now.is_some() && now != last {
            last = now;
            let _ = proxy.reload().await;
        }
    }
}

pub(crate) async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = match signal(SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => return std::future::pending().await,
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}
