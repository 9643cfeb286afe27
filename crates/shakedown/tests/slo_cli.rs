//! `shakedown slo check` when Prometheus cannot answer: unreachable, too slow, and a file of SLOs
//! with a bad entry. Each could-not-judge case exits 2 with its own reason. (The answers of a
//! real Prometheus are tested in `promql.rs`.)

use std::net::TcpListener;
use std::process::Command;
use std::time::{Duration, Instant};

fn check(args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_shakedown"))
        .args(["slo", "check"])
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `up < 1` against `url`, with extra flags.
fn check_up(url: &str, extra: &[&str]) -> (Option<i32>, String, String) {
    let mut args = vec![
        "--prometheus",
        url,
        "--query",
        "up",
        "--op",
        "<",
        "--threshold",
        "1",
    ];
    args.extend_from_slice(extra);
    check(&args)
}

#[test]
fn unreachable_prometheus_exits_2_after_retries() {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let (code, out, _) = check_up(&url, &["--retries", "2"]);
    assert_eq!(code, Some(2));
    assert!(
        out.contains("COULD NOT JUDGE: Prometheus unreachable"),
        "{out}"
    );
}

#[test]
fn a_server_that_never_answers_times_out_and_exits_2() {
    // Accepts connections and never answers.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let hold = std::thread::spawn(move || {
        let mut held = Vec::new();
        listener.set_nonblocking(true).unwrap();
        let until = Instant::now() + Duration::from_secs(2);
        while Instant::now() < until {
            if let Ok((s, _)) = listener.accept() {
                held.push(s);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    });
    let started = Instant::now();
    let (code, out, _) = check_up(&url, &["--timeout", "300ms", "--retries", "1"]);
    assert_eq!(code, Some(2));
    assert!(out.contains("did not answer within 300ms"), "{out}");
    // Two attempts of 300 ms and one backoff of 200 ms.
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    hold.join().unwrap();
}

#[test]
fn a_bad_slo_file_names_file_line_and_field() {
    let dir = std::env::temp_dir().join(format!("shakedown-slo-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("slos.yaml");
    std::fs::write(
        &path,
        "prometheus: {url: 'http://127.0.0.1:0'}\nslos:\n  - name: p99\n    query: 'histogram_quantile(0.99, x[{{window}}])'\n    op: '<'\n    threshold: 2500\n",
    )
    .unwrap();
    let (code, _, err) = check(&["--file", path.to_str().unwrap()]);
    assert_eq!(code, Some(2));
    assert!(
        err.contains(&format!(
            "{}:3:5: slos[0].window: the query uses {{{{window}}}}",
            path.display()
        )),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
