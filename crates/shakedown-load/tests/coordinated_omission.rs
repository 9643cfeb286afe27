//! The wrk2 demonstration, automated: a server that holds every response for S = 1 s once in a
//! D = 10 s run at 500 requests/s over 10 connections.
//!
//! A tenth of the intended requests (those planned during the stall) wait 0–1 s, so the true
//! P99 of what users would have seen is S − 0.01·D = 0.9 s. Timing from the intended start must
//! find it; timing from the actual send (the uncorrected figure) and a closed loop must not —
//! they only see the ten requests the connections held when the stall began. The rate is chosen
//! so that connections ≪ 0.5 % of rate × duration: at low rates those few held samples reach the
//! 1 % tail by accident and the test would prove nothing. The closed loop runs at the same rate
//! (10 users thinking 20 ms), as `hey -q` would.

use std::time::Duration;

use shakedown_load::{RunOptions, run};
use shakedown_model::LoadSpec;
use shakedown_testkit::{Stub, StubOptions};

const STALL: StubOptions = StubOptions {
    record_arrivals: false,
    stall: Some((Duration::from_secs(4), Duration::from_secs(1))),
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrected_p99_finds_the_stall_that_closed_loops_hide() {
    let open_stub = Stub::start_with(STALL).await.unwrap();
    let open = LoadSpec::load(
        "open.yaml",
        &format!(
            "target: http://{}/\nscenario: {{executor: constant-arrival-rate, rate: 500, duration: 10s, connections: 10}}\n",
            open_stub.addr()
        ),
    )
    .unwrap();
    let open = run(&open, RunOptions::default()).await.unwrap();
    assert_eq!(open.samples.http_reqs, 5000);
    let corrected = open.samples.duration.percentile_ms(99.0);
    let uncorrected = open.samples.uncorrected.percentile_ms(99.0);

    let closed_stub = Stub::start_with(STALL).await.unwrap();
    let closed = LoadSpec::load(
        "closed.yaml",
        &format!(
            "target: http://{}/\nscenario: {{executor: constant-vus, vus: 10, duration: 10s, think_time: 20ms}}\n",
            closed_stub.addr()
        ),
    )
    .unwrap();
    let closed = run(&closed, RunOptions::default()).await.unwrap();
    let closed_p99 = closed.samples.duration.percentile_ms(99.0);

    println!(
        "P99: open corrected {corrected:.1} ms, open uncorrected {uncorrected:.2} ms, closed loop {closed_p99:.2} ms ({} requests)",
        closed.samples.http_reqs
    );
    assert!(
        (850.0..=1000.0).contains(&corrected),
        "corrected P99 {corrected} ms, want ≈ 900"
    );
    assert!(uncorrected < 100.0, "uncorrected P99 {uncorrected} ms");
    assert!(closed_p99 < 100.0, "closed-loop P99 {closed_p99} ms");
    // The stall is visible in both runs' maxima: the figures differ in how they weigh it.
    assert!(open.samples.uncorrected.max_ms() >= 900.0);
    assert!(closed.samples.duration.max_ms() >= 900.0);
}
