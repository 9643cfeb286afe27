//! `shakedown run` end to end, as a CI stage runs it: the demo in both modes, every exit code,
//! a guardrail abort that rolls back, a run killed with SIGKILL in the middle of an injection
//! and `shakedown recover`, and an invalid experiment refused before anything starts.
//!
//! Every service, proxy and load here is on 127.0.0.1 with ports chosen at start; every run is
//! bounded by its own durations and by a timeout here.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_shakedown"));
    c.args(["--log", "warn"]).stdin(Stdio::null());
    c
}

fn temp(tag: &str) -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    let dir = std::env::temp_dir().join(format!(
        "shakedown-exp-{tag}-{}-{nanos}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs `shakedown run FILE ARGS…` with its state and reports in `dir`, bounded.
fn run(dir: &Path, file: &Path, args: &[&str]) -> Output {
    let mut child = bin()
        .arg("run")
        .arg(file)
        .arg("--state-dir")
        .arg(dir.join("state"))
        .arg("--report-dir")
        .arg(dir.join("report"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("shakedown run did not finish in 120 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

fn report(dir: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(dir.join("report/report.json")).expect("report.json");
    serde_json::from_str(&text).unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn demo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/seed-000/experiment.yaml")
}

/// The shipped demo, shortened: the resilient search passes, the fragile one fails on seed
/// 000's k6 thresholds.
#[test]
fn the_demo_passes_with_resilience_and_fails_without() {
    let dir = temp("demo-on");
    let out = run(&dir, &demo(), &["--set", "duration=5s"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let r = report(&dir);
    assert_eq!(r["verdict"], "passed");
    assert_eq!(r["faults"][0]["verified_present"], true);
    assert_eq!(r["faults"][0]["verified_absent"], true);
    assert!(
        r["slos"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["outcome"] == "met"),
        "{}",
        r["slos"]
    );
    let junit = std::fs::read_to_string(dir.join("report/junit.xml")).unwrap();
    assert!(junit.contains("failures=\"0\""), "{junit}");
    assert!(junit.contains("classname=\"seed-000.slo\" name=\"search-p99-latency-ms\""));
    assert!(
        !dir.join("state/journal.jsonl").exists(),
        "a clean run leaves no journal"
    );

    let dir = temp("demo-off");
    let out = run(
        &dir,
        &demo(),
        &["--set", "duration=5s", "--set", "resilience=off"],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let r = report(&dir);
    assert_eq!(r["verdict"], "failed");
    let crossed: Vec<_> = r["thresholds"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["ok"] == false)
        .collect();
    assert_eq!(crossed.len(), 2, "{}", r["thresholds"]);
    assert_eq!(
        r["faults"][0]["verified_absent"], true,
        "rolled back on failure too"
    );
    let junit = std::fs::read_to_string(dir.join("report/junit.xml")).unwrap();
    assert!(junit.contains("<failure message=\"crossed: "), "{junit}");
}

#[test]
fn an_invalid_experiment_lists_every_error_and_starts_nothing() {
    let dir = temp("invalid");
    let file = dir.join("bad.yaml");
    // Never started: an ephemeral port this test holds stands for the upstream.
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    // An unknown field, a percentage over 100, a negative duration, a fault on a TCP proxy that
    // does not exist, a step naming a fault that does not exist: all reported at once.
    std::fs::write(
        &file,
        r#"apiVersion: shakedown.dev/v1alpha1
kind: Experiment
metadata: {name: bad}
spec:
  colour: red
  proxy:
    listeners:
      - {name: out, address: 127.0.0.1:0, routes: [{match: {prefix: /}, cluster: up}]}
    clusters:
      - {name: up, endpoints: ["UPSTREAM"]}
  faults:
    - name: too-much
      duration: 10s
      http: {listeners: [out], abort: {http_status: 503, percentage: 150}}
    - name: backwards
      duration: -5s
      http: {listeners: [out], abort: {http_status: 503}}
    - name: nowhere
      duration: 10s
      tcp: {proxy: no-such-proxy, toxic: {type: latency, attributes: {latency: 10}}}
  method:
    - inject: too-much
    - inject: not-a-fault
"#
        .replace("UPSTREAM", &held.local_addr().unwrap().to_string()),
    )
    .unwrap();
    let out = run(&dir, &file, &[]);
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    for want in [
        "bad.yaml:5:",
        "spec.colour: unknown field `colour`",
        "bad.yaml:14:",
        "spec.faults[0].http.abort.percentage",
        "bad.yaml:16:",
        "spec.faults[1].duration",
        "bad.yaml:20:",
        "spec.faults[2].tcp.proxy: no TCP proxy `no-such-proxy`",
        "spec.method[1].inject: no fault `not-a-fault`",
    ] {
        assert!(err.contains(want), "missing `{want}` in:\n{err}");
    }
    assert!(!dir.join("state/journal.jsonl").exists(), "nothing started");
    assert!(!dir.join("report").exists(), "nothing started");
}

/// A recommendation service behind the proxy (and a second one beside it); `faults` and
/// `method` filled in per test.
fn small(name: &str, faults: &str, method: &str, extra: &str) -> String {
    format!(
        r#"apiVersion: shakedown.dev/v1alpha1
kind: Experiment
metadata: {{name: {name}}}
spec:
  seed: 3
  services:
    - name: rec
      command: shakedown
      args: [demo, recommendation, --listen, "{{{{services.rec.address}}}}"]
      ready: {{http: /health}}
    - name: other
      command: shakedown
      args: [demo, recommendation, --listen, "{{{{services.other.address}}}}"]
      ready: {{http: /health}}
  proxy:
    listeners:
      - {{name: out, address: 127.0.0.1:0, routes: [{{match: {{prefix: /}}, cluster: rec}}]}}
    clusters:
      - {{name: rec, endpoints: ["{{{{services.rec.address}}}}"]}}
  faults:
{faults}
  method:
{method}
{extra}"#
    )
}

#[test]
fn a_guardrail_aborts_the_run_and_rollback_runs() {
    let dir = temp("guardrail");
    let file = dir.join("g.yaml");
    std::fs::write(
        &file,
        small(
            "guarded",
            "    - {name: down, duration: 1m, http: {listeners: [out], abort: {http_status: 503}}}",
            "    - inject: down\n    - pause: 30s",
            "  guardrails:\n    - name: recommendations-answer\n      probe: {name: rec, http: \"{{listeners.out.url}}/recommendations?q=x\", status: 200, timeout: 1s}\n      every: 200ms\n      failures: 2\n",
        ),
    )
    .unwrap();
    let start = Instant::now();
    let out = run(&dir, &file, &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        start.elapsed() < Duration::from_secs(20),
        "aborted, not waited out"
    );
    let r = report(&dir);
    assert_eq!(r["verdict"], "aborted");
    assert_eq!(r["guardrails"][0]["tripped"], true);
    assert_eq!(r["faults"][0]["verified_absent"], true, "{}", r["faults"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("recover  removed, verified absent"),
        "{stdout}"
    );
}

#[test]
fn a_rollback_that_cannot_be_verified_exits_3_and_keeps_the_journal() {
    let dir = temp("rollback");
    let flag = dir.join("started-once");
    let file = dir.join("r.yaml");
    // A service that starts only once: killing it is a fault whose recovery (starting it
    // again) fails.
    let yaml = format!(
        r#"apiVersion: shakedown.dev/v1alpha1
kind: Experiment
metadata: {{name: once}}
spec:
  services:
    - name: once
      command: sh
      args: [-c, 'test -e {flag} && exit 1; touch {flag}; exec "$0" demo recommendation --listen "$1"', "{shakedown}", "{{{{services.once.address}}}}"]
      ready: {{http: /health, timeout: 2s}}
  faults:
    - {{name: kill-it, duration: 1s, process: {{service: once, action: kill}}}}
  method:
    - inject: kill-it
    - pause: 2s
"#,
        flag = flag.display(),
        shakedown = env!("CARGO_BIN_EXE_shakedown"),
    );
    std::fs::write(&file, yaml).unwrap();
    let out = run(&dir, &file, &[]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(text(&out).contains("ROLLBACK FAILED"), "{}", text(&out));
    assert!(
        dir.join("state/journal.jsonl").exists(),
        "kept for `shakedown recover`"
    );
    let r = report(&dir);
    assert_eq!(r["verdict"], "rollback_failed");
    // The next run refuses until recovered; recovery clears it.
    let again = run(&dir, &file, &[]);
    assert_eq!(again.status.code(), Some(4));
    assert!(
        text(&again).contains("shakedown recover"),
        "{}",
        text(&again)
    );
    let rec = bin()
        .args(["recover", "--state-dir"])
        .arg(dir.join("state"))
        .output()
        .unwrap();
    assert_eq!(rec.status.code(), Some(0), "{}", text(&rec));
    assert!(!dir.join("state/journal.jsonl").exists());
}

/// SIGKILL in the middle of an injection: the fault dies with the run's proxy, the services the
/// run started are left running — until `shakedown recover` reads the journal and stops them.
#[test]
fn a_run_killed_mid_injection_is_recovered_from_its_journal() {
    let dir = temp("sigkill");
    let file = dir.join("k.yaml");
    std::fs::write(
        &file,
        small(
            "killed",
            "    - {name: slow, duration: 3s, http: {listeners: [out], delay: {fixed_delay: 100ms}}}\n    - {name: frozen, duration: 1m, process: {service: rec, action: pause}}",
            "    - inject: slow\n    - inject: frozen\n    - pause: 60s",
            "",
        ),
    )
    .unwrap();
    let mut child = bin()
        .arg("run")
        .arg(&file)
        .arg("--state-dir")
        .arg(dir.join("state"))
        .arg("--report-dir")
        .arg(dir.join("report"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let mut admin = String::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        assert!(Instant::now() < deadline, "the run never injected");
        let line = lines.next().expect("output").unwrap();
        if let Some(rest) = line.split("proxy up (admin ").nth(1) {
            admin = rest
                .trim_end_matches(')')
                .trim_start_matches("http://")
                .to_owned();
        }
        if line.contains("frozen") && line.contains("verify") {
            break;
        }
    }
    child.kill().unwrap(); // SIGKILL: no rollback ran
    child.wait().unwrap();

    // The journal lists both faults and both services.
    let journal = std::fs::read_to_string(dir.join("state/journal.jsonl")).unwrap();
    assert!(
        journal.contains("\"fault\":\"slow\"") && journal.contains("\"fault\":\"frozen\""),
        "{journal}"
    );
    let pids: Vec<u32> = journal
        .lines()
        .filter(|l| l.contains("service-started"))
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["pid"].as_u64())
        .map(|p| p as u32)
        .collect();
    assert_eq!(pids.len(), 2, "{journal}");
    let running = |pid: u32| {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .is_ok_and(|s| !s.contains(") Z ") && !s.contains(") X "))
    };
    // The HTTP fault is gone with the proxy that held it. The paused service is gone too: its
    // process group was orphaned while stopped, and the kernel hangs such groups up. The other
    // service is left running.
    assert!(
        std::net::TcpStream::connect(&admin).is_err(),
        "the proxy died with the run"
    );
    let gone_paused = (0..100).any(|_| {
        std::thread::sleep(Duration::from_millis(20));
        !running(pids[0])
    });
    assert!(gone_paused, "the paused service did not outlive the run");
    assert!(running(pids[1]), "the other service is left behind");

    let again = run(&dir, &file, &[]);
    assert_eq!(again.status.code(), Some(4));
    assert!(
        text(&again).contains("run `shakedown recover` first"),
        "{}",
        text(&again)
    );

    let rec = bin()
        .args(["recover", "--state-dir"])
        .arg(dir.join("state"))
        .output()
        .unwrap();
    let said = text(&rec);
    assert_eq!(rec.status.code(), Some(0), "{said}");
    assert!(said.contains("fault slow: the proxy is gone"), "{said}");
    assert!(said.contains("fault frozen:"), "{said}");
    assert!(
        said.contains("service rec (pid") && said.contains("already gone"),
        "{said}"
    );
    assert!(
        said.contains("service other (pid") && said.contains("stopped"),
        "{said}"
    );
    assert!(!running(pids[1]), "the leftover service is gone");
    assert!(!dir.join("state/journal.jsonl").exists(), "journal cleared");
    // Nothing left to recover: a second recover says so.
    let rec = bin()
        .args(["recover", "--state-dir"])
        .arg(dir.join("state"))
        .output()
        .unwrap();
    assert_eq!(rec.status.code(), Some(0));
    assert!(text(&rec).contains("nothing to recover"));
}

#[test]
fn a_locked_environment_is_refused_and_dry_run_starts_nothing() {
    let dir = temp("lock");
    let lock = dir.join("env.lock");
    // Held by a live process: this test's.
    std::fs::write(&lock, format!("{}\n", std::process::id())).unwrap();
    let file = dir.join("l.yaml");
    std::fs::write(
        &file,
        format!(
            "apiVersion: shakedown.dev/v1alpha1\nkind: Experiment\nmetadata: {{name: locked}}\nspec:\n  lock: {{path: {}}}\n  method: [{{pause: 10ms}}]\n",
            lock.display()
        ),
    )
    .unwrap();
    let out = run(&dir, &file, &[]);
    assert_eq!(out.status.code(), Some(4));
    assert!(
        text(&out).contains("locked by another run"),
        "{}",
        text(&out)
    );
    // A stale lock (its owner is gone) is taken over, and released at the end.
    std::fs::write(&lock, "999999999\n").unwrap();
    let out = run(&dir, &file, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(!lock.exists());

    let out = run(&dir, &demo(), &["--dry-run"]);
    assert_eq!(out.status.code(), Some(0));
    let plan = String::from_utf8_lossy(&out.stdout);
    assert!(
        plan.contains("inject seed-000") && plan.contains("nothing was started"),
        "{plan}"
    );
}

/// The shipped sweep, shortened: the search finds the breaking point of the fragile search
/// service's 5xx SLO (< 15 %) between two grid steps, in fewer runs than the grid.
#[test]
fn the_sweep_finds_the_breaking_point_in_fewer_runs_than_a_grid() {
    let dir = temp("sweep");
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/seed-000/sweep.yaml");
    // A coarse, short version of the example: 0–40 % in steps of 10, 2 runs at each side.
    let text = std::fs::read_to_string(&file)
        .unwrap()
        .replace(
            "search: {min: 0, max: 50, resolution: 2.5, repeats: 3}",
            "search: {min: 0, max: 40, resolution: 10, repeats: 2}",
        )
        .replace("duration: 4s", "duration: 2s");
    let short = dir.join("sweep.yaml");
    std::fs::write(&short, text).unwrap();
    let out = run(&dir, &short, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text_of(&out));
    let sweep: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("report/sweep.json")).unwrap())
            .unwrap();
    assert_eq!(sweep["last_pass"], 10.0, "{sweep:#}");
    assert_eq!(sweep["first_fail"], 20.0, "{sweep:#}");
    let runs = sweep["runs"].as_u64().unwrap();
    assert!(runs < sweep["grid_runs"].as_u64().unwrap(), "{runs} runs");
    assert!(
        sweep["summary"]
            .as_str()
            .unwrap()
            .contains("between 10 (2/2 passed"),
        "{sweep:#}"
    );
}

fn text_of(o: &Output) -> String {
    text(o)
}

/// A burn-rate guardrail (the SRE workbook's two windows, scaled to seconds) stops a run whose
/// errors spend the budget too fast, interrupting the load, and the fault is rolled back.
#[test]
fn a_burn_rate_guardrail_stops_the_load_and_rolls_back() {
    let dir = temp("burn");
    let file = dir.join("b.yaml");
    let ratio = r#"sum(rate(envoy_http_downstream_rq_xx{envoy_http_conn_manager_prefix=\"out\", envoy_response_code_class=\"5\"}[{{window}}])) / sum(rate(envoy_http_downstream_rq_total{envoy_http_conn_manager_prefix=\"out\"}[{{window}}]))"#;
    std::fs::write(
        &file,
        small(
            "burning",
            "    - {name: half-down, duration: 1m, http: {listeners: [out], abort: {http_status: 503, percentage: 50}}}",
            "    - inject: half-down\n    - load: {}",
            &format!(
                "  load:\n    target: \"{{{{listeners.out.url}}}}\"\n    requests: [{{path: /recommendations}}]\n    scenario: {{executor: constant-arrival-rate, rate: 50, duration: 30s}}\n  guardrails:\n    - name: error-budget\n      burn_rate: {{error_ratio: \"{ratio}\", objective: 0.99, factor: 14.4, long: 10s, short: 3s}}\n      every: 1s\n"
            ),
        ),
    )
    .unwrap();
    let start = Instant::now();
    let out = run(&dir, &file, &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        start.elapsed() < Duration::from_secs(25),
        "the load was cut short"
    );
    let r = report(&dir);
    assert_eq!(r["guardrails"][0]["tripped"], true, "{}", r["guardrails"]);
    assert!(
        r["guardrails"][0]["detail"]
            .as_str()
            .unwrap()
            .contains("14.4×")
    );
    assert_eq!(r["faults"][0]["verified_absent"], true);
}

/// A `load` step may run the scenario for another duration (its shape scaled).
#[test]
fn a_load_step_can_shorten_the_scenario() {
    let dir = temp("load-duration");
    let file = dir.join("l.yaml");
    std::fs::write(
        &file,
        small(
            "short-load",
            "    - {name: unused, duration: 1s, http: {listeners: [out], delay: {fixed_delay: 1ms}}}",
            "    - load: {duration: 1s}",
            "  load:\n    target: \"{{listeners.out.url}}\"\n    requests: [{path: /recommendations}]\n    scenario: {executor: constant-arrival-rate, rate: 20, duration: 60s}\n",
        ),
    )
    .unwrap();
    let start = Instant::now();
    let out = run(&dir, &file, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        start.elapsed() < Duration::from_secs(15),
        "ran 1 s, not 60 s"
    );
    let r = report(&dir);
    let requests = r["loads"][0]["requests"].as_u64().unwrap();
    assert!((15..=25).contains(&requests), "20/s for 1 s: {requests}");
}
