//! HTTP faults over real sockets: delays, aborts, percentages, scoping, overflow, rate limits,
//! and the three input forms behaving identically.

mod fixture;

use std::time::Duration;

use fixture::Env;
use http::StatusCode;

#[tokio::test]
async fn a_fixed_delay_holds_the_request_then_forwards_it() {
    let env = Env::with_faults("  - name: d\n    delay: {fixed_delay: 200ms}\n", 1).await;
    let r = env.get("/").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.text(), "ok\n");
    assert!(
        r.elapsed >= Duration::from_millis(200) && r.elapsed < Duration::from_millis(400),
        "{:?}",
        r.elapsed
    );
    assert_eq!(env.stub.requests(), 1);
}

#[tokio::test]
async fn an_abort_answers_like_envoy_and_never_reaches_the_upstream() {
    for status in [503u16, 500, 429, 200] {
        let env = Env::with_faults(
            &format!("  - name: a\n    abort: {{http_status: {status}}}\n"),
            1,
        )
        .await;
        let r = env.get("/").await;
        assert_eq!(r.status.as_u16(), status);
        assert_eq!(r.text(), "fault filter abort");
        assert_eq!(r.headers["content-type"], "text/plain");
        assert_eq!(r.headers["content-length"], "18");
        assert_eq!(
            env.stub.requests(),
            0,
            "an aborted request never reaches the upstream"
        );
    }
}

#[tokio::test]
async fn delay_and_abort_combine_the_abort_arrives_after_the_delay() {
    let env = Env::with_faults(
        "  - name: both\n    delay: {fixed_delay: 200ms}\n    abort: {http_status: 503}\n",
        1,
    )
    .await;
    let r = env.get("/").await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(r.elapsed >= Duration::from_millis(200), "{:?}", r.elapsed);
}

#[tokio::test]
async fn a_delayed_request_body_reaches_the_upstream_intact() {
    let env = Env::with_faults("  - name: d\n    delay: {fixed_delay: 100ms}\n", 1).await;
    let body = bytes::Bytes::from(vec![b'z'; 100_000]);
    let r = fixture::send(
        &env.http1,
        http::Method::POST,
        env.listen(),
        "/echo",
        &[],
        body,
    )
    .await;
    assert_eq!(r.json()["body_bytes"], 100_000);
}

/// Statuses of `n` sequential requests.
async fn statuses(env: &Env, n: usize) -> Vec<(u16, bool)> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let r = env.get("/").await;
        out.push((r.status.as_u16(), r.elapsed >= Duration::from_millis(20)));
    }
    out
}

#[tokio::test]
async fn percentages_are_statistically_right_with_a_fixed_seed_and_replay_exactly() {
    let fault = "  - name: p\n    abort: {http_status: 503, percentage: {numerator: 10, denominator: HUNDRED}}\n";
    let n = 2000;
    let a = statuses(&Env::with_faults(fault, 7).await, n).await;
    let aborted = a.iter().filter(|(s, _)| *s == 503).count() as f64 / n as f64;
    let sd = (0.1f64 * 0.9 / n as f64).sqrt();
    assert!(
        (aborted - 0.1).abs() < 3.0 * sd,
        "aborted fraction {aborted}"
    );
    let b = statuses(&Env::with_faults(fault, 7).await, n).await;
    assert_eq!(a, b, "the same seed replays the same decisions");
    let c = statuses(&Env::with_faults(fault, 8).await, n).await;
    assert_ne!(a, c, "another seed, other decisions");
}

#[tokio::test]
async fn the_three_forms_of_one_fault_behave_identically() {
    let native = "  - name: f\n    delay: {fixed_delay: 20ms, percentage: 50}\n    abort: {http_status: 503, percentage: 30}\n";
    let envoy = "  - name: f\n    envoy:\n      name: envoy.filters.http.fault\n      typed_config:\n        \"@type\": type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault\n        abort: {httpStatus: 503, percentage: {numerator: 30, denominator: HUNDRED}}\n        delay: {fixedDelay: 0.020s, percentage: {numerator: 5000, denominator: TEN_THOUSAND}}\n";
    let istio = "  - name: f\n    istio:\n      delay: {fixedDelay: 20ms, percentage: {value: 50}}\n      abort: {httpStatus: 503, percentage: {value: 30}}\n";
    let mut runs = Vec::new();
    for form in [native, envoy, istio] {
        runs.push(statuses(&Env::with_faults(form, 99).await, 300).await);
    }
    assert_eq!(runs[0], runs[1], "native and Envoy forms");
    assert_eq!(runs[0], runs[2], "native and Istio forms");
    let aborted = runs[0].iter().filter(|(s, _)| *s == 503).count();
    let delayed = runs[0].iter().filter(|(_, d)| *d).count();
    assert!(
        (60..=120).contains(&aborted) && (110..=190).contains(&delayed),
        "{aborted} aborted, {delayed} delayed"
    );
}

#[tokio::test]
async fn faults_are_scoped_by_headers_cluster_and_listener() {
    let stub = shakedown_testkit::Stub::start().await.unwrap();
    let text = format!(
        "admin: {{address: 127.0.0.1:0}}\n\
         listeners:\n  - name: out\n    address: 127.0.0.1:0\n    routes:\n      - match: {{prefix: /rec}}\n        cluster: rec\n      - match: {{prefix: /}}\n        cluster: up\n\
         \x20 - name: other\n    address: 127.0.0.1:0\n    routes: [{{match: {{prefix: /}}, cluster: rec}}]\n\
         clusters:\n  - name: up\n    endpoints: [\"{a}\"]\n  - name: rec\n    endpoints: [\"{a}\"]\n\
         faults:\n  - name: scoped\n    listeners: [out]\n    upstream_cluster: rec\n    headers: [{{name: x-inject-fault, string_match: {{exact: \"yes\"}}}}]\n    abort: {{http_status: 503}}\n",
        a = stub.addr()
    );
    let env = Env::from_config(stub, &text, Default::default()).await;
    let yes = [("x-inject-fault", "yes")];
    assert_eq!(
        env.get_with("/rec", &yes).await.status,
        503,
        "all scopes match"
    );
    assert_eq!(env.get("/rec").await.status, 200, "header missing");
    assert_eq!(
        env.get_with("/rec", &[("x-inject-fault", "no")])
            .await
            .status,
        200,
        "header differs"
    );
    assert_eq!(env.get_with("/", &yes).await.status, 200, "other cluster");
    let other = env.proxy.listener_addr("other").unwrap();
    let r = fixture::send(
        &env.http1,
        http::Method::GET,
        other,
        "/rec",
        &yes,
        bytes::Bytes::new(),
    )
    .await;
    assert_eq!(r.status, 200, "other listener");
}

#[tokio::test]
async fn max_active_faults_lets_the_overflow_pass_untouched_and_counts_it() {
    let env = Env::with_faults(
        "  - name: m\n    max_active_faults: 2\n    delay: {fixed_delay: 500ms}\n",
        1,
    )
    .await;
    let mut tasks = Vec::new();
    for i in 0..4 {
        let client = env.http1.clone();
        let addr = env.listen();
        tasks.push(tokio::spawn(async move {
            // Stagger so the first two are surely in their delay when the others arrive.
            tokio::time::sleep(Duration::from_millis(if i < 2 { 0 } else { 150 })).await;
            fixture::send(
                &client,
                http::Method::GET,
                addr,
                "/",
                &[],
                bytes::Bytes::new(),
            )
            .await
        }));
    }
    let mut slow = 0;
    for t in tasks {
        let r = t.await.unwrap();
        assert_eq!(r.status, 200);
        if r.elapsed >= Duration::from_millis(500) {
            slow += 1;
        }
    }
    assert_eq!(slow, 2);
    assert_eq!(
        env.out_metric("envoy_http_fault_faults_overflow").await,
        Some(2.0)
    );
    assert_eq!(
        env.out_metric("envoy_http_fault_delays_injected").await,
        Some(2.0)
    );
    assert_eq!(
        env.out_metric("envoy_http_fault_active_faults").await,
        Some(0.0)
    );
}

#[tokio::test]
async fn response_rate_limit_throttles_the_body_only() {
    let env = Env::with_faults(
        "  - name: rl\n    response_rate_limit: {fixed_limit: {limit_kbps: 64}}\n",
        1,
    )
    .await;
    let r = env.get("/?size=65536").await;
    assert_eq!(r.body.len(), 65536);
    // 64 KiB at 64 KiB/s, less Envoy's 50 ms head start.
    assert!(
        r.elapsed >= Duration::from_millis(850) && r.elapsed < Duration::from_millis(2000),
        "{:?}",
        r.elapsed
    );
    assert_eq!(
        env.out_metric("envoy_http_fault_response_rl_injected")
            .await,
        Some(1.0)
    );
}

#[tokio::test]
async fn upstream_failures_are_not_faults() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let stub = shakedown_testkit::Stub::start().await.unwrap();
    let text = format!(
        "admin: {{address: 127.0.0.1:0}}\n\
         listeners:\n  - name: out\n    address: 127.0.0.1:0\n    routes:\n      - match: {{prefix: /}}\n        cluster: up\n        retries: {{attempts: 2}}\n\
         clusters:\n  - name: up\n    endpoints: [\"{closed}\"]\n"
    );
    let env = Env::from_config(stub, &text, Default::default()).await;
    let r = env.get("/").await;
    assert_eq!(r.status, 503);
    assert!(r.text().contains("connection failure"), "{}", r.text());
    let cluster = [(
        "envoy_cluster_name",
        &*format!("outbound|{}||up", closed.port()),
    )];
    assert_eq!(
        env.metric("envoy_cluster_upstream_cx_connect_fail", &cluster)
            .await,
        Some(3.0),
        "1 try + 2 retries"
    );
    assert_eq!(
        env.metric("envoy_cluster_upstream_rq_retry", &cluster)
            .await,
        Some(2.0)
    );
}

#[tokio::test]
async fn endpoints_are_used_round_robin() {
    let a = shakedown_testkit::Stub::start().await.unwrap();
    let b = shakedown_testkit::Stub::start().await.unwrap();
    let text = fixture::base_config(a.addr(), 1).replace(
        &format!("endpoints: [\"{}\"]", a.addr()),
        &format!("endpoints: [\"{}\", \"{}\"]", a.addr(), b.addr()),
    );
    let env = Env::from_config(a, &text, Default::default()).await;
    for _ in 0..10 {
        assert_eq!(env.get("/").await.status, 200);
    }
    assert_eq!((env.stub.requests(), b.requests()), (5, 5));
}

#[tokio::test]
async fn downstream_nodes_limit_a_fault_to_the_named_callers() {
    let env = Env::with_faults(
        "  - name: n\n    downstream_nodes: [search-v2]\n    abort: {http_status: 503}\n",
        1,
    )
    .await;
    let node = |n: &'static str| [("x-envoy-downstream-service-node", n)];
    assert_eq!(env.get_with("/", &node("search-v2")).await.status, 503);
    assert_eq!(env.get_with("/", &node("search-v1")).await.status, 200);
    assert_eq!(env.get("/").await.status, 200, "no node header, no fault");
}

#[tokio::test]
async fn an_injected_delay_does_not_count_against_the_route_timeout() {
    // Envoy's fault filter runs before the router, whose timer starts after the delay.
    let stub = shakedown_testkit::Stub::start().await.unwrap();
    let text = fixture::base_config(stub.addr(), 7).replace(
        "        cluster: up\n",
        "        cluster: up\n        timeout: 100ms\n",
    ) + "faults:\n  - name: slow\n    delay: {fixed_delay: 250ms}\n";
    let env = Env::from_config(stub, &text, Default::default()).await;
    let r = env.get("/").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.elapsed >= Duration::from_millis(250), "{:?}", r.elapsed);
    // The timeout still applies to the upstream itself, counted after the delay.
    let r = env.get("/?delay_ms=400").await;
    assert_eq!(
        (r.status.as_u16(), r.text().as_str()),
        (504, "upstream request timeout")
    );
    assert!(
        r.elapsed >= Duration::from_millis(350) && r.elapsed < Duration::from_millis(700),
        "{:?}",
        r.elapsed
    );
}

#[tokio::test]
async fn a_rate_limit_with_an_abort_aborts_at_once_and_still_counts_the_rate_limit() {
    let env = Env::with_faults("  - name: rl-abort\n    response_rate_limit: {fixed_limit: {limit_kbps: 1}}\n    abort: {http_status: 503}\n", 1).await;
    let r = env.get("/?size=65536").await;
    assert_eq!(
        (r.status.as_u16(), r.text().as_str()),
        (503, "fault filter abort")
    );
    assert!(r.elapsed < Duration::from_millis(300), "{:?}", r.elapsed);
    assert_eq!(
        env.out_metric("envoy_http_fault_response_rl_injected")
            .await,
        Some(1.0)
    );
    assert_eq!(
        env.out_metric("envoy_http_fault_aborts_injected").await,
        Some(1.0)
    );
}
