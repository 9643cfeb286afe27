//! Envoy's metrics scraped from `/stats/prometheus` and checked by name and value, counted where
//! Envoy counts them; the access log's response flags.

mod fixture;

use std::time::Duration;

use fixture::{Env, eventually, metric_value};
use http::Method;

#[tokio::test]
async fn cluster_and_listener_metrics_by_name_and_value() {
    let env = Env::with_faults("", 1).await;
    for _ in 0..3 {
        assert_eq!(env.get("/").await.status, 200);
    }
    assert_eq!(env.get("/?status=503").await.status, 503);
    assert_eq!(env.get("/?delay_ms=30").await.status, 200);
    let text = env.admin_call(Method::GET, "/stats/prometheus", "").await;
    assert_eq!(
        text.headers["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let text = text.text();
    let cluster = format!("outbound|{}||up", env.stub.addr().port());
    let c = [("envoy_cluster_name", cluster.as_str())];
    let m = |name: &str, extra: &[(&str, &str)]| {
        let mut labels: Vec<(&str, &str)> = extra.to_vec();
        labels.extend_from_slice(&c);
        metric_value(&text, name, &labels)
    };
    assert_eq!(m("envoy_cluster_upstream_rq_total", &[]), Some(5.0));
    assert_eq!(
        m(
            "envoy_cluster_upstream_rq_xx",
            &[("envoy_response_code_class", "2")]
        ),
        Some(4.0)
    );
    assert_eq!(
        m(
            "envoy_cluster_upstream_rq_xx",
            &[("envoy_response_code_class", "5")]
        ),
        Some(1.0)
    );
    assert_eq!(
        m(
            "envoy_cluster_upstream_rq",
            &[("envoy_response_code", "503")]
        ),
        Some(1.0)
    );
    assert_eq!(
        m(
            "envoy_cluster_upstream_rq",
            &[("envoy_response_code", "200")]
        ),
        Some(4.0)
    );
    assert_eq!(m("envoy_cluster_upstream_rq_active", &[]), Some(0.0));
    assert_eq!(m("envoy_cluster_upstream_rq_time_count", &[]), Some(5.0));
    assert_eq!(
        m("envoy_cluster_upstream_rq_time_bucket", &[("le", "+Inf")]),
        Some(5.0)
    );
    assert_eq!(
        m("envoy_cluster_upstream_rq_time_bucket", &[("le", "25")]),
        Some(4.0),
        "the 30 ms one is above 25"
    );
    assert_eq!(
        m("envoy_cluster_upstream_rq_time_bucket", &[("le", "50")]),
        Some(5.0)
    );
    assert!(m("envoy_cluster_upstream_rq_time_sum", &[]).unwrap() >= 30.0);
    // Envoy's default bounds, all of them.
    for le in [
        "0.5", "1", "5", "10", "25", "50", "100", "250", "500", "1000", "2500", "5000", "10000",
        "30000", "60000", "300000", "600000", "1800000", "3600000", "+Inf",
    ] {
        assert!(
            m("envoy_cluster_upstream_rq_time_bucket", &[("le", le)]).is_some(),
            "bucket {le}"
        );
    }
    let p = [("envoy_http_conn_manager_prefix", "out")];
    assert_eq!(
        metric_value(&text, "envoy_http_downstream_rq_total", &p),
        Some(5.0)
    );
    assert_eq!(
        metric_value(
            &text,
            "envoy_http_downstream_rq_xx",
            &[("envoy_response_code_class", "5"), p[0]]
        ),
        Some(1.0)
    );
    assert_eq!(
        metric_value(&text, "envoy_http_downstream_rq_time_count", &p),
        Some(5.0)
    );
    assert_eq!(
        metric_value(&text, "envoy_http_downstream_cx_total", &p),
        Some(1.0),
        "one keep-alive connection"
    );
}

#[tokio::test]
async fn injected_aborts_are_counted_downstream_not_upstream() {
    let env = Env::with_faults("  - name: a\n    headers: [{name: x-abort}]\n    abort: {http_status: 503}\n    delay: {fixed_delay: 10ms}\n", 1).await;
    for _ in 0..4 {
        assert_eq!(env.get_with("/", &[("x-abort", "1")]).await.status, 503);
    }
    assert_eq!(env.get("/").await.status, 200);
    let cluster = format!("outbound|{}||up", env.stub.addr().port());
    let c = [("envoy_cluster_name", cluster.as_str())];
    let p = [("envoy_http_conn_manager_prefix", "out")];
    assert_eq!(
        env.metric("envoy_cluster_upstream_rq_total", &c).await,
        Some(1.0),
        "the router never saw the aborts"
    );
    assert_eq!(
        env.metric(
            "envoy_cluster_upstream_rq_xx",
            &[("envoy_response_code_class", "5"), c[0]]
        )
        .await,
        Some(0.0),
        "the class series exists from the start, at zero"
    );
    assert_eq!(
        env.metric(
            "envoy_http_downstream_rq_xx",
            &[("envoy_response_code_class", "5"), p[0]]
        )
        .await,
        Some(4.0)
    );
    assert_eq!(
        env.metric("envoy_http_fault_aborts_injected", &p).await,
        Some(4.0)
    );
    assert_eq!(
        env.metric("envoy_http_fault_delays_injected", &p).await,
        Some(4.0)
    );
}

#[tokio::test]
async fn per_downstream_cluster_fault_counters() {
    let env = Env::with_faults("  - name: a\n    abort: {http_status: 503}\n", 1).await;
    env.get_with("/", &[("x-envoy-downstream-service-cluster", "search")])
        .await;
    let labels = [
        ("envoy_fault_downstream_cluster", "search"),
        ("envoy_http_conn_manager_prefix", "out"),
    ];
    assert_eq!(
        env.metric("envoy_http_fault_aborts_injected", &labels)
            .await,
        Some(1.0)
    );
}

#[tokio::test]
async fn the_cluster_label_is_configurable() {
    let stub = shakedown_testkit::Stub::start().await.unwrap();
    let name = "outbound|80||recommendation-service.prod.svc.cluster.local";
    let text = fixture::base_config(stub.addr(), 1).replace(
        "  - name: up\n",
        &format!("  - name: up\n    stat_name: \"{name}\"\n"),
    );
    let env = Env::from_config(stub, &text, Default::default()).await;
    env.get("/").await;
    assert_eq!(
        env.metric(
            "envoy_cluster_upstream_rq_total",
            &[("envoy_cluster_name", name)]
        )
        .await,
        Some(1.0)
    );
}

#[tokio::test]
async fn the_access_log_tells_injected_from_upstream_from_local_failures() {
    let stub = shakedown_testkit::Stub::start().await.unwrap();
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let dir = fixture::temp_dir("access-log");
    let log = dir.join("access.log");
    let text = format!(
        "admin: {{address: 127.0.0.1:0}}\naccess_log: {{path: \"{log}\"}}\n\
         listeners:\n  - name: out\n    address: 127.0.0.1:0\n    routes:\n\
         \x20     - {{match: {{prefix: /dead}}, cluster: dead}}\n\
         \x20     - {{match: {{prefix: /retry}}, cluster: dead, retries: {{attempts: 1}}}}\n\
         \x20     - {{match: {{prefix: /slow}}, cluster: up, timeout: 100ms}}\n\
         \x20     - {{match: {{prefix: /ok}}, cluster: up}}\n\
         clusters:\n  - {{name: up, endpoints: [\"{up}\"]}}\n  - {{name: dead, endpoints: [\"{closed}\"]}}\n\
         faults:\n\
         \x20 - {{name: abort, headers: [{{name: x-f, exact_match: abort}}], abort: {{http_status: 503}}}}\n\
         \x20 - {{name: delay, headers: [{{name: x-f, exact_match: delay}}], delay: {{fixed_delay: 10ms}}}}\n\
         \x20 - {{name: both, headers: [{{name: x-f, exact_match: both}}], delay: {{fixed_delay: 10ms}}, abort: {{http_status: 503}}}}\n",
        log = log.display(),
        up = stub.addr()
    );
    let env = Env::from_config(stub, &text, Default::default()).await;
    let cases: [(&str, &str, u16, &str, &str); 8] = [
        ("/ok", "abort", 503, "FI", "injected"),
        ("/ok", "delay", 200, "DI", "none"),
        ("/ok", "both", 503, "DI,FI", "injected"),
        ("/dead", "-", 503, "UF", "upstream"),
        ("/retry", "-", 503, "UF,URX", "upstream"),
        ("/slow?delay_ms=1000", "-", 504, "UT", "upstream"),
        ("/nowhere", "-", 404, "NR", "local"),
        ("/ok?status=503", "-", 503, "-", "upstream"),
    ];
    for (path, f, status, _, _) in cases {
        assert_eq!(
            env.get_with(path, &[("x-f", f)]).await.status,
            status,
            "{path} {f}"
        );
    }
    let read = || std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        eventually(Duration::from_secs(5), async || read().lines().count()
            == cases.len())
        .await,
        "{}",
        read()
    );
    let lines: Vec<serde_json::Value> = read()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    for (line, (path, _, status, flags, source)) in lines.iter().zip(cases) {
        assert_eq!(line["path"], path);
        assert_eq!(line["response_code"], status);
        assert_eq!(line["response_flags"], flags, "{line}");
        assert_eq!(line["failure_source"], source, "{line}");
    }
    assert_eq!(lines[0]["upstream_cluster"], "up");
    assert_eq!(lines[6]["route"], "-");
}

#[tokio::test]
async fn downstream_cluster_series_are_capped_against_untrusted_headers() {
    let env = Env::with_faults("  - name: a\n    abort: {http_status: 503}\n", 1).await;
    let limit = shakedown_proxy::metrics::MAX_DOWNSTREAM_CLUSTERS;
    for i in 0..limit + 20 {
        let name = format!("caller-{i}");
        let r = fixture::send(
            &env.http1,
            Method::GET,
            env.listen(),
            "/",
            &[("x-envoy-downstream-service-cluster", &name)],
            bytes::Bytes::new(),
        )
        .await;
        assert_eq!(r.status, 503);
    }
    let text = env
        .admin_call(Method::GET, "/stats/prometheus", "")
        .await
        .text();
    let series = text
        .lines()
        .filter(|l| l.contains("envoy_fault_downstream_cluster="))
        .count();
    assert_eq!(series, limit);
    let p = [("envoy_http_conn_manager_prefix", "out")];
    assert_eq!(
        metric_value(&text, "envoy_http_fault_aborts_injected", &p),
        Some((limit + 20) as f64),
        "the total still counts all"
    );
}
