//! Embedded judging with nothing installed: the proxy and the load generator feed an in-process
//! store every second, and seed 000's two SLO queries — plus the same questions asked of the
//! load side — are evaluated there, on a run with seed 000's fault mix (10 % 503, 70 % delayed,
//! 2 s scaled to 200 ms, produced by the upstream so the cluster metrics count them).

use std::sync::Arc;
use std::time::Duration;

use shakedown_model::ProxyConfig;
use shakedown_proxy::{Proxy, ProxyOptions};
use shakedown_slo::store::{Store, now_ms};
use shakedown_slo::{Outcome, QueryResult, eval, judge_embedded};
use shakedown_testkit::Stub;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const CLUSTER: &str = "outbound|80||search-service.resilience-testing.svc.cluster.local";
const P99: &str = r#"histogram_quantile(0.99, sum(rate(envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name="outbound|80||search-service.resilience-testing.svc.cluster.local"}[2m])) by (le))"#;
const ERROR_RATIO: &str = r#"sum(rate(envoy_cluster_upstream_rq_xx{envoy_cluster_name="outbound|80||search-service.resilience-testing.svc.cluster.local", envoy_response_code_class="5"}[2m])) / sum(rate(envoy_cluster_upstream_rq_total{envoy_cluster_name="outbound|80||search-service.resilience-testing.svc.cluster.local"}[2m]))"#;
const LOAD_P99: &str = "histogram_quantile(0.99, sum(rate(shakedown_load_http_req_duration_seconds_bucket[2m])) by (le))";
const LOAD_ERRORS: &str = r#"sum(rate(shakedown_load_http_reqs_total{status_class="5xx"}[2m])) / sum(rate(shakedown_load_http_reqs_total[2m]))"#;

async fn get(addr: std::net::SocketAddr, path: &str) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
}

fn value(store: &Store, q: &str) -> f64 {
    match eval::instant(store, q, now_ms()).unwrap() {
        QueryResult::Vector(v) if v.len() == 1 => v[0].2,
        other => panic!("{q}: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_000_slos_judged_embedded_from_proxy_and_load() {
    let stub = Stub::start().await.unwrap();
    let config = ProxyConfig::load(
        "proxy.yaml",
        &format!(
            "admin: {{address: 127.0.0.1:0}}\nlisteners:\n  - name: outbound\n    address: 127.0.0.1:0\n    routes: [{{match: {{prefix: /}}, cluster: search}}]\nclusters:\n  - name: search\n    stat_name: \"{CLUSTER}\"\n    endpoints: [\"{}\"]\n",
            stub.addr()
        ),
    )
    .unwrap();
    let proxy = Arc::new(Proxy::start(config, ProxyOptions::default()).await.unwrap());
    let listen = proxy.listener_addr("outbound").unwrap();

    let store = Arc::new(Store::new(Duration::from_secs(600)));
    let from_proxy = {
        let proxy = proxy.clone();
        store.scrape_every(Duration::from_secs(1), move || proxy.render_metrics())
    };
    let (publish, published) = tokio::sync::watch::channel(Arc::new(String::new()));
    let from_load = store.scrape_every(Duration::from_secs(1), move || {
        published.borrow().to_string()
    });

    // Every series the queries read exists before the load, and is sampled twice.
    get(listen, "/search?status=503").await;
    get(listen, "/search?delay_ms=200").await;
    tokio::time::sleep(Duration::from_millis(2200)).await;

    let load = shakedown_model::LoadSpec::load(
        "load.yaml",
        &format!(
            "target: http://{listen}\nrequests:\n  - {{name: ok, path: /search, weight: 20}}\n  - {{name: slow, path: /search?delay_ms=200, weight: 70}}\n  - {{name: fail, path: /search?status=503, weight: 10}}\nscenario: {{executor: constant-arrival-rate, rate: 100, duration: 5s, connections: 40}}\nseed: 7\n"
        ),
    )
    .unwrap();
    let report = shakedown_load::run(
        &load,
        shakedown_load::RunOptions {
            publish: Some(publish),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    from_proxy.abort();
    from_load.abort();

    let fails = report.samples.statuses.get(&503).copied().unwrap_or(0) as f64;
    let total = report.samples.http_reqs as f64;
    // The proxy's side: the two queries, verbatim, and seed 000's verdicts.
    let ratio = value(&store, ERROR_RATIO);
    assert!(
        (ratio - (fails + 1.0) / (total + 2.0)).abs() < 0.01,
        "{ratio} vs {fails}/{total}"
    );
    let p99 = value(&store, P99);
    // 70 % of the requests take 200 ms: P99 interpolates inside the (100, 250] ms bucket.
    assert!((100.0..=250.0).contains(&p99), "{p99}");
    let slos = shakedown_model::slo::SloFile::load(
        "slos.yaml",
        &format!(
            "slos:\n  - {{name: p99, query: '{P99}', op: '<', threshold: 2500}}\n  - {{name: errors, query: '{ERROR_RATIO}', op: '<', threshold: 0.15}}\n"
        ),
    )
    .unwrap()
    .slos;
    for slo in &slos {
        let j = judge_embedded(slo, &store, now_ms());
        assert_eq!(j.outcome, Outcome::Met, "{j:?}");
    }

    // The load side, from its own series: the same answers, seen from the client.
    let load_ratio = value(&store, LOAD_ERRORS);
    assert!(
        (load_ratio - fails / total).abs() < 0.02,
        "{load_ratio} vs {fails}/{total}"
    );
    let load_p99 = value(&store, LOAD_P99);
    let exact = report.samples.duration.percentile_ms(99.0) / 1000.0;
    assert!(
        (0.1..=0.25).contains(&load_p99) && (0.1..=0.25).contains(&exact),
        "{load_p99} vs {exact}"
    );
    proxy.shutdown().await;
}
