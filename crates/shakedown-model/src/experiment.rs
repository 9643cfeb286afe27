//! The experiment file: services, the proxy in front of their dependencies, typed faults, load,
//! SLOs, a steady-state hypothesis, a method of steps, guardrails and a lock.
//!
//! ```yaml
//! apiVersion: shakedown.dev/v1alpha1
//! kind: Experiment
//! metadata: {name: seed-000}
//! spec:
//!   services:
//!     - name: recommendation
//!       command: shakedown
//!       args: [demo, recommendation, --listen, "{{services.recommendation.address}}"]
//!       ready: {http: /health}
//!   proxy:
//!     listeners:
//!       - {name: recommendation, address: 127.0.0.1:0, routes: [{match: {prefix: /}, cluster: recommendation}]}
//!     clusters:
//!       - {name: recommendation, endpoints: ["{{services.recommendation.address}}"]}
//!   faults:
//!     - name: seed-000
//!       duration: 60s
//!       http: {listeners: [recommendation], abort: {http_status: 503, percentage: 10}}
//!   method:
//!     - inject: seed-000
//!     - pause: 1s
//!     - remove: seed-000
//! ```
//!
//! Addresses are written as templates — `{{services.NAME.address}}` (`ip:port`), `.url`
//! (`http://ip:port`), `.port`, the same for `listeners.NAME` and `tcp_proxies.NAME`, and
//! `{{port}}` for a service's own port — because ports are chosen when the run starts. An
//! experiment is parsed once with positions; [`Experiment::load_rendered`] substitutes the
//! templates in the parsed tree (paths do not move), then validates everything — the embedded
//! proxy config, load and SLOs included — so every error names `file:line:column`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

use crate::duration::parse_duration;
use crate::fault::raw::RawFault;
use crate::load::{LoadSpec, RawLoad};
use crate::proxy::{ProxyConfig, RawProxyConfig, unique};
use crate::slo::{RawSlo, Slo};
use crate::source::{ConfigError, Document, Problems, index, join};
use crate::toxic::{RawToxic, Toxic};
use crate::{HttpFault, Lifetime};

/// The only API version so far.
pub const API_VERSION: &str = "shakedown.dev/v1alpha1";

/// An experiment file as written.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawExperiment {
    /// `shakedown.dev/v1alpha1`.
    pub api_version: String,
    /// `Experiment`.
    pub kind: String,
    /// Name and description.
    pub metadata: RawMetadata,
    /// What to run.
    pub spec: RawSpec,
}

/// `metadata:`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawMetadata {
    /// Name, in reports and the journal.
    pub name: String,
    /// What the experiment checks, in words.
    #[serde(default)]
    pub description: Option<String>,
}

/// `spec:`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawSpec {
    /// Seed for every random choice (faults, load, toxics), so a run can be replayed.
    #[serde(default)]
    pub seed: Option<u64>,
    /// Variables for `{{vars.NAME}}`, with their defaults; `shakedown run --set NAME=VALUE`
    /// overrides them.
    #[serde(default)]
    pub vars: BTreeMap<String, String>,
    /// Processes to start, or endpoints that already run.
    #[serde(default)]
    pub services: Vec<RawService>,
    /// The proxy in front of the dependencies (the proxy config file's format), run in-process.
    #[serde(default)]
    pub proxy: Option<RawProxyConfig>,
    /// Faults, injected and removed by the method.
    #[serde(default)]
    pub faults: Vec<RawExperimentFault>,
    /// The load (the load file's format), run by `load` steps.
    #[serde(default)]
    pub load: Option<RawLoad>,
    /// SLOs, judged by `check` steps and at the end, embedded (PromQL over the proxy's and the
    /// load's series) or from the load's histograms.
    #[serde(default)]
    pub slos: Vec<RawSlo>,
    /// Checked before the method and after recovery.
    #[serde(default)]
    pub steady_state: Option<RawSteadyState>,
    /// Steps, in order.
    pub method: Vec<RawStep>,
    /// Stop conditions watched while the method runs.
    #[serde(default)]
    pub guardrails: Vec<RawGuardrail>,
    /// A lock file, so two runs cannot share an environment.
    #[serde(default)]
    pub lock: Option<RawLock>,
    /// Run the experiment once per intensity of one variable, to find where it breaks.
    #[serde(default)]
    pub sweep: Option<RawSweep>,
}

/// `sweep:` — one variable of `spec.vars` (used as a fault's intensity, e.g.
/// `percentage: "{{vars.abort | number}}"`) over a grid, or searched for the highest value at
/// which the experiment still passes.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawSweep {
    /// The variable.
    pub var: String,
    /// A grid: every value, in order.
    #[serde(default)]
    pub values: Vec<f64>,
    /// A search between `min` and `max`.
    #[serde(default)]
    pub search: Option<RawSearch>,
}

/// `search:` of a sweep.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawSearch {
    /// Lowest intensity (expected to pass).
    pub min: f64,
    /// Highest intensity (expected to fail).
    pub max: f64,
    /// Step of the grid the search moves on; the breaking point is found to within it.
    pub resolution: f64,
    /// Runs at each side of the boundary once found (default 3), for a confidence interval.
    #[serde(default)]
    pub repeats: Option<u32>,
}

/// A service.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawService {
    /// Name, for templates and process faults.
    pub name: String,
    /// Program to start (`shakedown` = this binary); absent for an existing `endpoint`.
    #[serde(default)]
    pub command: Option<String>,
    /// Arguments.
    #[serde(default)]
    pub args: Vec<String>,
    /// Extra environment.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Port it listens on; 0 or absent = a free port chosen at start (`{{port}}`).
    #[serde(default)]
    pub port: Option<u16>,
    /// An existing service, `host:port`, instead of a command.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// How to know it is up.
    #[serde(default)]
    pub ready: Option<RawReady>,
}

/// A readiness probe.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawReady {
    /// HTTP path that must answer 2xx (else: the port accepts a connection).
    #[serde(default)]
    pub http: Option<String>,
    /// How long to wait (default 10s).
    #[serde(default)]
    pub timeout: Option<String>,
}

/// A fault of the experiment: exactly one of `http`, `tcp`, `process`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawExperimentFault {
    /// Name, for steps.
    pub name: String,
    /// Delay between the `inject` step and the fault taking effect (default 0).
    #[serde(default)]
    pub start: Option<String>,
    /// How long it lasts once applied; also the deadline the proxy enforces by itself.
    pub duration: String,
    /// An HTTP fault on the proxy (any of the three forms).
    #[serde(default)]
    pub http: Option<RawFault>,
    /// A Toxiproxy toxic on one of the proxy's TCP proxies.
    #[serde(default)]
    pub tcp: Option<RawTcpFault>,
    /// A signal to a service this experiment started.
    #[serde(default)]
    pub process: Option<RawProcessFault>,
}

/// `tcp:` of a fault.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawTcpFault {
    /// The TCP proxy (by name).
    pub proxy: String,
    /// The toxic.
    pub toxic: RawToxic,
}

/// `process:` of a fault.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawProcessFault {
    /// A service the experiment started.
    pub service: String,
    /// `kill` (SIGKILL), `terminate` (SIGTERM), `pause` (SIGSTOP, SIGCONT at the end) or
    /// `restart` (SIGTERM, then started again).
    pub action: String,
}

/// `steady_state:`.
#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawSteadyState {
    /// Probes that must pass.
    #[serde(default)]
    pub probes: Vec<RawProbe>,
}

/// A probe: an HTTP request or a command, with what must come back.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawProbe {
    /// Name, in reports.
    pub name: String,
    /// URL to request (loopback).
    #[serde(default)]
    pub http: Option<String>,
    /// HTTP method (default GET).
    #[serde(default)]
    pub method: Option<String>,
    /// Expected status (default: any 2xx).
    #[serde(default)]
    pub status: Option<u16>,
    /// Text the body must contain.
    #[serde(default)]
    pub body_contains: Option<String>,
    /// A JSON pointer (`/a/0/b`) into the body and the value it must hold.
    #[serde(default)]
    pub json: Option<RawJsonExpect>,
    /// A command to run instead (argv).
    #[serde(default)]
    pub command: Vec<String>,
    /// Its expected exit code (default 0).
    #[serde(default)]
    pub exit_code: Option<i32>,
    /// Time allowed (default 5s).
    #[serde(default)]
    pub timeout: Option<String>,
}

/// `json:` of a probe.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawJsonExpect {
    /// JSON pointer (RFC 6901).
    pub pointer: String,
    /// The value there.
    pub equals: Value,
}

/// A step of the method.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub enum RawStep {
    /// Apply a fault (by name).
    Inject(String),
    /// Remove a fault (by name) and verify it is gone.
    Remove(String),
    /// Run the load (`spec.load`).
    Load(RawLoadStep),
    /// Wait.
    Pause(String),
    /// Run a probe; a failure fails the experiment.
    Probe(RawProbe),
    /// Judge SLOs now (by name; empty = all).
    Check(Vec<String>),
    /// Run steps at the same time; the group ends when all have.
    Parallel(Vec<RawStep>),
}

/// `load:` step.
#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawLoadStep {
    /// Runs the scenario for this long instead (its stages scaled in proportion).
    #[serde(default)]
    pub duration: Option<String>,
}

/// A guardrail: an SLO-like bound watched during the method, or a probe run periodically.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawGuardrail {
    /// Name, in reports.
    pub name: String,
    /// PromQL over the embedded store that must stay within `op threshold`.
    #[serde(default)]
    pub query: Option<String>,
    /// `<`, `<=`, `>`, `>=`.
    #[serde(default)]
    pub op: Option<String>,
    /// The hard limit.
    #[serde(default)]
    pub threshold: Option<f64>,
    /// A probe that must keep passing.
    #[serde(default)]
    pub probe: Option<RawProbe>,
    /// A multi-window burn rate (Google's SRE workbook) of an error ratio.
    #[serde(default)]
    pub burn_rate: Option<RawBurnRate>,
    /// How often it is checked (default 1s).
    #[serde(default)]
    pub every: Option<String>,
    /// Consecutive failures before aborting (default 1).
    #[serde(default)]
    pub failures: Option<u32>,
}

/// `burn_rate:` of a guardrail: aborts when the error ratio over both windows spends the error
/// budget more than `factor` times faster than the objective allows.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawBurnRate {
    /// PromQL of the error ratio with `{{window}}` where the range goes.
    pub error_ratio: String,
    /// The objective, e.g. 0.99.
    pub objective: f64,
    /// Burn-rate factor (the workbook pages at 14.4 over 1 h and 5 m).
    pub factor: f64,
    /// Long window (scaled to the experiment, e.g. 1m).
    pub long: String,
    /// Short window (a twelfth of the long one, by the workbook).
    pub short: String,
}

/// `lock:`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawLock {
    /// Lock file; created exclusively, removed at the end.
    pub path: String,
}

/// A validated experiment.
#[derive(Debug)]
pub struct Experiment {
    /// Name.
    pub name: String,
    /// Description.
    pub description: Option<String>,
    /// Seed.
    pub seed: Option<u64>,
    /// Services.
    pub services: Vec<Service>,
    /// The embedded proxy.
    pub proxy: Option<ProxyConfig>,
    /// Faults by name, in file order.
    pub faults: Vec<ExperimentFault>,
    /// The load.
    pub load: Option<LoadSpec>,
    /// SLOs.
    pub slos: Vec<Slo>,
    /// Steady-state probes.
    pub steady_state: Vec<Probe>,
    /// Method.
    pub method: Vec<Step>,
    /// Guardrails.
    pub guardrails: Vec<Guardrail>,
    /// Lock file.
    pub lock: Option<String>,
    /// The sweep, if any.
    pub sweep: Option<Sweep>,
}

/// A validated sweep.
#[derive(Debug, Clone, PartialEq)]
pub struct Sweep {
    /// The variable.
    pub var: String,
    /// Grid or search.
    pub mode: SweepMode,
}

/// How a sweep picks intensities.
#[derive(Debug, Clone, PartialEq)]
pub enum SweepMode {
    /// Every value, once.
    Grid(Vec<f64>),
    /// Bisection over `min..=max` in steps of `resolution`, then `repeats` runs at each side.
    Search {
        /// Lowest.
        min: f64,
        /// Highest.
        max: f64,
        /// Step.
        resolution: f64,
        /// Runs at each side of the boundary.
        repeats: u32,
    },
}

/// A validated service.
#[derive(Debug, Clone)]
pub struct Service {
    /// Name.
    pub name: String,
    /// How to run it, or where it is.
    pub kind: ServiceKind,
    /// Its address (`ip:port`).
    pub address: String,
    /// HTTP readiness path.
    pub ready_http: Option<String>,
    /// Readiness timeout.
    pub ready_timeout: Duration,
}

/// Started by the run, or already there.
#[derive(Debug, Clone)]
pub enum ServiceKind {
    /// A process.
    Process {
        /// Program (`shakedown` = this binary).
        command: String,
        /// Arguments.
        args: Vec<String>,
        /// Environment.
        env: BTreeMap<String, String>,
    },
    /// An existing endpoint.
    Endpoint,
}

/// A validated fault.
#[derive(Debug, Clone)]
pub struct ExperimentFault {
    /// Name.
    pub name: String,
    /// Delay after the inject step.
    pub start: Duration,
    /// How long it lasts.
    pub duration: Duration,
    /// What it is.
    pub kind: FaultKind,
}

/// The typed fault.
#[derive(Debug, Clone)]
pub enum FaultKind {
    /// On the proxy's HTTP path.
    Http(HttpFault),
    /// A toxic on a TCP proxy.
    Tcp {
        /// The TCP proxy.
        proxy: String,
        /// The toxic.
        toxic: Toxic,
    },
    /// A signal to a started service.
    Process {
        /// The service.
        service: String,
        /// What to do.
        action: ProcessAction,
    },
}

/// What a process fault does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProcessAction {
    /// SIGKILL (started again at recovery).
    Kill,
    /// SIGTERM (started again at recovery).
    Terminate,
    /// SIGSTOP, SIGCONT at recovery.
    Pause,
    /// SIGTERM and start again at once.
    Restart,
}

impl ProcessAction {
    /// The word in the file.
    pub fn as_str(self) -> &'static str {
        match self {
            ProcessAction::Kill => "kill",
            ProcessAction::Terminate => "terminate",
            ProcessAction::Pause => "pause",
            ProcessAction::Restart => "restart",
        }
    }
}

/// A validated probe.
#[derive(Debug, Clone)]
pub struct Probe {
    /// Name.
    pub name: String,
    /// What it does.
    pub action: ProbeAction,
    /// Time allowed.
    pub timeout: Duration,
}

/// HTTP or command.
#[derive(Debug, Clone)]
pub enum ProbeAction {
    /// An HTTP request.
    Http {
        /// URL.
        url: String,
        /// Method.
        method: String,
        /// Expected status; `None` = any 2xx.
        status: Option<u16>,
        /// Body substring.
        body_contains: Option<String>,
        /// JSON pointer and value.
        json: Option<(String, Value)>,
    },
    /// A command.
    Command {
        /// argv.
        argv: Vec<String>,
        /// Expected exit code.
        exit_code: i32,
    },
}

/// A validated step.
#[derive(Debug, Clone)]
pub enum Step {
    /// Apply a fault.
    Inject(String),
    /// Remove a fault.
    Remove(String),
    /// Run the load, maybe for another duration.
    Load(Option<Duration>),
    /// Wait.
    Pause(Duration),
    /// A probe.
    Probe(Probe),
    /// Judge SLOs (empty = all).
    Check(Vec<String>),
    /// Concurrent steps.
    Parallel(Vec<Step>),
}

/// A validated guardrail.
#[derive(Debug, Clone)]
pub struct Guardrail {
    /// Name.
    pub name: String,
    /// What is watched.
    pub watch: GuardrailWatch,
    /// How often.
    pub every: Duration,
    /// Consecutive failures that abort.
    pub failures: u32,
}

/// What a guardrail watches.
#[derive(Debug, Clone)]
pub enum GuardrailWatch {
    /// PromQL over the embedded store, with its hard limit.
    Query {
        /// Query.
        query: String,
        /// Comparison that must hold.
        op: crate::threshold::Operator,
        /// Limit.
        threshold: f64,
    },
    /// A probe that must pass.
    Probe(Probe),
    /// A multi-window burn rate.
    BurnRate {
        /// Error ratio with `{{window}}`.
        error_ratio: String,
        /// Objective.
        objective: f64,
        /// Factor.
        factor: f64,
        /// Long window.
        long: Duration,
        /// Short window.
        short: Duration,
    },
}

/// Where each addressable thing is, for templates.
#[derive(Debug, Default, Clone)]
pub struct Addresses {
    /// Service name → `ip:port`.
    pub services: HashMap<String, String>,
    /// Listener name → `ip:port`.
    pub listeners: HashMap<String, String>,
    /// TCP proxy name → `ip:port`.
    pub tcp_proxies: HashMap<String, String>,
    /// `{{vars.NAME}}` values.
    pub vars: HashMap<String, String>,
    /// Whether listeners and TCP proxies declared on port 0 are to listen on the addresses
    /// above (chosen at start) rather than on any free port.
    pub pin_ports: bool,
}

/// The names a document declares, before anything is validated (to pick ports and check
/// template references).
#[derive(Debug, Default, Clone)]
pub struct Declared {
    /// Service name → declared port (0 = any).
    pub services: Vec<(String, u16, bool)>,
    /// Listener name → declared address.
    pub listeners: Vec<(String, String)>,
    /// TCP proxy name → declared listen address.
    pub tcp_proxies: Vec<(String, String)>,
    /// Variables with their defaults.
    pub vars: Vec<(String, String)>,
}

impl Declared {
    /// Reads the names and addresses from a parsed document (tolerant: validation comes later).
    pub fn of(doc: &Document) -> Declared {
        let spec = &doc.value()["spec"];
        let list = |v: &Value, addr: &str| -> Vec<(String, String)> {
            v.as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|x| {
                            Some((
                                x["name"].as_str()?.to_owned(),
                                x[addr].as_str().unwrap_or("127.0.0.1:0").to_owned(),
                            ))
                        })
                        .collect()
                })
                .unwrap_or_default()
        };
        Declared {
            services: spec["services"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|s| {
                            Some((
                                s["name"].as_str()?.to_owned(),
                                s["port"].as_u64().unwrap_or(0) as u16,
                                s["endpoint"].is_string(),
                            ))
                        })
                        .collect()
                })
                .unwrap_or_default(),
            listeners: list(&spec["proxy"]["listeners"], "address"),
            tcp_proxies: list(&spec["proxy"]["tcp_proxies"], "listen"),
            vars: spec["vars"]
                .as_object()
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| {
                            (
                                k.clone(),
                                v.as_str().map_or_else(|| v.to_string(), str::to_owned),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default(),
        }
    }

    /// The variables, with `overrides` (`--set`) applied; an override of an undeclared
    /// variable is an error.
    pub fn vars_with(
        &self,
        overrides: &[(String, String)],
    ) -> Result<HashMap<String, String>, String> {
        let mut vars: HashMap<String, String> = self.vars.iter().cloned().collect();
        for (k, v) in overrides {
            if !vars.contains_key(k) {
                let mut known: Vec<&str> = vars.keys().map(String::as_str).collect();
                known.sort_unstable();
                return Err(format!(
                    "--set {k}: the experiment declares no such variable in spec.vars (it has: {})",
                    if known.is_empty() {
                        "none".to_owned()
                    } else {
                        known.join(", ")
                    }
                ));
            }
            vars.insert(k.clone(), v.clone());
        }
        Ok(vars)
    }

    /// Addresses with `127.0.0.1:1` for everything not fixed: enough to validate.
    pub fn placeholders(&self) -> Addresses {
        let mut a = Addresses {
            vars: self.vars.iter().cloned().collect(),
            ..Addresses::default()
        };
        for (name, port, _) in &self.services {
            a.services
                .insert(name.clone(), format!("127.0.0.1:{}", (*port).max(1)));
        }
        for (name, addr) in &self.listeners {
            a.listeners
                .insert(name.clone(), fixed_or(addr, "127.0.0.1:1"));
        }
        for (name, addr) in &self.tcp_proxies {
            a.tcp_proxies
                .insert(name.clone(), fixed_or(addr, "127.0.0.1:1"));
        }
        a
    }
}

fn fixed_or(addr: &str, other: &str) -> String {
    if addr.ends_with(":0") {
        other.to_owned()
    } else {
        addr.to_owned()
    }
}

impl Experiment {
    /// Parses, renders with placeholder addresses and validates: what `shakedown validate` and
    /// `run --dry-run` do.
    pub fn load(origin: &str, text: &str) -> Result<(Experiment, Document), ConfigError> {
        let doc = Document::parse(origin, text)?;
        let addresses = Declared::of(&doc).placeholders();
        let exp = Self::load_rendered(&doc, &addresses)?;
        Ok((exp, doc))
    }

    /// Renders the templates with `addresses` and validates; errors are located in `doc`.
    pub fn load_rendered(doc: &Document, addresses: &Addresses) -> Result<Experiment, ConfigError> {
        let mut problems = Problems::default();
        let mut value = doc.value().clone();
        render(&mut value, "", addresses, None, &mut problems);
        if addresses.pin_ports
            && let Some(proxy) = value.get_mut("spec").and_then(|s| s.get_mut("proxy"))
        {
            if let Some(l) = proxy.get_mut("listeners") {
                pin(l, "address", &addresses.listeners);
            }
            if let Some(t) = proxy.get_mut("tcp_proxies") {
                pin(t, "listen", &addresses.tcp_proxies);
            }
        }
        if !problems.is_empty() {
            return Err(doc.errors(problems.into_vec()));
        }
        let (raw, unknown): (RawExperiment, _) =
            doc.with_value(value).deserialize_reporting_unknown()?;
        match Self::validate(&raw, addresses) {
            Ok(e) if unknown.is_empty() => Ok(e),
            Ok(_) => Err(doc.errors(unknown)),
            Err(p) => {
                let mut all = unknown;
                all.extend(p.into_vec());
                Err(doc.errors(all))
            }
        }
    }

    fn validate(raw: &RawExperiment, addresses: &Addresses) -> Result<Experiment, Problems> {
        let mut problems = Problems::default();
        if raw.api_version != API_VERSION {
            problems.push(
                "apiVersion",
                format!("`{}`: expected {API_VERSION}", raw.api_version),
            );
        }
        if raw.kind != "Experiment" {
            problems.push("kind", format!("`{}`: expected Experiment", raw.kind));
        }
        if !crate::fault::valid_name(&raw.metadata.name) {
            problems.push("metadata.name", "letters, digits, `-`, `_`, `.`; 1–128");
        }
        let spec = &raw.spec;

        // Services.
        let mut services = Vec::new();
        for (i, s) in spec.services.iter().enumerate() {
            let path = index("spec.services", i);
            let ready_timeout = duration_or(
                s.ready.as_ref().and_then(|r| r.timeout.as_deref()),
                Duration::from_secs(10),
                &join(&join(&path, "ready"), "timeout"),
                &mut problems,
            );
            let kind = match (&s.command, &s.endpoint) {
                (Some(c), None) => ServiceKind::Process {
                    command: c.clone(),
                    args: s.args.clone(),
                    env: s.env.clone(),
                },
                (None, Some(e)) => {
                    crate::toxic::check_host_port(e, &join(&path, "endpoint"), &mut problems);
                    ServiceKind::Endpoint
                }
                _ => {
                    problems.push(&path, "give either `command` (to start) or `endpoint`");
                    continue;
                }
            };
            let address = match &s.endpoint {
                Some(e) => e.clone(),
                None => addresses.services.get(&s.name).cloned().unwrap_or_default(),
            };
            services.push(Service {
                name: s.name.clone(),
                kind,
                address,
                ready_http: s.ready.as_ref().and_then(|r| r.http.clone()),
                ready_timeout,
            });
        }
        unique(
            spec.services.iter().map(|s| s.name.as_str()),
            "spec.services",
            &mut problems,
        );
        let service_names: HashSet<&str> = spec.services.iter().map(|s| s.name.as_str()).collect();
        let started: HashSet<&str> = spec
            .services
            .iter()
            .filter(|s| s.command.is_some())
            .map(|s| s.name.as_str())
            .collect();

        // The proxy, validated by its own rules; paths prefixed so they locate in this file.
        let proxy = spec
            .proxy
            .as_ref()
            .and_then(|p| match ProxyConfig::validate(p.clone()) {
                Ok(c) => Some(c),
                Err(ps) => {
                    for p in ps.into_vec() {
                        problems.push(join("spec.proxy", &p.path), p.message);
                    }
                    None
                }
            });
        let listeners: HashSet<&str> = spec
            .proxy
            .iter()
            .flat_map(|p| p.listeners.iter().map(|l| l.name.as_str()))
            .collect();
        let clusters: HashSet<&str> = spec
            .proxy
            .iter()
            .flat_map(|p| p.clusters.iter().map(|c| c.name.as_str()))
            .collect();
        let tcp_proxies: HashSet<&str> = spec
            .proxy
            .iter()
            .flat_map(|p| p.tcp_proxies.iter().map(|t| t.name.as_str()))
            .collect();

        // Faults.
        let mut faults = Vec::new();
        for (i, f) in spec.faults.iter().enumerate() {
            let path = index("spec.faults", i);
            if !crate::fault::valid_name(&f.name) {
                problems.push(
                    join(&path, "name"),
                    format!("`{}` is not a valid name", f.name),
                );
            }
            let start = duration_or(
                f.start.as_deref(),
                Duration::ZERO,
                &join(&path, "start"),
                &mut problems,
            );
            let duration = match parse_duration(&f.duration) {
                Ok(d) if d > Duration::ZERO => d,
                Ok(_) => {
                    problems.push(join(&path, "duration"), "must be greater than 0");
                    Duration::ZERO
                }
                Err(e) => {
                    problems.push(join(&path, "duration"), e);
                    Duration::ZERO
                }
            };
            let kinds = usize::from(f.http.is_some())
                + usize::from(f.tcp.is_some())
                + usize::from(f.process.is_some());
            if kinds != 1 {
                problems.push(&path, "give exactly one of `http`, `tcp`, `process`");
                continue;
            }
            let kind = if let Some(h) = &f.http {
                let hpath = join(&path, "http");
                if spec.proxy.is_none() {
                    problems.push(&hpath, "an HTTP fault needs `spec.proxy`");
                }
                if h.name.is_some() {
                    problems.push(join(&hpath, "name"), "the fault's name is the `name` above");
                }
                if h.ttl.is_some() || h.expires_at.is_some() {
                    problems.push(&hpath, "the deadline is the fault's `duration`");
                }
                HttpFault::from_raw(h, &hpath, Some(&f.name), &mut problems).map(|mut fault| {
                    crate::proxy::check_fault_refs(
                        &fault,
                        &hpath,
                        &listeners,
                        &clusters,
                        &mut problems,
                    );
                    fault.lifetime = Lifetime::Ttl(duration);
                    FaultKind::Http(fault)
                })
            } else if let Some(t) = &f.tcp {
                let tpath = join(&path, "tcp");
                if !tcp_proxies.contains(t.proxy.as_str()) {
                    problems.push(
                        join(&tpath, "proxy"),
                        format!("no TCP proxy `{}` in spec.proxy.tcp_proxies", t.proxy),
                    );
                }
                let tpath = join(&tpath, "toxic");
                if t.toxic.ttl.is_some() || t.toxic.expires_at.is_some() {
                    problems.push(&tpath, "the deadline is the fault's `duration`");
                }
                Toxic::from_raw(&t.toxic, &tpath, &mut problems).map(|mut toxic| {
                    if toxic.kind.is_http() {
                        problems.push(join(&tpath, "type"), "HTTP toxics go in `http:` faults");
                    }
                    if t.toxic.name.is_none() {
                        toxic.name = f.name.clone();
                    }
                    toxic.lifetime = Lifetime::Ttl(duration);
                    FaultKind::Tcp {
                        proxy: t.proxy.clone(),
                        toxic,
                    }
                })
            } else if let Some(p) = &f.process {
                let ppath = join(&path, "process");
                if !started.contains(p.service.as_str()) {
                    problems.push(
                        join(&ppath, "service"),
                        if service_names.contains(p.service.as_str()) {
                            format!("`{}` is an endpoint; process faults need a service this experiment starts", p.service)
                        } else {
                            format!("no service `{}`", p.service)
                        },
                    );
                }
                let action = match p.action.as_str() {
                    "kill" => Some(ProcessAction::Kill),
                    "terminate" => Some(ProcessAction::Terminate),
                    "pause" => Some(ProcessAction::Pause),
                    "restart" => Some(ProcessAction::Restart),
                    other => {
                        problems.push(
                            join(&ppath, "action"),
                            format!("`{other}`: use kill, terminate, pause or restart"),
                        );
                        None
                    }
                };
                action.map(|action| FaultKind::Process {
                    service: p.service.clone(),
                    action,
                })
            } else {
                None
            };
            if let Some(kind) = kind {
                faults.push(ExperimentFault {
                    name: f.name.clone(),
                    start,
                    duration,
                    kind,
                });
            }
        }
        unique(
            spec.faults.iter().map(|f| f.name.as_str()),
            "spec.faults",
            &mut problems,
        );
        let fault_names: HashSet<&str> = spec.faults.iter().map(|f| f.name.as_str()).collect();

        let load = spec
            .load
            .as_ref()
            .and_then(|l| match LoadSpec::validate(l) {
                Ok(s) => Some(s),
                Err(ps) => {
                    for p in ps.into_vec() {
                        problems.push(join("spec.load", &p.path), p.message);
                    }
                    None
                }
            });
        let slos: Vec<Slo> = spec
            .slos
            .iter()
            .enumerate()
            .filter_map(|(i, s)| crate::slo::slo(s, &index("spec.slos", i), &mut problems))
            .collect();
        unique(
            spec.slos.iter().map(|s| s.name.as_str()),
            "spec.slos",
            &mut problems,
        );
        let slo_names: HashSet<&str> = spec.slos.iter().map(|s| s.name.as_str()).collect();

        let steady_state = spec
            .steady_state
            .iter()
            .flat_map(|s| s.probes.iter().enumerate())
            .filter_map(|(i, p)| probe(p, &index("spec.steady_state.probes", i), &mut problems))
            .collect();

        let refs = Refs {
            faults: &fault_names,
            slos: &slo_names,
            has_load: spec.load.is_some(),
        };
        let method = steps(&spec.method, "spec.method", &refs, &mut problems);
        if spec.method.is_empty() {
            problems.push("spec.method", "no step to run");
        }

        let mut guardrails = Vec::new();
        for (i, g) in spec.guardrails.iter().enumerate() {
            let path = index("spec.guardrails", i);
            let every = duration_or(
                g.every.as_deref(),
                Duration::from_secs(1),
                &join(&path, "every"),
                &mut problems,
            );
            let watch = match (&g.query, &g.probe, &g.burn_rate) {
                (None, None, Some(b)) => {
                    let bpath = join(&path, "burn_rate");
                    let long = duration_or(
                        Some(&b.long),
                        Duration::ZERO,
                        &join(&bpath, "long"),
                        &mut problems,
                    );
                    let short = duration_or(
                        Some(&b.short),
                        Duration::ZERO,
                        &join(&bpath, "short"),
                        &mut problems,
                    );
                    if !(b.objective > 0.0 && b.objective < 1.0) {
                        problems.push(join(&bpath, "objective"), "between 0 and 1, e.g. 0.99");
                    }
                    if !(b.factor.is_finite() && b.factor > 0.0) {
                        problems.push(join(&bpath, "factor"), "must be greater than 0");
                    }
                    if short >= long || short.is_zero() {
                        problems.push(
                            join(&bpath, "short"),
                            "must be shorter than `long` (and not 0)",
                        );
                    }
                    if !b.error_ratio.contains("{{window}}") {
                        problems.push(
                            join(&bpath, "error_ratio"),
                            "needs `{{window}}` where the range goes",
                        );
                    }
                    Some(GuardrailWatch::BurnRate {
                        error_ratio: b.error_ratio.clone(),
                        objective: b.objective,
                        factor: b.factor,
                        long,
                        short,
                    })
                }
                (Some(q), None, None) => {
                    let op =
                        g.op.as_deref()
                            .map(crate::slo::comparison)
                            .unwrap_or(Err("a query guardrail needs `op`".into()));
                    let threshold = g.threshold.filter(|t| t.is_finite());
                    if threshold.is_none() {
                        problems.push(
                            join(&path, "threshold"),
                            "a query guardrail needs a finite `threshold`",
                        );
                    }
                    match (op, threshold) {
                        (Ok(op), Some(threshold)) => Some(GuardrailWatch::Query {
                            query: q.clone(),
                            op,
                            threshold,
                        }),
                        (Err(e), _) => {
                            problems.push(join(&path, "op"), e);
                            None
                        }
                        _ => None,
                    }
                }
                (None, Some(p), None) => {
                    probe(p, &join(&path, "probe"), &mut problems).map(GuardrailWatch::Probe)
                }
                _ => {
                    problems.push(
                        &path,
                        "give one of `query` (with op and threshold), `probe`, `burn_rate`",
                    );
                    None
                }
            };
            if let Some(watch) = watch {
                guardrails.push(Guardrail {
                    name: g.name.clone(),
                    watch,
                    every,
                    failures: g.failures.unwrap_or(1).max(1),
                });
            }
        }

        let sweep = spec.sweep.as_ref().and_then(|sw| {
            if !spec.vars.contains_key(&sw.var) {
                problems.push(
                    "spec.sweep.var",
                    format!("`{}` is not in spec.vars", sw.var),
                );
            }
            match (&sw.search, sw.values.is_empty()) {
                (None, false) => {
                    if sw.values.iter().any(|v| !v.is_finite()) {
                        problems.push("spec.sweep.values", "values must be finite numbers");
                    }
                    Some(SweepMode::Grid(sw.values.clone()))
                }
                (Some(s), true) => {
                    let before = problems.len();
                    if !(s.min.is_finite() && s.max.is_finite() && s.min < s.max) {
                        problems.push("spec.sweep.search", "needs finite min < max");
                    }
                    if !(s.resolution.is_finite() && s.resolution > 0.0) {
                        problems.push("spec.sweep.search.resolution", "must be greater than 0");
                    } else if (s.max - s.min) / s.resolution > 10_000.0 {
                        problems.push(
                            "spec.sweep.search.resolution",
                            "more than 10 000 steps: use a coarser resolution",
                        );
                    }
                    let repeats = s.repeats.unwrap_or(3);
                    if repeats == 0 || repeats > 100 {
                        problems.push("spec.sweep.search.repeats", "between 1 and 100");
                    }
                    (problems.len() == before).then_some(SweepMode::Search {
                        min: s.min,
                        max: s.max,
                        resolution: s.resolution,
                        repeats,
                    })
                }
                _ => {
                    problems.push("spec.sweep", "give either `values` (a grid) or `search`");
                    None
                }
            }
            .map(|mode| Sweep {
                var: sw.var.clone(),
                mode,
            })
        });

        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(Experiment {
            sweep,
            name: raw.metadata.name.clone(),
            description: raw.metadata.description.clone(),
            seed: spec.seed,
            services,
            proxy,
            faults,
            load,
            slos,
            steady_state,
            method,
            guardrails,
            lock: spec.lock.as_ref().map(|l| l.path.clone()),
        })
    }

    /// A fault by name.
    pub fn fault(&self, name: &str) -> Option<&ExperimentFault> {
        self.faults.iter().find(|f| f.name == name)
    }
}

struct Refs<'a> {
    faults: &'a HashSet<&'a str>,
    slos: &'a HashSet<&'a str>,
    has_load: bool,
}

fn steps(raw: &[RawStep], path: &str, refs: &Refs<'_>, problems: &mut Problems) -> Vec<Step> {
    let mut out = Vec::new();
    for (i, s) in raw.iter().enumerate() {
        let spath = index(path, i);
        let fault_ref = |name: &String, key: &str, problems: &mut Problems| {
            if !refs.faults.contains(name.as_str()) {
                problems.push(
                    join(&spath, key),
                    format!("no fault `{name}` in spec.faults"),
                );
            }
        };
        let step = match s {
            RawStep::Inject(n) => {
                fault_ref(n, "inject", problems);
                Some(Step::Inject(n.clone()))
            }
            RawStep::Remove(n) => {
                fault_ref(n, "remove", problems);
                Some(Step::Remove(n.clone()))
            }
            RawStep::Load(l) => {
                if !refs.has_load {
                    problems.push(join(&spath, "load"), "a load step needs `spec.load`");
                }
                let dpath = join(&join(&spath, "load"), "duration");
                let d = l
                    .duration
                    .as_deref()
                    .map(|d| duration_or(Some(d), Duration::ZERO, &dpath, problems));
                if d == Some(Duration::ZERO) {
                    problems.push(&dpath, "must be greater than 0");
                }
                Some(Step::Load(d))
            }
            RawStep::Pause(d) => Some(Step::Pause(duration_or(
                Some(d),
                Duration::ZERO,
                &join(&spath, "pause"),
                problems,
            ))),
            RawStep::Probe(p) => probe(p, &join(&spath, "probe"), problems).map(Step::Probe),
            RawStep::Check(names) => {
                for (j, n) in names.iter().enumerate() {
                    if !refs.slos.contains(n.as_str()) {
                        problems.push(
                            index(&join(&spath, "check"), j),
                            format!("no SLO `{n}` in spec.slos"),
                        );
                    }
                }
                if refs.slos.is_empty() {
                    problems.push(join(&spath, "check"), "no SLO in spec.slos to check");
                }
                Some(Step::Check(names.clone()))
            }
            RawStep::Parallel(inner) => Some(Step::Parallel(steps(
                inner,
                &join(&spath, "parallel"),
                refs,
                problems,
            ))),
        };
        out.extend(step);
    }
    out
}

fn probe(raw: &RawProbe, path: &str, problems: &mut Problems) -> Option<Probe> {
    let before = problems.len();
    let timeout = duration_or(
        raw.timeout.as_deref(),
        Duration::from_secs(5),
        &join(path, "timeout"),
        problems,
    );
    let action = match (&raw.http, raw.command.is_empty()) {
        (Some(url), true) => {
            let loopback = url
                .strip_prefix("http://")
                .and_then(|rest| rest.split('/').next())
                .is_some_and(|host| {
                    host.starts_with("127.")
                        || host.starts_with("localhost")
                        || host.starts_with("[::1]")
                });
            if !loopback {
                problems.push(
                    join(path, "http"),
                    format!("`{url}`: probes reach loopback only (http://127.0.0.1:…)"),
                );
            }
            Some(ProbeAction::Http {
                url: url.clone(),
                method: raw.method.clone().unwrap_or_else(|| "GET".into()),
                status: raw.status,
                body_contains: raw.body_contains.clone(),
                json: raw
                    .json
                    .as_ref()
                    .map(|j| (j.pointer.clone(), j.equals.clone())),
            })
        }
        (None, false) => Some(ProbeAction::Command {
            argv: raw.command.clone(),
            exit_code: raw.exit_code.unwrap_or(0),
        }),
        _ => {
            problems.push(path, "give either `http` (a URL) or `command` (argv)");
            None
        }
    };
    let action = action?;
    (problems.len() == before).then(|| Probe {
        name: raw.name.clone(),
        action,
        timeout,
    })
}

fn duration_or(
    text: Option<&str>,
    default: Duration,
    path: &str,
    problems: &mut Problems,
) -> Duration {
    match text {
        None => default,
        Some(t) => parse_duration(t).unwrap_or_else(|e| {
            problems.push(path, e);
            default
        }),
    }
}

/// Substitutes address templates in every string of `v`; unknown references are problems.
/// `own` is the port of the service whose fields these are (`{{port}}`).
fn render(v: &mut Value, path: &str, a: &Addresses, own: Option<&str>, problems: &mut Problems) {
    match v {
        Value::String(s) if s.contains("{{") => {
            // `"{{vars.x | number}}"` alone in a string becomes a JSON number.
            let t = s.trim();
            if let Some(inner) = t
                .strip_prefix("{{")
                .and_then(|r| r.strip_suffix("}}"))
                .filter(|i| !i.contains("{{") && !i.contains("}}"))
                .and_then(|i| i.trim().strip_suffix("number"))
                .and_then(|i| i.trim_end().strip_suffix('|'))
            {
                let rendered = render_str(&format!("{{{{{}}}}}", inner.trim()), a, own);
                match rendered.map(|r| (r.trim().parse::<f64>(), r)) {
                    Ok((Ok(n), _)) => match serde_json::Number::from_f64(n) {
                        Some(n) => *v = Value::Number(n),
                        None => problems.push(path, format!("`{n}` is not a finite number")),
                    },
                    Ok((Err(_), r)) => {
                        problems.push(path, format!("`{r}` is not a number (`| number`)"))
                    }
                    Err(e) => problems.push(path, e),
                }
                return;
            }
            match render_str(s, a, own) {
                Ok(r) => *s = r,
                Err(e) => problems.push(path, e),
            }
        }
        Value::Array(items) => {
            for (i, x) in items.iter_mut().enumerate() {
                render(x, &index(path, i), a, own, problems);
            }
        }
        Value::Object(map) => {
            // A service's own fields may say `{{port}}`.
            let own_port = (path.starts_with("spec.services[") && !path.contains('.'))
                .then(|| map.get("name").and_then(Value::as_str))
                .flatten()
                .and_then(|n| a.services.get(n))
                .and_then(|addr| addr.rsplit_once(':').map(|(_, p)| p.to_owned()));
            let own = own_port.as_deref().or(own);
            for (k, x) in map.iter_mut() {
                render(x, &join(path, k), a, own, problems);
            }
        }
        _ => {}
    }
}

/// Replaces port-0 addresses of named entries with the chosen ones.
fn pin(list: &mut Value, field: &str, chosen: &HashMap<String, String>) {
    let Some(items) = list.as_array_mut() else {
        return;
    };
    for item in items {
        let name = item["name"].as_str().unwrap_or_default().to_owned();
        let declared = item[field].as_str().unwrap_or("127.0.0.1:0").to_owned();
        if let (true, Some(addr)) = (declared.ends_with(":0"), chosen.get(&name))
            && let Some(obj) = item.as_object_mut()
        {
            obj.insert(field.to_owned(), Value::String(addr.clone()));
        }
    }
}

/// One string's templates. Only Shakedown's address templates are touched; `{{window}}` and
/// other braces stay for whoever owns them.
pub fn render_str(s: &str, a: &Addresses, own_port: Option<&str>) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(open) = rest.find("{{") {
        out.push_str(&rest[..open]);
        let after = &rest[open + 2..];
        let Some(close) = after.find("}}") else {
            out.push_str(&rest[open..]);
            return Ok(out);
        };
        let name = after[..close].trim();
        let parts: Vec<&str> = name.split('.').collect();
        let value = match parts.as_slice() {
            ["port"] => Some(
                own_port
                    .ok_or("`{{port}}` is only known in a service's own fields")?
                    .to_owned(),
            ),
            ["vars", var] => Some(
                a.vars
                    .get(*var)
                    .ok_or_else(|| format!("`{{{{{name}}}}}`: no variable `{var}` in spec.vars"))?
                    .clone(),
            ),
            [
                section @ ("services" | "listeners" | "tcp_proxies"),
                item,
                field,
            ] => {
                let map = match *section {
                    "services" => &a.services,
                    "listeners" => &a.listeners,
                    _ => &a.tcp_proxies,
                };
                let addr = map.get(*item).ok_or_else(|| {
                    format!(
                        "`{{{{{name}}}}}`: no {} named `{item}`",
                        &section[..section.len() - 1]
                    )
                })?;
                Some(match *field {
                    "address" => addr.clone(),
                    "url" => format!("http://{addr}"),
                    "port" => addr
                        .rsplit_once(':')
                        .map(|(_, p)| p.to_owned())
                        .unwrap_or_default(),
                    "host" => addr
                        .rsplit_once(':')
                        .map(|(h, _)| h.to_owned())
                        .unwrap_or_default(),
                    other => {
                        return Err(format!(
                            "`{{{{{name}}}}}`: `{other}`? use address, url, host or port"
                        ));
                    }
                })
            }
            [first, ..] if ["services", "listeners", "tcp_proxies"].contains(first) => {
                return Err(format!(
                    "`{{{{{name}}}}}`: write {first}.NAME.address (or .url, .host, .port)"
                ));
            }
            _ => None,
        };
        match value {
            Some(v) => out.push_str(&v),
            None => out.push_str(&rest[open..open + 2 + close + 2]),
        }
        rest = &after[close + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

/// The JSON Schema of an experiment file.
pub fn schema() -> Value {
    serde_json::to_value(schemars::schema_for!(RawExperiment)).unwrap_or_default()
}

/// Whether a document looks like an experiment (for `shakedown validate`).
pub fn is_experiment(text: &str) -> bool {
    text.lines()
        .any(|l| l.trim_start().starts_with("kind: Experiment"))
        || text.contains("\"kind\": \"Experiment\"")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_render_and_unknown_ones_are_named() {
        let mut a = Addresses::default();
        a.services.insert("rec".into(), "127.0.0.1:8081".into());
        a.listeners.insert("out".into(), "127.0.0.1:9000".into());
        assert_eq!(
            render_str(
                "{{services.rec.url}}/x and {{listeners.out.port}}",
                &a,
                None
            )
            .unwrap(),
            "http://127.0.0.1:8081/x and 9000"
        );
        assert_eq!(
            render_str("rate[{{window}}]", &a, None).unwrap(),
            "rate[{{window}}]"
        );
        assert_eq!(
            render_str("--port={{port}}", &a, Some("7")).unwrap(),
            "--port=7"
        );
        assert!(
            render_str("{{services.nope.url}}", &a, None)
                .unwrap_err()
                .contains("no service named `nope`")
        );
        assert!(render_str("{{services.rec}}", &a, None).is_err());
    }

    #[test]
    fn a_number_filter_makes_a_json_number() {
        let mut a = Addresses::default();
        a.vars.insert("abort".into(), "12.5".into());
        a.vars.insert("word".into(), "on".into());
        let mut v = serde_json::json!({"p": "{{vars.abort | number}}", "q": "{{ vars.abort|number }}", "s": "{{vars.abort}}", "w": "{{vars.word | number}}"});
        let mut problems = Problems::default();
        render(&mut v, "", &a, None, &mut problems);
        assert_eq!(v["p"], 12.5);
        assert_eq!(v["q"], 12.5);
        assert_eq!(v["s"], "12.5");
        let p = problems.into_vec();
        assert_eq!(p.len(), 1);
        assert!(
            p[0].path == "w" && p[0].message.contains("not a number"),
            "{p:?}"
        );
    }
}
