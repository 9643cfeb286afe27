//! Shakedown's experiment engine: one file in, a verdict out, and nothing left behind.
//!
//! [`run`] takes an experiment through: journal and lock → ports, templates, validation →
//! proxy and services (ready) → steady state → the method (steps, parallel groups, fault
//! windows) watched by guardrails and signals → final SLO judgement → rollback of every fault,
//! each verified absent → steady state again → services stopped → reports. Every fault goes
//! Init → Inject → Verify → Recover, each transition printed as it happens; before a fault is
//! applied its undo is in the journal on disk, and its deadline is in the proxy.

pub mod demo;
pub mod html;
pub mod journal;
pub mod probe;
pub mod recover;
pub mod report;
pub mod services;
pub mod sweep;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use rustix::process::Signal;
use shakedown_model::experiment::{
    Addresses, Declared, Experiment, ExperimentFault, FaultKind, GuardrailWatch, ProcessAction,
    ServiceKind, Step,
};
use shakedown_model::{Document, ProxyConfig};
use shakedown_proxy::{Proxy, ProxyOptions};
use shakedown_slo::store::{Store, now_ms};
use shakedown_slo::{Outcome, QueryResult};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::journal::{Entry, Journal, Undo};
use crate::report::{
    FaultRecord, GuardrailRecord, LoadRecord, RunReport, SloRecord, StepRecord, ThresholdRecord,
    Verdict,
};

/// Where a run prints its live lines.
pub type Printer = Arc<dyn Fn(&str) + Send + Sync>;

/// Choices that are not in the experiment file.
pub struct Options {
    /// Journal and lock-free state (`.shakedown` by default).
    pub state_dir: PathBuf,
    /// Where `report.json` and `junit.xml` go; default `<state dir>/reports/<name>-<time>`.
    pub report_dir: Option<PathBuf>,
    /// Turns true on Ctrl-C or SIGTERM.
    pub interrupt: Option<watch::Receiver<bool>>,
    /// Live output.
    pub print: Printer,
    /// `--set NAME=VALUE` overrides of `spec.vars`.
    pub vars: Vec<(String, String)>,
}

/// What a run came to.
#[derive(Debug)]
pub struct Finished {
    /// The verdict (its exit code is the process's).
    pub verdict: Verdict,
    /// One sentence.
    pub message: String,
    /// The full record, when the run got far enough to have one.
    pub report: Option<RunReport>,
    /// Where the reports were written.
    pub report_dir: Option<PathBuf>,
}

impl Finished {
    fn invalid(message: String) -> Self {
        Finished {
            verdict: Verdict::CouldNotRun,
            message,
            report: None,
            report_dir: None,
        }
    }
}

/// The plan `run --dry-run` prints: what would start, be injected and judged, in order.
pub fn plan(exp: &Experiment) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(out, "experiment {}", exp.name);
    if let Some(d) = &exp.description {
        let _ = writeln!(out, "  {d}");
    }
    for s in &exp.services {
        match &s.kind {
            ServiceKind::Process { command, args, .. } => {
                let _ = writeln!(
                    out,
                    "service {}: start `{command} {}` on {}",
                    s.name,
                    args.join(" "),
                    s.address
                );
            }
            ServiceKind::Endpoint => {
                let _ = writeln!(out, "service {}: existing endpoint {}", s.name, s.address);
            }
        }
    }
    if let Some(p) = &exp.proxy {
        for l in &p.listeners {
            let _ = writeln!(out, "proxy listener {} on {}", l.name, l.address);
        }
        for t in &p.tcp_proxies {
            let _ = writeln!(out, "proxy tcp {} {} → {}", t.name, t.listen, t.upstream);
        }
    }
    for f in &exp.faults {
        let _ = writeln!(
            out,
            "fault {}: {} — from {} after its inject step, for {}",
            f.name,
            describe(f),
            humantime::format_duration(f.start),
            humantime::format_duration(f.duration)
        );
    }
    if !exp.steady_state.is_empty() {
        let names: Vec<&str> = exp.steady_state.iter().map(|p| p.name.as_str()).collect();
        let _ = writeln!(out, "steady state (before and after): {}", names.join(", "));
    }
    let _ = writeln!(out, "method:");
    fn steps(out: &mut String, s: &[Step], depth: usize) {
        for step in s {
            let _ = writeln!(out, "{}- {}", "  ".repeat(depth + 1), step_name(step));
            if let Step::Parallel(inner) = step {
                steps(out, inner, depth + 1);
            }
        }
    }
    steps(&mut out, &exp.method, 0);
    for s in &exp.slos {
        let _ = writeln!(
            out,
            "slo {}: {:?} {} {}",
            s.name,
            s.sli,
            s.op.as_str(),
            s.threshold
        );
    }
    for g in &exp.guardrails {
        let _ = writeln!(
            out,
            "guardrail {} every {}",
            g.name,
            humantime::format_duration(g.every)
        );
    }
    if let Some(l) = &exp.lock {
        let _ = writeln!(out, "lock {l}");
    }
    if let Some(sw) = &exp.sweep {
        match &sw.mode {
            shakedown_model::experiment::SweepMode::Grid(values) => {
                let _ = writeln!(out, "sweep {} over {values:?}: one run each", sw.var);
            }
            shakedown_model::experiment::SweepMode::Search {
                min,
                max,
                resolution,
                repeats,
            } => {
                let _ = writeln!(
                    out,
                    "sweep {}: search {min}..={max} in steps of {resolution}, {repeats} runs at each side of the breaking point",
                    sw.var
                );
            }
        }
    }
    out
}

fn step_name(s: &Step) -> String {
    match s {
        Step::Inject(f) => format!("inject {f}"),
        Step::Remove(f) => format!("remove {f}"),
        Step::Load(_) => "load".into(),
        Step::Pause(d) => format!("pause {}", humantime::format_duration(*d)),
        Step::Probe(p) => format!("probe {}", p.name),
        Step::Check(names) if names.is_empty() => "check all SLOs".into(),
        Step::Check(names) => format!("check {}", names.join(", ")),
        Step::Parallel(inner) => format!("parallel ({} steps)", inner.len()),
    }
}

fn describe(f: &ExperimentFault) -> String {
    match &f.kind {
        FaultKind::Http(h) => {
            use shakedown_model::{AbortSource, DelaySource};
            let mut parts = Vec::new();
            if let Some(a) = &h.abort {
                let what = match a.source {
                    AbortSource::Http(status) => format!("HTTP {status}"),
                    AbortSource::Grpc(status) => format!("gRPC status {status}"),
                    AbortSource::Header => "the status in the request header".into(),
                };
                parts.push(format!(
                    "abort {}% with {what}",
                    a.percentage.fraction() * 100.0
                ));
            }
            if let Some(d) = &h.delay {
                let what = match d.source {
                    DelaySource::Fixed(t) => humantime::format_duration(t).to_string(),
                    DelaySource::Header => "the delay in the request header".into(),
                };
                parts.push(format!(
                    "delay {}% by {what}",
                    d.percentage.fraction() * 100.0
                ));
            }
            if h.response_rate_limit.is_some() {
                parts.push("response rate limit".into());
            }
            format!("http {}", parts.join(", "))
        }
        FaultKind::Tcp { proxy, toxic } => format!(
            "tcp {} {} on {proxy} ({}, toxicity {})",
            toxic.kind.type_name(),
            toxic.kind.attributes(),
            toxic.stream.as_str(),
            toxic.toxicity
        ),
        FaultKind::Process { service, action } => format!("process {} {service}", action.as_str()),
    }
}

/// Runs an experiment file to its verdict.
pub async fn run(origin: &str, text: &str, opts: Options) -> Finished {
    // Parse once with positions; nothing starts before everything is valid.
    let doc = match Document::parse(origin, text) {
        Ok(d) => d,
        Err(e) => return Finished::invalid(e.to_string()),
    };
    let declared = Declared::of(&doc);
    let vars = match declared.vars_with(&opts.vars) {
        Ok(v) => v,
        Err(e) => return Finished::invalid(e),
    };
    let mut placeholders = declared.placeholders();
    placeholders.vars = vars.clone();
    if let Err(e) = Experiment::load_rendered(&doc, &placeholders) {
        return Finished::invalid(e.to_string());
    }
    let name = doc.value()["metadata"]["name"]
        .as_str()
        .unwrap_or("experiment")
        .to_owned();

    let lock = match doc.value()["spec"]["lock"]["path"].as_str() {
        Some(path) => match Lock::take(Path::new(path)) {
            Ok(l) => Some(l),
            Err(e) => return Finished::invalid(e),
        },
        None => None,
    };
    let journal = match Journal::begin(&opts.state_dir, &name) {
        Ok(j) => j,
        Err(e) => return Finished::invalid(e.to_string()),
    };

    // Ports chosen now; the templates rendered with them; validated again for real.
    let addresses = match allocate(&declared) {
        Ok(a) => Addresses {
            vars,
            pin_ports: true,
            ..a
        },
        Err(e) => return abandon(journal, lock, format!("cannot pick free ports: {e}")),
    };
    let exp = match Experiment::load_rendered(&doc, &addresses) {
        Ok(e) => e,
        Err(e) => return abandon(journal, lock, e.to_string()),
    };
    let stamp = humantime::format_rfc3339_seconds(SystemTime::now())
        .to_string()
        .replace(':', "");
    let report_dir = opts.report_dir.clone().unwrap_or_else(|| {
        opts.state_dir
            .join("reports")
            .join(format!("{}-{stamp}", exp.name))
    });

    let seed = exp.seed.unwrap_or_else(|| {
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
    });
    let ctx = Arc::new(Ctx::new(
        exp,
        seed,
        journal,
        opts.print.clone(),
        report_dir.clone(),
    ));
    let finished = ctx.clone().execute(opts.interrupt).await;
    drop(lock);
    finished
}

/// Gives up before anything started: the journal is closed clean, the lock released.
fn abandon(journal: Journal, lock: Option<Lock>, message: String) -> Finished {
    let _ = journal.finish();
    drop(lock);
    Finished::invalid(message)
}

/// Free ports for everything declared with port 0.
fn allocate(d: &Declared) -> std::io::Result<Addresses> {
    let free = || -> std::io::Result<String> {
        let l = std::net::TcpListener::bind("127.0.0.1:0")?;
        Ok(l.local_addr()?.to_string())
    };
    let mut a = Addresses::default();
    for (name, port, endpoint) in &d.services {
        if *endpoint {
            continue;
        }
        let addr = if *port == 0 {
            free()?
        } else {
            format!("127.0.0.1:{port}")
        };
        a.services.insert(name.clone(), addr);
    }
    for (name, addr) in &d.listeners {
        a.listeners.insert(
            name.clone(),
            if addr.ends_with(":0") {
                free()?
            } else {
                addr.clone()
            },
        );
    }
    for (name, addr) in &d.tcp_proxies {
        a.tcp_proxies.insert(
            name.clone(),
            if addr.ends_with(":0") {
                free()?
            } else {
                addr.clone()
            },
        );
    }
    Ok(a)
}

/// An exclusive lock file holding the owner's pid.
struct Lock {
    path: PathBuf,
}

impl Lock {
    fn take(path: &Path) -> Result<Lock, String> {
        use std::io::Write as _;
        for _ in 0..2 {
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(path)
            {
                Ok(mut f) => {
                    let _ = writeln!(f, "{}", std::process::id());
                    let _ = f.sync_all();
                    return Ok(Lock {
                        path: path.to_owned(),
                    });
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let owner = std::fs::read_to_string(path).unwrap_or_default();
                    let pid: Option<u32> = owner.trim().parse().ok();
                    let running = pid.is_some_and(|p| Path::new(&format!("/proc/{p}")).exists());
                    if running {
                        return Err(format!(
                            "the environment is locked by another run (pid {}, lock {})",
                            owner.trim(),
                            path.display()
                        ));
                    }
                    // The owner is gone: the lock is stale, take it over.
                    let _ = std::fs::remove_file(path);
                }
                Err(e) => return Err(format!("lock {}: {e}", path.display())),
            }
        }
        Err(format!("lock {}: could not be taken", path.display()))
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// A fault that is in place.
#[derive(Debug, Clone)]
struct Applied {
    record: usize,
}

#[derive(Default)]
struct Records {
    steps: Vec<StepRecord>,
    faults: Vec<FaultRecord>,
    slos: Vec<SloRecord>,
    thresholds: Vec<ThresholdRecord>,
    loads: Vec<LoadRecord>,
    guardrails: Vec<GuardrailRecord>,
    events: Vec<(f64, String)>,
    failures: Vec<String>,
    before: Vec<probe::ProbeResult>,
}

struct Ctx {
    exp: Experiment,
    seed: u64,
    start: Instant,
    started_at: String,
    print: Printer,
    report_dir: PathBuf,
    journal: Mutex<Option<Journal>>,
    proxy: Mutex<Option<Proxy>>,
    services: tokio::sync::Mutex<Vec<services::Running>>,
    applied: Mutex<HashMap<String, Applied>>,
    /// Delayed injections and scheduled removals, cancelled at rollback.
    timers: Mutex<Vec<JoinHandle<()>>>,
    records: Mutex<Records>,
    store: Arc<Store>,
    /// The exposition of the load running now (or the last one).
    load_text: Mutex<Option<watch::Receiver<Arc<String>>>>,
    last_load: Mutex<Option<shakedown_load::Report>>,
    /// Set once: why the run is being aborted.
    abort: watch::Sender<Option<String>>,
    /// Whether a `check` judged every SLO after the last load (then the end adds nothing).
    judged_after_load: std::sync::atomic::AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Ctx {
    fn new(
        exp: Experiment,
        seed: u64,
        journal: Journal,
        print: Printer,
        report_dir: PathBuf,
    ) -> Self {
        Ctx {
            exp,
            seed,
            start: Instant::now(),
            started_at: journal::now(),
            print,
            report_dir,
            journal: Mutex::new(Some(journal)),
            proxy: Mutex::new(None),
            services: tokio::sync::Mutex::new(Vec::new()),
            applied: Mutex::new(HashMap::new()),
            timers: Mutex::new(Vec::new()),
            records: Mutex::new(Records::default()),
            store: Arc::new(Store::new(Duration::from_secs(3600))),
            load_text: Mutex::new(None),
            last_load: Mutex::new(None),
            abort: watch::channel(None).0,
            judged_after_load: std::sync::atomic::AtomicBool::new(false),
        }
    }

    fn t(&self) -> f64 {
        self.start.elapsed().as_secs_f64()
    }

    /// A live line, timed and kept for the report.
    fn say(&self, line: impl Into<String>) {
        let line = line.into();
        let t = self.t();
        (self.print)(&format!("[{t:7.2}s] {line}"));
        lock(&self.records).events.push((t, line));
    }

    fn fail(&self, why: impl Into<String>) {
        lock(&self.records).failures.push(why.into());
    }

    fn journal(&self, e: &Entry) -> Result<(), String> {
        match lock(&self.journal).as_mut() {
            Some(j) => j.append(e).map_err(|e| e.to_string()),
            None => Err("the journal is closed".into()),
        }
    }

    fn proxy(&self) -> Option<Proxy> {
        lock(&self.proxy).clone()
    }

    fn abort_with(&self, why: String) {
        self.abort.send_if_modified(|r| {
            if r.is_none() {
                *r = Some(why);
                true
            } else {
                false
            }
        });
    }

    async fn execute(self: Arc<Self>, interrupt: Option<watch::Receiver<bool>>) -> Finished {
        self.say(format!("experiment {} (seed {})", self.exp.name, self.seed));
        if let Some(mut rx) = interrupt {
            let me = self.clone();
            tokio::spawn(async move {
                if rx.wait_for(|v| *v).await.is_ok() {
                    me.abort_with("interrupted (Ctrl-C or SIGTERM)".into());
                }
            });
        }
        let setup = self.clone().setup().await;
        let mut verdict_reason: Option<(Verdict, String)> = None;
        if let Err(e) = setup {
            verdict_reason = Some((Verdict::CouldNotRun, e));
        }
        let scraper = self.clone().scrape();

        let mut hypothesis_before_ok = true;
        if verdict_reason.is_none() {
            let before = self.steady_state("before").await;
            hypothesis_before_ok = before.iter().all(|p| p.ok);
            lock(&self.records).before = before;
            if !hypothesis_before_ok {
                self.fail("the steady-state hypothesis did not hold before the method");
            }
            if hypothesis_before_ok {
                self.method_watched().await;
                self.final_judgement();
            }
        }

        // Rollback: on every path, verified.
        let rollback_failures = self.rollback().await;
        let aborted = self.abort.borrow().clone();
        let after = if verdict_reason.is_none() && hypothesis_before_ok && aborted.is_none() {
            let after = self.steady_state("after").await;
            if !after.iter().all(|p| p.ok) {
                self.fail("the steady-state hypothesis did not hold after recovery");
            }
            after
        } else {
            Vec::new()
        };
        let stopped_ok = self.stop_services().await;
        scraper.abort();
        if let Some(p) = self.proxy() {
            p.shutdown().await;
        }

        let failures = lock(&self.records).failures.clone();
        let (verdict, reason) = if !rollback_failures.is_empty() || !stopped_ok {
            let mut all = rollback_failures.clone();
            if !stopped_ok {
                all.push("a service could not be stopped".into());
            }
            (
                Verdict::RollbackFailed,
                format!("ROLLBACK FAILED: {}", all.join("; ")),
            )
        } else if let Some(vr) = verdict_reason {
            vr
        } else if let Some(why) = aborted {
            if why.starts_with("panic") {
                (Verdict::CouldNotRun, format!("aborted: {why}; rolled back"))
            } else {
                (Verdict::Aborted, format!("aborted: {why}; rolled back"))
            }
        } else if !failures.is_empty() {
            (Verdict::Failed, failures.join("; "))
        } else {
            (
                Verdict::Passed,
                "every SLO, threshold and probe held; every fault rolled back".into(),
            )
        };
        // The journal goes only when nothing is left to undo.
        if verdict != Verdict::RollbackFailed {
            let journal = lock(&self.journal).take();
            if let Some(j) = journal
                && let Err(e) = j.finish()
            {
                self.say(format!("journal: {e}"));
            }
        } else if let Some(j) = lock(&self.journal).as_ref() {
            self.say(format!(
                "the journal stays at {}: run `shakedown recover`",
                j.path().display()
            ));
        }
        self.say(format!("verdict: {verdict:?} — {reason}"));
        let report = self.report(verdict, reason.clone(), after);
        let written = write_reports(&self.report_dir, &report);
        match &written {
            Ok(()) => self.say(format!("reports: {}", self.report_dir.display())),
            Err(e) => self.say(format!("reports could not be written: {e}")),
        }
        Finished {
            verdict,
            message: reason,
            report: Some(report),
            report_dir: written.ok().map(|_| self.report_dir.clone()),
        }
    }

    /// The proxy, then the services in order, each ready before the next.
    async fn setup(self: Arc<Self>) -> Result<(), String> {
        if let Some(config) = &self.exp.proxy {
            let mut config: ProxyConfig = config.clone();
            config.admin = ([127, 0, 0, 1], 0).into();
            config.toxiproxy = None;
            config.seed = Some(config.seed.unwrap_or(self.seed));
            let proxy = Proxy::start(config, ProxyOptions::default())
                .await
                .map_err(|e| format!("the proxy could not start: {e}"))?;
            self.say(format!("proxy up (admin http://{})", proxy.admin_addr()));
            *lock(&self.proxy) = Some(proxy);
        }
        let logs = self.report_dir.join("logs");
        for s in self.exp.services.clone() {
            if matches!(s.kind, ServiceKind::Endpoint) {
                self.say(format!("service {} at {} (existing)", s.name, s.address));
                continue;
            }
            self.start_service(&s, &logs).await?;
        }
        Ok(())
    }

    async fn start_service(
        &self,
        s: &shakedown_model::experiment::Service,
        logs: &Path,
    ) -> Result<(), String> {
        let running = services::spawn(s, logs).map_err(|e| e.to_string())?;
        self.journal(&Entry::ServiceStarted {
            service: s.name.clone(),
            pid: running.pid,
            start_ticks: running.start_ticks,
        })?;
        let pid = running.pid;
        self.services.lock().await.push(running);
        let log = logs.join(format!("{}.log", s.name));
        services::wait_ready(s, &log)
            .await
            .map_err(|e| e.to_string())?;
        self.say(format!(
            "service {} ready on {} (pid {pid})",
            s.name, s.address
        ));
        Ok(())
    }

    /// Samples the proxy's metrics and the load's into the store, once a second.
    fn scrape(self: Arc<Self>) -> JoinHandle<()> {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let mut text = self.proxy().map(|p| p.render_metrics()).unwrap_or_default();
                if let Some(rx) = lock(&self.load_text).as_ref() {
                    text.push('\n');
                    text.push_str(&rx.borrow());
                }
                self.store.ingest(now_ms(), &text);
            }
        })
    }

    async fn steady_state(&self, when: &str) -> Vec<probe::ProbeResult> {
        let mut out = Vec::new();
        for p in &self.exp.steady_state {
            let r = probe::run(p).await;
            self.say(format!(
                "steady state ({when}) {}: {} — {}",
                p.name,
                if r.ok { "ok" } else { "FAILED" },
                r.detail
            ));
            out.push(r);
        }
        out
    }

    /// The method in its own task (a panic there still rolls back), with guardrails and the
    /// abort signal watched beside it.
    async fn method_watched(self: &Arc<Self>) {
        let guards = self.clone().guardrails();
        let me = self.clone();
        let mut method = tokio::spawn(async move {
            let steps = me.exp.method.clone();
            me.steps(&steps, "method").await;
        });
        let mut abort = self.abort.subscribe();
        let aborted = tokio::select! {
            r = &mut method => {
                if let Err(e) = r
                    && e.is_panic()
                {
                    self.abort_with(format!("panic in the method: {e}"));
                }
                false
            }
            _ = abort.wait_for(Option::is_some) => true,
        };
        if aborted {
            method.abort();
            let _ = method.await;
            let why = self.abort.borrow().clone().unwrap_or_default();
            self.say(format!("ABORT: {why}"));
        }
        guards.abort();
    }

    fn steps<'a>(
        self: &'a Arc<Self>,
        steps: &'a [Step],
        path: &'a str,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + 'a>> {
        Box::pin(async move {
            for (i, step) in steps.iter().enumerate() {
                let path = format!("{path}[{i}]");
                self.step(step, &path).await;
            }
        })
    }

    fn step<'a>(
        self: &'a Arc<Self>,
        step: &'a Step,
        path: &'a str,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + 'a>> {
        Box::pin(self.step_inner(step, path))
    }

    async fn step_inner(self: &Arc<Self>, step: &Step, path: &str) {
        let started = self.t();
        let name = step_name(step);
        let (ok, detail) = match step {
            Step::Inject(f) => match self.exp.fault(f).cloned() {
                Some(fault) => self.inject(fault).await,
                None => (false, format!("no fault {f}")),
            },
            Step::Remove(f) => self.remove(f).await,
            Step::Pause(d) => {
                tokio::time::sleep(*d).await;
                (true, String::new())
            }
            Step::Probe(p) => {
                let r = probe::run(p).await;
                self.say(format!(
                    "probe {}: {} — {}",
                    p.name,
                    if r.ok { "ok" } else { "FAILED" },
                    r.detail
                ));
                if !r.ok {
                    self.fail(format!("probe {} failed: {}", p.name, r.detail));
                }
                (r.ok, r.detail)
            }
            Step::Check(names) => self.check(names, path),
            Step::Load(duration) => self.load(*duration).await,
            Step::Parallel(inner) => {
                let mut set = tokio::task::JoinSet::new();
                for (j, s) in inner.iter().cloned().enumerate() {
                    let me = self.clone();
                    let p = format!("{path}.parallel[{j}]");
                    set.spawn(async move { me.step(&s, &p).await });
                }
                while let Some(r) = set.join_next().await {
                    if let Err(e) = r
                        && e.is_panic()
                    {
                        self.abort_with(format!("panic in a parallel step: {e}"));
                    }
                }
                (true, String::new())
            }
        };
        lock(&self.records).steps.push(StepRecord {
            path: path.to_owned(),
            step: name,
            started_s: started,
            took_s: self.t() - started,
            ok,
            detail,
        });
    }

    /// Inject: Init (journal) → Inject → Verify, now or after the fault's start offset; the
    /// Recover is scheduled at the end of its duration.
    async fn inject(self: &Arc<Self>, fault: ExperimentFault) -> (bool, String) {
        let record = {
            let mut r = lock(&self.records);
            r.faults.push(FaultRecord {
                name: fault.name.clone(),
                kind: match fault.kind {
                    FaultKind::Http(_) => "http",
                    FaultKind::Tcp { .. } => "tcp",
                    FaultKind::Process { .. } => "process",
                }
                .into(),
                what: describe(&fault),
                applied_s: None,
                removed_s: None,
                verified_present: false,
                verified_absent: false,
                detail: String::new(),
            });
            r.faults.len() - 1
        };
        self.say(format!("{:<16} init     {}", fault.name, describe(&fault)));
        if fault.start.is_zero() {
            return self.apply(fault, record).await;
        }
        let me = self.clone();
        let name = fault.name.clone();
        let start = fault.start;
        let handle = tokio::spawn(async move {
            tokio::time::sleep(fault.start).await;
            let (ok, detail) = me.apply(fault, record).await;
            if !ok {
                me.fail(detail);
            }
        });
        lock(&self.timers).push(handle);
        (
            true,
            format!("{name} starts in {}", humantime::format_duration(start)),
        )
    }

    async fn apply(self: &Arc<Self>, fault: ExperimentFault, record: usize) -> (bool, String) {
        let deadline =
            humantime::format_rfc3339_millis(SystemTime::now() + fault.duration).to_string();
        let admin = self
            .proxy()
            .map(|p| format!("http://{}", p.admin_addr()))
            .unwrap_or_default();
        // Init: the undo is on disk before the change.
        let undo = match &fault.kind {
            FaultKind::Http(h) => Undo::HttpFault {
                admin: admin.clone(),
                name: h.name.clone(),
            },
            FaultKind::Tcp { proxy, toxic } => Undo::Toxic {
                admin: admin.clone(),
                proxy: proxy.clone(),
                name: toxic.name.clone(),
            },
            FaultKind::Process { service, action } => {
                let services = self.services.lock().await;
                let Some(s) = services.iter().find(|s| s.service.name == *service) else {
                    return (false, format!("service {service} is not running"));
                };
                Undo::Process {
                    pid: s.pid,
                    start_ticks: s.start_ticks,
                    action: action.as_str().into(),
                }
            }
        };
        if let Err(e) = self.journal(&Entry::FaultApplying {
            fault: fault.name.clone(),
            undo,
            deadline,
        }) {
            let msg = format!("{}: not applied, the journal failed: {e}", fault.name);
            self.say(msg.clone());
            self.fail(msg.clone());
            return (false, msg);
        }
        // Inject.
        let applied = match &fault.kind {
            FaultKind::Http(h) => match self.proxy() {
                Some(p) => p
                    .faults()
                    .create(h.clone())
                    .map(|_| ())
                    .map_err(|e| e.to_string()),
                None => Err("no proxy".into()),
            },
            FaultKind::Tcp { proxy, toxic } => match self.proxy() {
                Some(p) => p
                    .tcp()
                    .add_toxic(proxy, toxic.clone())
                    .map(|_| ())
                    .map_err(|e| e.to_string()),
                None => Err("no proxy".into()),
            },
            FaultKind::Process { service, action } => self.signal_service(service, *action).await,
        };
        if let Err(e) = applied {
            let msg = format!("{}: could not be applied: {e}", fault.name);
            self.say(msg.clone());
            self.fail(msg.clone());
            let _ = self.journal(&Entry::FaultRemoved {
                fault: fault.name.clone(),
            });
            return (false, msg);
        }
        let t = self.t();
        lock(&self.applied).insert(fault.name.clone(), Applied { record });
        self.say(format!(
            "{:<16} inject   applied (for {})",
            fault.name,
            humantime::format_duration(fault.duration)
        ));
        // Verify: observed in place.
        let present = self.present(&fault).await;
        {
            let mut r = lock(&self.records);
            r.faults[record].applied_s = Some(t);
            r.faults[record].verified_present = present;
        }
        self.say(format!(
            "{:<16} verify   {}",
            fault.name,
            if present {
                "observed in place"
            } else {
                "NOT observed in place"
            }
        ));
        // Recover at the end of its window.
        let me = self.clone();
        let name = fault.name.clone();
        let duration = fault.duration;
        lock(&self.timers).push(tokio::spawn(async move {
            tokio::time::sleep(duration).await;
            let (ok, detail) = me.remove(&name).await;
            if !ok {
                me.fail(detail);
            }
        }));
        if present {
            (true, "applied and observed".into())
        } else {
            self.fail(format!(
                "{} was applied but not observed in place",
                fault.name
            ));
            (false, "applied but not observed in place".into())
        }
    }

    /// Recover: remove, verify absent, journal.
    async fn remove(&self, name: &str) -> (bool, String) {
        // Taken out of the set only once verified absent: a removal cut short (the fault's own
        // timer aborted at rollback) leaves it for the next attempt.
        let Some(applied) = lock(&self.applied).get(name).cloned() else {
            return (true, format!("{name} is not in place"));
        };
        let Some(fault) = self.exp.fault(name).cloned() else {
            return (false, format!("no fault {name}"));
        };
        let removed: Result<(), String> = match &fault.kind {
            FaultKind::Http(h) => match self.proxy() {
                // Gone already (its deadline) is fine: absence is what is verified.
                Some(p) => {
                    let _ = p.faults().remove(&h.name);
                    Ok(())
                }
                None => Err("no proxy".into()),
            },
            FaultKind::Tcp { proxy, toxic } => match self.proxy() {
                Some(p) => {
                    let _ = p.tcp().remove_toxic(proxy, &toxic.name);
                    Ok(())
                }
                None => Err("no proxy".into()),
            },
            FaultKind::Process { service, action } => self.undo_signal(service, *action).await,
        };
        let absent = removed.is_ok() && self.absent(&fault).await;
        let t = self.t();
        let detail = match (&removed, absent) {
            (Err(e), _) => format!("could not be removed: {e}"),
            (Ok(()), false) => "removed but still observed".to_owned(),
            (Ok(()), true) => String::new(),
        };
        {
            let mut r = lock(&self.records);
            r.faults[applied.record].removed_s = Some(t);
            r.faults[applied.record].verified_absent = absent;
            r.faults[applied.record].detail = detail.clone();
        }
        if absent {
            lock(&self.applied).remove(name);
            let _ = self.journal(&Entry::FaultRemoved {
                fault: name.to_owned(),
            });
            self.say(format!("{name:<16} recover  removed, verified absent"));
            (true, "removed and verified absent".into())
        } else {
            // Kept in the journal: `shakedown recover` will try again.
            self.say(format!("{name:<16} recover  FAILED: {detail}"));
            (false, format!("{name}: {detail}"))
        }
    }

    async fn present(&self, f: &ExperimentFault) -> bool {
        match &f.kind {
            FaultKind::Http(h) => self.proxy().is_some_and(|p| {
                p.faults()
                    .current()
                    .faults
                    .iter()
                    .any(|x| x.spec.name == h.name)
            }),
            FaultKind::Tcp { proxy, toxic } => self
                .proxy()
                .is_some_and(|p| p.tcp().toxic(proxy, &toxic.name).is_ok()),
            FaultKind::Process { service, action } => {
                let services = self.services.lock().await;
                let Some(s) = services.iter().find(|s| s.service.name == *service) else {
                    return false;
                };
                match action {
                    ProcessAction::Pause => services::stopped(s.pid),
                    ProcessAction::Kill | ProcessAction::Terminate => {
                        !services::alive(s.pid, s.start_ticks)
                    }
                    ProcessAction::Restart => services::alive(s.pid, s.start_ticks),
                }
            }
        }
    }

    async fn absent(&self, f: &ExperimentFault) -> bool {
        match &f.kind {
            FaultKind::Process { service, .. } => {
                let services = self.services.lock().await;
                services
                    .iter()
                    .find(|s| s.service.name == *service)
                    .is_some_and(|s| {
                        services::alive(s.pid, s.start_ticks) && !services::stopped(s.pid)
                    })
            }
            _ => !self.present(f).await,
        }
    }

    async fn signal_service(&self, service: &str, action: ProcessAction) -> Result<(), String> {
        let logs = self.report_dir.join("logs");
        let mut services = self.services.lock().await;
        let Some(s) = services.iter_mut().find(|s| s.service.name == service) else {
            return Err(format!("service {service} is not running"));
        };
        let sig = match action {
            ProcessAction::Kill => Signal::KILL,
            ProcessAction::Terminate | ProcessAction::Restart => Signal::TERM,
            ProcessAction::Pause => Signal::STOP,
        };
        services::signal(s.pid, s.start_ticks, sig).map_err(|e| e.to_string())?;
        if action != ProcessAction::Pause
            && let Some(child) = s.child.as_mut()
        {
            let _ = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
        }
        if action == ProcessAction::Restart {
            let spec = s.service.clone();
            let old = s.pid;
            services.retain(|x| x.pid != old);
            drop(services);
            let _ = self.journal(&Entry::ServiceStopped { pid: old });
            self.start_service(&spec, &logs).await?;
        }
        Ok(())
    }

    async fn undo_signal(&self, service: &str, action: ProcessAction) -> Result<(), String> {
        let logs = self.report_dir.join("logs");
        match action {
            ProcessAction::Pause => {
                let services = self.services.lock().await;
                let s = services
                    .iter()
                    .find(|s| s.service.name == service)
                    .ok_or(format!("service {service} is gone"))?;
                services::signal(s.pid, s.start_ticks, Signal::CONT).map_err(|e| e.to_string())?;
                Ok(())
            }
            ProcessAction::Kill | ProcessAction::Terminate => {
                let mut services = self.services.lock().await;
                let Some(pos) = services.iter().position(|s| s.service.name == service) else {
                    return Err(format!("service {service} is unknown"));
                };
                let old = services.remove(pos);
                drop(services);
                let _ = self.journal(&Entry::ServiceStopped { pid: old.pid });
                self.start_service(&old.service, &logs).await
            }
            ProcessAction::Restart => Ok(()),
        }
    }

    /// Judges SLOs now (a `check` step).
    fn check(&self, names: &[String], path: &str) -> (bool, String) {
        let chosen: Vec<_> = self
            .exp
            .slos
            .iter()
            .filter(|s| names.is_empty() || names.contains(&s.name))
            .cloned()
            .collect();
        if chosen.len() == self.exp.slos.len() {
            self.judged_after_load
                .store(true, std::sync::atomic::Ordering::Relaxed);
        }
        let mut ok = true;
        let mut details = Vec::new();
        for slo in &chosen {
            let rec = self.judge(slo, path);
            ok &= rec.outcome == "met";
            details.push(format!("{}: {} ({})", rec.name, rec.outcome, rec.detail));
        }
        (ok, details.join("; "))
    }

    fn judge(&self, slo: &shakedown_model::slo::Slo, by: &str) -> SloRecord {
        let j = match &slo.sli {
            shakedown_model::slo::Sli::Query(_) => {
                shakedown_slo::judge_embedded(slo, &self.store, now_ms())
            }
            _ => match lock(&self.last_load).as_ref() {
                Some(r) => shakedown_slo::judge_load(slo, r),
                None => shakedown_slo::Judgement {
                    name: slo.name.clone(),
                    outcome: Outcome::Unjudged,
                    value: None,
                    detail: "no load has run yet".into(),
                },
            },
        };
        let outcome = match j.outcome {
            Outcome::Met => "met",
            Outcome::Violated => "violated",
            Outcome::Unjudged => "unjudged",
        };
        self.say(format!("slo {}: {outcome} — {}", j.name, j.detail));
        if j.outcome != Outcome::Met {
            self.fail(format!("SLO {} {outcome}: {}", j.name, j.detail));
        }
        let rec = SloRecord {
            name: j.name,
            outcome: outcome.into(),
            value: j.value,
            detail: j.detail,
            at_s: self.t(),
            by: by.to_owned(),
        };
        lock(&self.records).slos.push(rec.clone());
        rec
    }

    /// Every SLO at the end of the method (no data counts as failure, as in seed 000).
    fn final_judgement(&self) {
        use std::sync::atomic::Ordering;
        if self.abort.borrow().is_some() || self.judged_after_load.load(Ordering::Relaxed) {
            return;
        }
        // One more sample, so the last seconds of the method count.
        let mut text = self.proxy().map(|p| p.render_metrics()).unwrap_or_default();
        if let Some(rx) = lock(&self.load_text).as_ref() {
            text.push('\n');
            text.push_str(&rx.borrow());
        }
        self.store.ingest(now_ms(), &text);
        for slo in self.exp.slos.clone() {
            self.judge(&slo, "final");
        }
    }

    async fn load(self: &Arc<Self>, duration: Option<Duration>) -> (bool, String) {
        let Some(mut spec) = self.exp.load.clone() else {
            return (false, "no load".into());
        };
        if let Some(d) = duration {
            spec.scenario = spec.scenario.with_duration(d);
        }
        let (tx, rx) = watch::channel(Arc::new(String::new()));
        *lock(&self.load_text) = Some(rx);
        self.judged_after_load
            .store(false, std::sync::atomic::Ordering::Relaxed);
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut abort = self.abort.subscribe();
        let stopper = tokio::spawn(async move {
            if abort.wait_for(Option::is_some).await.is_ok() {
                let _ = stop_tx.send(true);
            }
        });
        let started = self.t();
        self.say(format!(
            "load     {}",
            shakedown_load::run::describe(&spec.scenario)
        ));
        let print = self.print.clone();
        let t0 = self.start;
        let mut last = Instant::now();
        let progress: shakedown_load::run::ProgressFn = Box::new(move |p| {
            if last.elapsed() >= Duration::from_secs(5) {
                last = Instant::now();
                print(&format!(
                    "[{:7.2}s] load     {:.0}/{:.0}s {:.0} req/s, {} failed, p99 {:.1} ms",
                    t0.elapsed().as_secs_f64(),
                    p.elapsed.as_secs_f64(),
                    p.planned.as_secs_f64(),
                    p.rate,
                    p.failed,
                    p.p99_ms
                ));
            }
        });
        let result = shakedown_load::run(
            &spec,
            shakedown_load::RunOptions {
                progress: Some(progress),
                interrupt: Some(stop_rx),
                publish: Some(tx),
                ..Default::default()
            },
        )
        .await;
        stopper.abort();
        let report = match result {
            Ok(r) => r,
            Err(e) => {
                self.fail(format!("the load could not run: {e}"));
                return (false, e.to_string());
            }
        };
        let s = &report.samples;
        let failed = s.failed.value().unwrap_or(0.0);
        let line = format!(
            "{} requests, {:.2}% failed, p50 {:.1} ms, p95 {:.1} ms, p99 {:.1} ms ({})",
            s.http_reqs,
            failed * 100.0,
            s.duration.percentile_ms(50.0),
            s.duration.percentile_ms(95.0),
            s.duration.percentile_ms(99.0),
            report.stop
        );
        self.say(format!("load     done: {line}"));
        let mut ok = true;
        {
            let mut r = lock(&self.records);
            for v in &report.verdicts {
                if !v.ok {
                    ok = false;
                    r.failures.push(format!(
                        "threshold {} '{}' crossed ({})",
                        v.metric, v.source, v.shown
                    ));
                }
                r.thresholds.push(ThresholdRecord {
                    metric: v.metric.clone(),
                    expression: v.source.clone(),
                    ok: v.ok,
                    observed: v.shown.clone(),
                });
            }
            r.loads.push(LoadRecord {
                started_s: started,
                scenario: report.scenario.clone(),
                requests: s.http_reqs,
                failed_ratio: failed,
                p50_ms: s.duration.percentile_ms(50.0),
                p95_ms: s.duration.percentile_ms(95.0),
                p99_ms: s.duration.percentile_ms(99.0),
                series: report.series.points.clone(),
            });
        }
        for v in &report.verdicts {
            self.say(format!(
                "threshold {} {}: {} ({})",
                v.metric,
                v.source,
                if v.ok { "held" } else { "CROSSED" },
                v.shown
            ));
        }
        *lock(&self.last_load) = Some(report);
        (ok, line)
    }

    /// Watches every guardrail at its interval; a trip aborts the run.
    fn guardrails(self: Arc<Self>) -> JoinHandle<()> {
        tokio::spawn(async move {
            if self.exp.guardrails.is_empty() {
                return;
            }
            {
                let mut r = lock(&self.records);
                for g in &self.exp.guardrails {
                    r.guardrails.push(GuardrailRecord {
                        name: g.name.clone(),
                        tripped: false,
                        checks: 0,
                        detail: String::new(),
                    });
                }
            }
            let mut misses = vec![0u32; self.exp.guardrails.len()];
            let mut next: Vec<Instant> = self
                .exp
                .guardrails
                .iter()
                .map(|g| Instant::now() + g.every)
                .collect();
            loop {
                let (i, at) = next
                    .iter()
                    .enumerate()
                    .min_by_key(|(_, t)| **t)
                    .map(|(i, t)| (i, *t))
                    .unwrap_or((0, Instant::now()));
                tokio::time::sleep_until(at.into()).await;
                let g = &self.exp.guardrails[i];
                next[i] = Instant::now() + g.every;
                let (bad, detail) = match &g.watch {
                    GuardrailWatch::Query {
                        query,
                        op,
                        threshold,
                    } => {
                        match shakedown_slo::eval::instant(&self.store, query, now_ms()) {
                            Ok(QueryResult::Scalar(_, v)) => (
                                !op.holds(v, *threshold),
                                format!("{v} {} {threshold}", op.as_str()),
                            ),
                            Ok(QueryResult::Vector(v)) if !v.is_empty() => {
                                let worst =
                                    v.iter().map(|s| s.2).find(|x| !op.holds(*x, *threshold));
                                let shown = v
                                    .iter()
                                    .map(|s| format!("{:.4}", s.2))
                                    .collect::<Vec<_>>()
                                    .join(", ");
                                match worst {
                                    Some(x) => {
                                        (true, format!("{x:.4} not {} {threshold}", op.as_str()))
                                    }
                                    None => (false, format!("{shown} {} {threshold}", op.as_str())),
                                }
                            }
                            // No data yet is not a breach.
                            Ok(_) => (false, "no data yet".into()),
                            Err(e) => (false, format!("not evaluated: {e}")),
                        }
                    }
                    GuardrailWatch::Probe(p) => {
                        let r = probe::run(p).await;
                        (!r.ok, r.detail)
                    }
                    GuardrailWatch::BurnRate {
                        error_ratio,
                        objective,
                        factor,
                        long,
                        short,
                    } => {
                        let w = shakedown_slo::burn::BurnWindow {
                            severity: "page",
                            budget_percent: 0.0,
                            long: *long,
                            short: *short,
                            factor: *factor,
                        };
                        let ratio = |d: &Duration| {
                            let q = error_ratio
                                .replace("{{window}}", &shakedown_model::slo::prom_duration(*d));
                            match shakedown_slo::eval::instant(&self.store, &q, now_ms()) {
                                Ok(QueryResult::Scalar(_, v)) => Some(v),
                                Ok(QueryResult::Vector(v)) => {
                                    v.iter().map(|s| s.2).reduce(f64::max)
                                }
                                _ => None,
                            }
                        };
                        match (ratio(long), ratio(short)) {
                            (Some(l), Some(s)) if l.is_finite() && s.is_finite() => {
                                let limit = shakedown_slo::burn::threshold(&w, *objective);
                                (
                                    shakedown_slo::burn::burning(&w, *objective, l, s),
                                    format!(
                                        "error ratio {l:.4} over {}, {s:.4} over {} (limit {limit:.4}: {factor}× the budget of {objective})",
                                        humantime::format_duration(*long),
                                        humantime::format_duration(*short)
                                    ),
                                )
                            }
                            _ => (false, "no data yet".into()),
                        }
                    }
                };
                misses[i] = if bad { misses[i] + 1 } else { 0 };
                let tripped = misses[i] >= g.failures;
                {
                    let mut r = lock(&self.records);
                    let rec = &mut r.guardrails[i];
                    rec.checks += 1;
                    rec.detail = detail.clone();
                    rec.tripped |= tripped;
                }
                if tripped {
                    self.say(format!("guardrail {} tripped: {detail}", g.name));
                    self.abort_with(format!("guardrail {} tripped: {detail}", g.name));
                    return;
                }
            }
        })
    }

    /// Undoes every fault still in place; returns what could not be undone.
    async fn rollback(&self) -> Vec<String> {
        for t in lock(&self.timers).drain(..) {
            t.abort();
        }
        let names: Vec<String> = lock(&self.applied).keys().cloned().collect();
        let mut failed = Vec::new();
        for name in names {
            let (ok, detail) = self.remove(&name).await;
            if !ok {
                failed.push(detail);
            }
        }
        failed
    }

    async fn stop_services(&self) -> bool {
        let mut services = self.services.lock().await;
        let mut ok = true;
        for s in services.iter_mut().rev() {
            services::stop(s, Duration::from_secs(5)).await;
            if services::alive(s.pid, s.start_ticks) {
                ok = false;
                self.say(format!(
                    "service {} (pid {}) is still running",
                    s.service.name, s.pid
                ));
            } else {
                let _ = self.journal(&Entry::ServiceStopped { pid: s.pid });
            }
        }
        services.clear();
        ok
    }

    fn report(
        &self,
        verdict: Verdict,
        reason: String,
        after: Vec<probe::ProbeResult>,
    ) -> RunReport {
        let r = lock(&self.records);
        RunReport {
            experiment: self.exp.name.clone(),
            description: self.exp.description.clone(),
            started_at: self.started_at.clone(),
            duration_s: self.t(),
            seed: self.seed,
            verdict,
            exit_code: verdict.exit_code(),
            reason,
            steady_state_before: r.before.clone(),
            steady_state_after: after,
            steps: r.steps.clone(),
            faults: r.faults.clone(),
            slos: r.slos.clone(),
            thresholds: r.thresholds.clone(),
            loads: r.loads.clone(),
            guardrails: r.guardrails.clone(),
            events: r.events.clone(),
        }
    }
}

fn write_reports(dir: &Path, report: &RunReport) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let json = serde_json::to_string_pretty(report).map_err(std::io::Error::other)?;
    std::fs::write(dir.join("report.json"), json + "\n")?;
    std::fs::write(dir.join("junit.xml"), report::junit(report))?;
    std::fs::write(dir.join("report.html"), html::html(report))?;
    Ok(())
}
