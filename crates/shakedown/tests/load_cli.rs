//! Black-box tests of `shakedown load`: k6's exit codes (0, 99, 104, 105), the summary, the
//! JSON export and `load merge`. The upstream is an in-process stub on 127.0.0.1:0.

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use shakedown_testkit::Stub;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_shakedown"))
}

fn temp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("shakedown-load-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

/// Runs the binary on a blocking thread so the in-process stub keeps serving.
async fn load(args: Vec<String>) -> Output {
    tokio::task::spawn_blocking(move || bin().arg("load").arg("-q").args(args).output().unwrap())
        .await
        .unwrap()
}

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

fn json(path: &PathBuf) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thresholds_that_hold_exit_0_and_export_k6s_shape() {
    let stub = Stub::start().await.unwrap();
    let export = temp("pass.json");
    let url = format!("http://{}/", stub.addr());
    let out = load(s(&[
        &url,
        "--rate",
        "100",
        "-d",
        "1s",
        "--check-status",
        "200",
        "-t",
        "http_req_duration=p(95)<500",
        "-t",
        "http_req_failed=rate<0.01",
        "--summary-export",
        export.to_str().unwrap(),
    ]))
    .await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("█ THRESHOLDS"), "{stdout}");
    assert!(stdout.contains("✓ 'p(95)<500' p(95)="), "{stdout}");
    assert!(stdout.contains("✓ status is 200"), "{stdout}");
    let e = json(&export);
    let m = &e["metrics"];
    assert_eq!(m["http_reqs"]["count"], 100);
    assert_eq!(m["http_req_failed"]["passes"], 0);
    assert_eq!(m["http_req_failed"]["fails"], 100);
    // k6's export: `false` = the threshold did not fail.
    assert_eq!(m["http_req_duration"]["thresholds"]["p(95)<500"], false);
    assert!(m["http_req_duration"]["p(99)"].as_f64().unwrap() > 0.0);
    assert_eq!(m["checks"]["passes"], 100);
    assert_eq!(e["root_group"]["checks"]["status is 200"]["passes"], 100);
    assert!(
        e["shakedown"]["samples"]["histograms"]["http_req_duration"]["hdr"]
            .as_str()
            .unwrap()
            .starts_with("HISTF")
    );
    assert!(e["state"]["testRunDurationMs"].as_f64().unwrap() >= 1000.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crossed_threshold_exits_99() {
    let stub = Stub::start().await.unwrap();
    let url = format!("http://{}/x?status=503", stub.addr());
    let out = load(s(&[
        &url,
        "--vus",
        "2",
        "-d",
        "500ms",
        "-t",
        "http_req_failed=rate<0.01",
    ]))
    .await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(99), "{stdout}");
    assert!(stdout.contains("✗ 'rate<0.01' rate=100.00%"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abort_on_fail_exits_99_early() {
    let stub = Stub::start().await.unwrap();
    let url = format!("http://{}/x?status=500", stub.addr());
    let started = Instant::now();
    let out = load(s(&[
        &url,
        "--rate",
        "50",
        "-d",
        "60s",
        "-t",
        "http_req_failed=rate<0.5!",
    ]))
    .await;
    assert_eq!(out.status.code(), Some(99));
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("aborted: threshold http_req_failed 'rate<0.5' crossed"),
        "{stdout}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_input_exits_104_naming_flag_or_file_line() {
    // A port nothing listens on: every case must stop before any request.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let target = format!("http://127.0.0.1:{port}/");
    let out = load(s(&[&target, "--rate", "0"])).await;
    assert_eq!(out.status.code(), Some(104));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--rate: must be a number > 0"));

    let out = load(s(&[&target, "-t", "http_req_duration=p(95)<<5"])).await;
    assert_eq!(out.status.code(), Some(104));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not a number"));

    let file = temp("bad.yaml");
    std::fs::write(
        &file,
        format!("target: {target}\nscenario:\n  executor: constant-vus\n  vus: 2\n  duration: 1s\nthresholds:\n  http_req_duration: ['p(95)<500', 'avg']\n"),
    )
    .unwrap();
    let out = load(vec!["--config".into(), file.display().to_string()]).await;
    assert_eq!(out.status.code(), Some(104));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "{}:7:36: thresholds.http_req_duration[1]:",
            file.display()
        )),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_stops_cleanly_prints_the_summary_and_exits_105() {
    let stub = Stub::start().await.unwrap();
    let url = format!("http://{}/", stub.addr());
    let out = tokio::task::spawn_blocking(move || {
        let child = bin()
            .args(["load", "-q", &url, "--rate", "100", "-d", "60s"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(800));
        Command::new("kill")
            .args(["-INT", &child.id().to_string()])
            .status()
            .unwrap();
        child.wait_with_output().unwrap()
    })
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(105));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("interrupted") && stdout.contains("http_reqs"),
        "{stdout}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn merge_adds_runs_and_judges_the_thresholds_again() {
    let stub = Stub::start().await.unwrap();
    let (a, b, merged) = (temp("a.json"), temp("b.json"), temp("merged.json"));
    for (path, query, rate) in [(&a, "", "100"), (&b, "?status=503", "50")] {
        let url = format!("http://{}/{query}", stub.addr());
        let out = load(s(&[
            &url,
            "--rate",
            rate,
            "-d",
            "1s",
            "-t",
            "http_req_failed=rate<0.5",
            "--summary-export",
            path.to_str().unwrap(),
        ]))
        .await;
        assert!(matches!(out.status.code(), Some(0 | 99)));
    }
    let out = tokio::task::spawn_blocking({
        let (a, b, merged) = (a.clone(), b.clone(), merged.clone());
        move || {
            bin()
                .args(["load", "merge"])
                .arg(&a)
                .arg(&b)
                .arg("--summary-export")
                .arg(&merged)
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    // 50 of 150 failed: rate 0.33 < 0.5 holds on the merge, though run b alone crossed it.
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let (ja, jb, jm) = (json(&a), json(&b), json(&merged));
    assert_eq!(
        jb["metrics"]["http_req_failed"]["thresholds"]["rate<0.5"],
        true
    );
    assert_eq!(jm["metrics"]["http_reqs"]["count"], 150);
    assert_eq!(jm["metrics"]["http_req_failed"]["passes"], 50);
    let max = |j: &Value| j["metrics"]["http_req_duration"]["max"].as_f64().unwrap();
    assert_eq!(max(&jm), max(&ja).max(max(&jb)));
    assert_eq!(
        jm["metrics"]["http_req_failed"]["thresholds"]["rate<0.5"],
        false
    );

    let junk = temp("junk.json");
    std::fs::write(&junk, "{\"metrics\": {}}").unwrap();
    let out = bin().args(["load", "merge"]).arg(&junk).output().unwrap();
    assert_eq!(out.status.code(), Some(104));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a Shakedown summary export"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn built_in_load_slis_are_judged_from_a_summary_export() {
    let stub = Stub::start().await.unwrap();
    let export = temp("sli.json");
    let url = format!("http://{}/x?delay_ms=20", stub.addr());
    let out = load(s(&[
        &url,
        "--rate",
        "50",
        "-d",
        "1s",
        "--summary-export",
        export.to_str().unwrap(),
    ]))
    .await;
    assert_eq!(out.status.code(), Some(0));
    let slos = temp("slis.yaml");
    std::fs::write(
        &slos,
        "slos:\n  - {name: p99, sli: {source: load, kind: latency, percentile: 99}, op: '<', threshold: 500}\n  - {name: errors, sli: {source: load, kind: error_ratio}, op: '<', threshold: 0.01}\n  - {name: fast, sli: {source: load, kind: latency, percentile: 50}, op: '<', threshold: 5}\n",
    )
    .unwrap();
    let run = |with_summary: bool| {
        let (slos, export) = (slos.clone(), export.clone());
        tokio::task::spawn_blocking(move || {
            let mut cmd = bin();
            cmd.args(["slo", "check", "--file"]).arg(&slos);
            if with_summary {
                cmd.arg("--load-summary").arg(&export);
            }
            cmd.output().unwrap()
        })
    };
    let out = run(true).await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    // 20 ms answers: P99 under 500 ms, no failures, but a median over 5 ms.
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("✓ p99 met") && stdout.contains("✓ errors met: 0 < 0.01"),
        "{stdout}"
    );
    assert!(stdout.contains("✗ fast VIOLATED: 2"), "{stdout}");
    let out = run(false).await.unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("needs the load run (--load-summary FILE)")
    );
}
