//! The load generator against in-process stubs on 127.0.0.1:0: rates held and measured at the
//! receiving end, ramps followed, closed model with think time, templates, checks, failures,
//! drops, aborts and interrupts. Runs are a few seconds of real time, bounded by their spec.

use std::time::Duration;

use shakedown_load::samples::SubSink;
use shakedown_load::{Report, RunOptions, StopReason, run};
use shakedown_model::LoadSpec;
use shakedown_testkit::{Stub, StubOptions};

fn spec(yaml: &str) -> LoadSpec {
    LoadSpec::load("test.yaml", yaml).unwrap_or_else(|e| panic!("{e}"))
}

async fn go(yaml: &str) -> Report {
    run(&spec(yaml), RunOptions::default()).await.unwrap()
}

fn recording() -> StubOptions {
    StubOptions {
        record_arrivals: true,
        ..StubOptions::default()
    }
}

/// Requests the stub saw in `[from, to)` seconds after the first.
fn between(arrivals: &[Duration], from: f64, to: f64) -> usize {
    arrivals
        .iter()
        .filter(|t| (from..to).contains(&t.as_secs_f64()))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn constant_arrival_rate_is_held_within_one_percent() {
    let stub = Stub::start_with(recording()).await.unwrap();
    let r = go(&format!(
        "target: http://{}/\nscenario: {{executor: constant-arrival-rate, rate: 500, duration: 4s, connections: 8}}\n",
        stub.addr()
    ))
    .await;
    assert_eq!(r.stop, StopReason::Completed);
    assert_eq!(r.samples.http_reqs, 2000, "every planned request is sent");
    assert_eq!(r.samples.dropped, 0);
    assert_eq!(stub.requests(), 2000);
    // Measured where it lands: 1999 gaps over the span between first and last arrival.
    let arrivals = stub.arrivals();
    let span = arrivals.last().unwrap().as_secs_f64();
    let rate = 1999.0 / span;
    assert!(
        (rate - 500.0).abs() / 500.0 < 0.01,
        "achieved {rate:.2} req/s over {span:.3}s"
    );
    // And evenly: every second of the run carries its 500 (within 2 %: a busy CI machine may
    // hold the schedule thread back for a few ms at a boundary, which it then catches up).
    for s in 0..3 {
        let n = between(&arrivals, s as f64, s as f64 + 1.0);
        assert!((490..=510).contains(&n), "second {s}: {n} requests");
    }
    assert!(r.samples.data_sent > 2000 * 40 && r.samples.data_received > 2000 * 40);
    assert_eq!(r.series.points.iter().map(|p| p.reqs).sum::<u64>(), 2000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ramping_arrival_rate_follows_its_stages() {
    let stub = Stub::start_with(recording()).await.unwrap();
    // 0 → 400/s over 2 s (100 then 300 arrivals), then 400/s for 1 s: 800 in all.
    let r = go(&format!(
        "target: http://{}/\nscenario:\n  executor: ramping-arrival-rate\n  stages: [{{duration: 2s, target: 400}}, {{duration: 1s, target: 400}}]\n  connections: 8\n",
        stub.addr()
    ))
    .await;
    assert_eq!(r.samples.http_reqs, 800);
    let a = stub.arrivals();
    // The first arrival is at t = 0 of the plan, so the stub's clock lines up with it.
    for (from, to, want) in [(0.0, 1.0, 100.0), (1.0, 2.0, 300.0), (2.0, 3.0, 400.0)] {
        let n = between(&a, from, to) as f64;
        assert!(
            (n - want).abs() <= want * 0.03 + 2.0,
            "[{from}, {to}): {n}, want {want}"
        );
    }
    // Within the first second the rate itself ramps: the first half carries a quarter.
    let first_half = between(&a, 0.0, 0.5) as f64;
    assert!((first_half - 25.0).abs() <= 3.0, "{first_half}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_model_with_think_time_is_seed_000s_k6_script() {
    // Seed 000: `10 VUs`, `sleep(1)`, `check(status == 200)`, thresholds on failures and p(95);
    // scaled to 4 VUs thinking 250 ms for 2 s.
    let stub = Stub::start().await.unwrap();
    let r = go(&format!(
        "target: http://{}\nrequests: [{{name: search, path: /search?q=tekton}}]\nscenario: {{executor: constant-vus, vus: 4, duration: 2s, think_time: 250ms}}\nchecks: [{{name: status was 200, status: 200}}]\nthresholds:\n  http_req_failed: ['rate<0.01']\n  http_req_duration: ['p(95)<500']\n",
        stub.addr()
    ))
    .await;
    // Each VU: request (~1 ms) then 250 ms of thought → 8 iterations in 2 s.
    assert!(
        (28..=36).contains(&r.samples.iterations),
        "{}",
        r.samples.iterations
    );
    assert_eq!(r.samples.checks.trues, r.samples.checks.total);
    assert!(r.thresholds_ok(), "{:?}", r.verdicts);
    assert_eq!(r.samples.vus_max.max, 4);
    assert_eq!(r.samples.vus.max, 4);
    assert_eq!(r.tags.names, vec!["search".to_string()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ramping_vus_start_users_as_the_stages_say() {
    let stub = Stub::start_with(recording()).await.unwrap();
    let r = go(&format!(
        "target: http://{}/\nscenario:\n  executor: ramping-vus\n  start_vus: 1\n  stages: [{{duration: 1s, target: 4}}, {{duration: 1s, target: 4}}]\n  think_time: 50ms\n",
        stub.addr()
    ))
    .await;
    assert_eq!(r.samples.vus.max, 4);
    let a = stub.arrivals();
    let (first, second) = (between(&a, 0.0, 1.0), between(&a, 1.0, 2.0));
    // Ramp 1 → 4: on average 2 users in the first second, 4 in the second (≈ 20 requests per
    // user-second).
    assert!(first * 3 < second * 2, "first {first}, second {second}");
    assert!((60..=90).contains(&second), "{second}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weighted_templates_replay_with_a_seed() {
    let stub = Stub::start().await.unwrap();
    let yaml = format!(
        "target: http://{}\nrequests:\n  - {{name: a, path: /a, weight: 3}}\n  - {{name: b, path: /b, method: POST, body: hello, headers: {{x-test: '1'}}}}\nscenario: {{executor: constant-arrival-rate, rate: 400, duration: 1s, connections: 1}}\nseed: 7\nthresholds:\n  'http_reqs{{name:a}}': ['count>0']\n  'http_reqs{{method:POST}}': ['count>0']\n",
        stub.addr()
    );
    let count = |r: &Report| {
        let sub = |key: &str| {
            let i = r
                .tags
                .subs
                .iter()
                .position(|m| m.to_string() == key)
                .unwrap();
            match r.samples.subs[i] {
                SubSink::Counter(n) => n,
                ref other => panic!("{other:?}"),
            }
        };
        (sub("http_reqs{name:a}"), sub("http_reqs{method:POST}"))
    };
    let first = go(&yaml).await;
    let (a, b) = count(&first);
    assert_eq!(a + b, 400);
    assert!((270..=330).contains(&a), "a={a} b={b}");
    let again = go(&yaml).await;
    assert_eq!(count(&again), (a, b), "same seed, same choices");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_timeouts_and_checks_are_counted() {
    let stub = Stub::start().await.unwrap();
    let r = go(&format!(
        "target: http://{}\nrequests:\n  - {{name: fail, path: /x?status=503}}\n  - {{name: slow, path: /x?delay_ms=400}}\n  - {{name: echo, path: /echo}}\nscenario: {{executor: constant-vus, vus: 3, duration: 1s}}\nhttp: {{timeout: 100ms}}\nchecks:\n  - {{name: status was 200, status: 200}}\n  - {{name: echoes, body_contains: '\"method\":\"GET\"'}}\nthresholds:\n  'http_req_failed{{name:echo}}': ['rate==0']\n  'http_req_failed{{name:fail}}': ['rate==1']\n  'http_reqs{{status:0}}': ['count>0']\n  http_req_failed: ['rate<0.01']\n",
        stub.addr()
    ))
    .await;
    let s = &r.samples;
    assert!(
        s.classes[4] > 0 && s.classes[5] > 0 && s.classes[1] > 0,
        "{:?}",
        s.classes
    );
    assert_eq!(s.errors.get("timeout").copied(), Some(s.classes[5]));
    assert_eq!(s.statuses.get(&503).copied(), Some(s.classes[4]));
    // Every timed-out request was cut at the timeout, not at the server's 400 ms.
    assert!(s.uncorrected.max_ms() < 200.0, "{}", s.uncorrected.max_ms());
    let echoes = &r.samples.per_check[1];
    assert_eq!(
        echoes.trues, s.classes[1],
        "only /echo bodies contain the method"
    );
    let by_source: Vec<(&str, bool)> = r
        .verdicts
        .iter()
        .map(|v| (v.source.as_str(), v.ok))
        .collect();
    assert_eq!(
        by_source,
        vec![
            ("rate<0.01", false),
            ("rate==0", true),
            ("rate==1", true),
            ("count>0", true)
        ],
        "{:?}",
        r.verdicts
    );
    assert!(!r.thresholds_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beyond_max_in_flight_planned_requests_are_dropped() {
    let stub = Stub::start().await.unwrap();
    let r = go(&format!(
        "target: http://{}/x?delay_ms=300\nscenario: {{executor: constant-arrival-rate, rate: 100, duration: 1s, connections: 2, max_in_flight: 2}}\n",
        stub.addr()
    ))
    .await;
    let s = &r.samples;
    assert_eq!(s.http_reqs + s.dropped, 100);
    // Two at a time for 300 ms each: about 8 served in the second, the rest dropped.
    assert!(s.dropped >= 85, "dropped {}", s.dropped);
    assert!(r.series.points.iter().map(|p| p.dropped).sum::<u64>() == s.dropped);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_connection_is_a_failed_request() {
    // Bind and drop, so the port is closed.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let r = go(&format!(
        "target: http://127.0.0.1:{port}/\nscenario: {{executor: constant-arrival-rate, rate: 50, duration: 500ms, connections: 2}}\n"
    ))
    .await;
    assert_eq!(r.samples.http_reqs, 25);
    assert_eq!(r.samples.failed.trues, 25);
    assert_eq!(r.samples.errors.get("connection refused"), Some(&25));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abort_on_fail_stops_the_run_early() {
    let stub = Stub::start().await.unwrap();
    let r = go(&format!(
        "target: http://{}/x?status=500\nscenario: {{executor: constant-arrival-rate, rate: 50, duration: 20s, connections: 2}}\nthresholds:\n  http_req_failed: [{{threshold: 'rate<0.1', abortOnFail: true, delayAbortEval: 1s}}]\n",
        stub.addr()
    ))
    .await;
    assert_eq!(
        r.stop,
        StopReason::Threshold("http_req_failed".into(), "rate<0.1".into())
    );
    // Judged every 2 s: the first judgement after 1 s of delay is at 2 s.
    assert!(r.elapsed < Duration::from_secs(4), "{:?}", r.elapsed);
    assert!(!r.thresholds_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupt_stops_cleanly_and_keeps_the_samples() {
    let stub = Stub::start().await.unwrap();
    let (tx, rx) = tokio::sync::watch::channel(false);
    let spec = spec(&format!(
        "target: http://{}/\nscenario: {{executor: constant-arrival-rate, rate: 100, duration: 30s}}\n",
        stub.addr()
    ));
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(700)).await;
        let _ = tx.send(true);
    });
    let r = run(
        &spec,
        RunOptions {
            interrupt: Some(rx),
            ..RunOptions::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(r.stop, StopReason::Interrupted);
    assert!(r.elapsed < Duration::from_secs(2));
    assert!(
        (60..=80).contains(&r.samples.http_reqs),
        "{}",
        r.samples.http_reqs
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_by_prior_knowledge() {
    let stub = Stub::start().await.unwrap();
    let r = go(&format!(
        "target: http://{}/echo\nscenario: {{executor: constant-vus, vus: 2, duration: 300ms}}\nhttp: {{version: http2}}\nchecks: [{{name: h2, body_contains: '\"version\":\"HTTP/2.0\"'}}]\n",
        stub.addr()
    ))
    .await;
    assert!(r.samples.checks.total > 10);
    assert_eq!(r.samples.checks.trues, r.samples.checks.total);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_served_in_prometheus_format_during_the_run() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let stub = Stub::start().await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let spec = spec(&format!(
        "target: http://{}/\nscenario: {{executor: constant-arrival-rate, rate: 200, duration: 2500ms}}\nchecks: [{{name: ok, status: 200}}]\n",
        stub.addr()
    ));
    let running = tokio::spawn(async move {
        run(
            &spec,
            RunOptions {
                metrics: Some(listener),
                ..RunOptions::default()
            },
        )
        .await
        .unwrap()
    });
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    conn.write_all(b"GET /metrics HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut text = String::new();
    conn.read_to_string(&mut text).await.unwrap();
    let value = |line: &str| -> f64 {
        text.lines()
            .find(|l| l.starts_with(line))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no `{line}` in\n{text}"))
    };
    assert!(text.contains("text/plain; version=0.0.4"), "{text}");
    // Two ticks collected by 2.2 s: 400 requests planned by 2 s, all finished.
    let ok = value("shakedown_load_http_reqs_total{status_class=\"2xx\"}");
    assert!((380.0..=440.0).contains(&ok), "{ok}");
    assert_eq!(value("shakedown_load_http_req_duration_seconds_count"), ok);
    assert_eq!(
        value("shakedown_load_http_req_duration_seconds_bucket{le=\"+Inf\"}"),
        ok
    );
    assert!(value("shakedown_load_http_req_duration_seconds_bucket{le=\"1\"}") <= ok);
    assert_eq!(
        value("shakedown_load_checks_total{check=\"ok\",result=\"pass\"}"),
        ok
    );
    assert!(value("shakedown_load_data_received_bytes_total") > 0.0);
    let r = running.await.unwrap();
    assert_eq!(r.samples.http_reqs, 500);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_framing_chunked_large_and_head_over_real_sockets() {
    let stub = Stub::start().await.unwrap();
    // The stub answers gRPC-looking requests with a streamed (chunked) body, `?size=` with a
    // 200 kB Content-Length body, and HEAD with headers only.
    let r = go(&format!(
        "target: http://{}\nrequests:\n  - {{name: chunked, path: /grpc, method: POST, headers: {{content-type: application/grpc}}}}\n  - {{name: large, path: /x?size=200000}}\n  - {{name: head, path: /x?size=5000, method: HEAD}}\nscenario: {{executor: constant-vus, vus: 3, duration: 1s}}\nhttp: {{version: http1, timeout: 2s}}\nthresholds:\n  'http_reqs{{name:chunked}}': ['count>10']\n  'http_reqs{{name:large}}': ['count>10']\n  'http_reqs{{name:head}}': ['count>10']\n",
        stub.addr()
    ))
    .await;
    assert_eq!(r.samples.failed.trues, 0, "{:?}", r.samples.errors);
    assert!(r.thresholds_ok(), "{:?}", r.verdicts);
    let large = match r.samples.subs[r
        .tags
        .subs
        .iter()
        .position(|m| m.to_string() == "http_reqs{name:large}")
        .unwrap()]
    {
        SubSink::Counter(n) => n,
        ref other => panic!("{other:?}"),
    };
    assert!(
        r.samples.data_received > large * 200_000,
        "{} bytes",
        r.samples.data_received
    );
    // HEAD answers carry no body: had it been read by its Content-Length, the run would have
    // timed out (2 s) instead.
    assert!(r.samples.duration.max_ms() < 1000.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_run_stops_the_load() {
    let stub = Stub::start().await.unwrap();
    let spec = spec(&format!(
        "target: http://{}/\nscenario: {{executor: constant-arrival-rate, rate: 200, duration: 30s}}\n",
        stub.addr()
    ));
    let running = run(&spec, RunOptions::default());
    // Give up on the run after half a second.
    assert!(
        tokio::time::timeout(Duration::from_millis(500), running)
            .await
            .is_err()
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    let after_drop = stub.requests();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        stub.requests(),
        after_drop,
        "no request after the run was dropped"
    );
    assert!((90..=110).contains(&after_drop), "{after_drop}");
}
