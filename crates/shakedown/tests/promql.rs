//! Seed 000's two PromQL queries, byte for byte, through a real Prometheus scraping the proxy.
//!
//! Needs Debian's `prometheus` (installed by `scripts/setup.sh`). The upstream answers a fixed
//! mix — every tenth request 503, three in ten delayed 200 ms — so the expected answers are
//! exact: a 5xx ratio of 0.1, and a P99 that Prometheus interpolates inside the (100, 250] ms
//! bucket at 100 + 150 × (0.99 − 0.7) / 0.3 = 245 ms (the figure the same check gave against a
//! real Envoy). A second test judges seed 000's SLOs on a load run both through the real
//! Prometheus and through the embedded evaluator, and compares.

use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use shakedown_model::ProxyConfig;
use shakedown_proxy::{Proxy, ProxyOptions};
use shakedown_slo::store::now_ms;
use shakedown_testkit::Stub;

const CLUSTER: &str = "outbound|80||search-service.resilience-testing.svc.cluster.local";
const P99: &str = r#"histogram_quantile(0.99, sum(rate(envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name="outbound|80||search-service.resilience-testing.svc.cluster.local"}[2m])) by (le))"#;
const ERROR_RATIO: &str = r#"sum(rate(envoy_cluster_upstream_rq_xx{envoy_cluster_name="outbound|80||search-service.resilience-testing.svc.cluster.local", envoy_response_code_class="5"}[2m])) / sum(rate(envoy_cluster_upstream_rq_total{envoy_cluster_name="outbound|80||search-service.resilience-testing.svc.cluster.local"}[2m]))"#;

struct Prometheus {
    child: Child,
    addr: SocketAddr,
    dir: std::path::PathBuf,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn free_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
}

fn start_prometheus(target: SocketAddr) -> Prometheus {
    let binary =
        which("prometheus").expect("Debian's `prometheus` is required: run scripts/setup.sh");
    let addr = free_port();
    let dir = std::env::temp_dir().join(format!(
        "shakedown-promql-{}-{}",
        std::process::id(),
        addr.port()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\n\
             scrape_configs:\n  - job_name: shakedown\n    metrics_path: /stats/prometheus\n    static_configs: [{{targets: ['{target}']}}]\n"
        ),
    )
    .unwrap();
    let child = Command::new(binary)
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address={addr}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("prometheus starts");
    Prometheus { child, addr, dir }
}

fn which(name: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

type HttpClient = Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

async fn get(client: &HttpClient, url: String) -> Option<(u16, String)> {
    let resp = client.get(url.parse().ok()?).await.ok()?;
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.ok()?.to_bytes();
    Some((status, String::from_utf8_lossy(&body).into_owned()))
}

/// Runs an instant query; returns the single sample's value, if any.
async fn query(client: &HttpClient, prom: SocketAddr, q: &str) -> Option<f64> {
    let mut url = format!("http://{prom}/api/v1/query?query=");
    for b in q.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            url.push(b as char);
        } else {
            url.push_str(&format!("%{b:02X}"));
        }
    }
    let (_, body) = get(client, url).await?;
    let v: serde_json::Value = serde_json::from_str(&body).ok()?;
    assert_eq!(v["status"], "success", "{body}");
    v["data"]["result"][0]["value"][1].as_str()?.parse().ok()
}

async fn traffic(client: &HttpClient, listen: SocketAddr, range: std::ops::Range<usize>) {
    for i in range {
        let path = match i % 10 {
            0 => "/search?status=503",
            1..=3 => "/search?delay_ms=200",
            _ => "/search",
        };
        let (status, _) = get(client, format!("http://{listen}{path}"))
            .await
            .expect("proxied");
        assert_eq!(status, if i % 10 == 0 { 503 } else { 200 });
    }
}

/// A proxy with one listener in front of `stub`, its cluster named as in seed 000.
async fn start_proxy(stub: &Stub) -> Proxy {
    let config = ProxyConfig::load(
        "promql.yaml",
        &format!(
            "admin: {{address: 127.0.0.1:0}}\n\
             listeners:\n  - name: outbound\n    address: 127.0.0.1:0\n    routes: [{{match: {{prefix: /}}, cluster: search}}]\n\
             clusters:\n  - name: search\n    stat_name: \"{CLUSTER}\"\n    endpoints: [\"{}\"]\n",
            stub.addr()
        ),
    )
    .unwrap();
    Proxy::start(config, ProxyOptions::default()).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_000_promql_runs_verbatim_against_the_proxy() {
    let stub = Stub::start().await.unwrap();
    let proxy = start_proxy(&stub).await;
    let listen = proxy.listener_addr("outbound").unwrap();
    let prom = start_prometheus(proxy.admin_addr());
    let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();

    // Warm up so every series exists before Prometheus takes the window's first sample.
    traffic(&client, listen, 0..10).await;
    let scrapes = |n: f64| {
        format!(
            "count_over_time(envoy_cluster_upstream_rq_total{{envoy_cluster_name=\"{CLUSTER}\"}}[1m]) >= {n}"
        )
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while query(&client, prom.addr, &scrapes(2.0)).await.is_none() {
        assert!(
            Instant::now() < deadline,
            "Prometheus never scraped the proxy"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    traffic(&client, listen, 10..310).await;
    // Wait until a scrape has seen all 310 requests.
    let seen =
        format!("envoy_cluster_upstream_rq_total{{envoy_cluster_name=\"{CLUSTER}\"}} >= 310");
    while query(&client, prom.addr, &seen).await.is_none() {
        assert!(Instant::now() < deadline, "Prometheus never saw the load");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let ratio = query(&client, prom.addr, ERROR_RATIO)
        .await
        .expect("seed 000's error-ratio query returns data");
    assert!((ratio - 0.1).abs() < 1e-9, "5xx ratio {ratio}");
    assert!(ratio < 0.15, "seed 000's SLO holds");
    let p99 = query(&client, prom.addr, P99)
        .await
        .expect("seed 000's P99 query returns data");
    assert!((p99 - 245.0).abs() < 1.0, "P99 {p99} ms");
    assert!(p99 < 2500.0, "seed 000's SLO holds");

    // The client reads a range query as a matrix: one series, one point a second.
    let prometheus = shakedown_slo::Prometheus::at(&format!("http://{}", prom.addr)).unwrap();
    let end = now_ms() as f64 / 1000.0;
    let series = format!("envoy_cluster_upstream_rq_total{{envoy_cluster_name=\"{CLUSTER}\"}}");
    match prometheus
        .query_range(&series, end - 5.0, end, Duration::from_secs(1))
        .await
        .unwrap()
    {
        shakedown_slo::QueryResult::Matrix(m) => {
            assert_eq!(m.len(), 1);
            assert_eq!(m[0].1.len(), 6, "{m:?}");
            assert_eq!(m[0].1.last().unwrap().1, 310.0);
        }
        other => panic!("{other:?}"),
    }

    // The same two queries judged by `shakedown slo check`, and its three outcomes.
    let url = format!("http://{}", prom.addr);
    let check = |query: &str, op: &str, threshold: &str| {
        let args = [
            "slo",
            "check",
            "--prometheus",
            &url,
            "--query",
            query,
            "--op",
            op,
            "--threshold",
            threshold,
        ]
        .map(String::from);
        async move {
            tokio::task::spawn_blocking(move || {
                let out = std::process::Command::new(env!("CARGO_BIN_EXE_shakedown"))
                    .args(args)
                    .output()
                    .unwrap();
                (
                    out.status.code(),
                    String::from_utf8_lossy(&out.stdout).into_owned(),
                )
            })
            .await
            .unwrap()
        }
    };
    let (code, out) = check(P99, "<", "2500").await;
    assert_eq!(code, Some(0), "{out}");
    assert!(out.starts_with("✓ slo met: 24"), "{out}");
    let (code, out) = check(ERROR_RATIO, "<", "0.15").await;
    assert_eq!(code, Some(0), "{out}");
    let (code, out) = check(ERROR_RATIO, "<", "0.05").await;
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("VIOLATED: 0.") && out.contains(">= 0.05"),
        "{out}"
    );
    for (query, reason) in [
        (
            "sum(rate(envoy_cluster_upstream_rq_total[2m])",
            "query rejected (bad_data)",
        ),
        (
            "sum(rate(no_such_metric[2m]))",
            "no data: the query returned an empty vector",
        ),
        ("vector(0) / vector(0)", "NaN"),
        ("envoy_cluster_upstream_rq_total[1m]", "range vector"),
    ] {
        let (code, out) = check(query, "<", "1").await;
        assert_eq!(code, Some(2), "{query}: {out}");
        assert!(
            out.contains("COULD NOT JUDGE") && out.contains(reason),
            "{query}: {out}"
        );
    }
    proxy.shutdown().await;
}

/// Seed 000's fault mix as the upstream cluster sees it — 10 % answered 503, 70 % delayed
/// (2 s scaled to 200 ms: the cluster metrics seed 000's queries read count what the upstream
/// did) — driven by the load generator through the proxy for a few seconds, scraped every
/// second by a real Prometheus and by the embedded store alike. Both must reach the same verdicts
/// on seed 000's two SLOs, with values within 2 % of each other (the two scrape at different
/// instants, which moves `rate`'s extrapolation a little).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_000_slos_judged_the_same_by_prometheus_and_embedded() {
    use shakedown_slo::{Outcome, judge, store::Store};

    let stub = Stub::start().await.unwrap();
    let proxy = start_proxy(&stub).await;
    let listen = proxy.listener_addr("outbound").unwrap();
    let admin = proxy.admin_addr();
    let prom = start_prometheus(admin);
    let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();

    // The embedded side scrapes the same endpoint every second.
    let store = std::sync::Arc::new(Store::new(Duration::from_secs(600)));
    let scraper = {
        let (store, client) = (store.clone(), client.clone());
        tokio::spawn(async move {
            loop {
                let t = now_ms();
                if let Some((200, text)) =
                    get(&client, format!("http://{admin}/stats/prometheus")).await
                {
                    store.ingest(t, &text);
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        })
    };

    // A 503 and a slow 200 first, so every series the queries read exists before the load and
    // both sides have sampled it: a series that appears mid-run is extrapolated from wherever
    // each side happened to catch it first, which is not what this test compares.
    traffic(&client, listen, 0..2).await;
    let deadline = Instant::now() + Duration::from_secs(40);
    let scraped = format!(
        "count_over_time(envoy_cluster_upstream_rq_xx{{envoy_cluster_name=\"{CLUSTER}\", envoy_response_code_class=\"5\"}}[1m]) >= 2"
    );
    while query(&client, prom.addr, &scraped).await.is_none() {
        assert!(
            Instant::now() < deadline,
            "Prometheus never scraped the proxy"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let sampled_twice = |r: Result<shakedown_slo::QueryResult, _>| matches!(r, Ok(shakedown_slo::QueryResult::Vector(v)) if !v.is_empty());
    // `increase` has a value once a series has two samples in the window.
    let twice = format!(
        "increase(envoy_cluster_upstream_rq_xx{{envoy_cluster_name=\"{CLUSTER}\", envoy_response_code_class=\"5\"}}[1m])"
    );
    while !sampled_twice(shakedown_slo::eval::instant(&store, &twice, now_ms())) {
        assert!(
            Instant::now() < deadline,
            "the embedded store never scraped the proxy"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let load = shakedown_model::LoadSpec::load(
        "load.yaml",
        &format!(
            "target: http://{listen}\nrequests:\n  - {{name: ok, path: /search, weight: 20}}\n  - {{name: slow, path: /search?delay_ms=200, weight: 70}}\n  - {{name: fail, path: /search?status=503, weight: 10}}\nscenario: {{executor: constant-arrival-rate, rate: 100, duration: 6s, connections: 40}}\nseed: 7\n"
        ),
    )
    .unwrap();
    let report = shakedown_load::run(&load, shakedown_load::RunOptions::default())
        .await
        .unwrap();
    let total = report.samples.http_reqs + 2;
    assert_eq!(report.samples.http_reqs, 600);

    // Both sides have sampled the final counts.
    let seen =
        format!("envoy_cluster_upstream_rq_total{{envoy_cluster_name=\"{CLUSTER}\"}} >= {total}");
    while query(&client, prom.addr, &seen).await.is_none() {
        let have = query(
            &client,
            prom.addr,
            &format!("envoy_cluster_upstream_rq_total{{envoy_cluster_name=\"{CLUSTER}\"}}"),
        )
        .await;
        assert!(
            Instant::now() < deadline,
            "Prometheus never saw the load: {have:?} of {total}; {:?}",
            report.samples.errors
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_millis(1200)).await;
    scraper.abort();
    let t_ms = now_ms();

    let prometheus = shakedown_slo::Prometheus::at(&format!("http://{}", prom.addr)).unwrap();
    let slos = shakedown_model::slo::SloFile::load(
        "slos.yaml",
        &format!("slos:\n  - {{name: p99, query: '{P99}', op: '<', threshold: 2500}}\n  - {{name: errors, query: '{ERROR_RATIO}', op: '<', threshold: 0.15}}\n"),
    )
    .unwrap()
    .slos;
    let fails = report.samples.statuses.get(&503).copied().unwrap_or(0) as f64 + 1.0;
    for slo in &slos {
        let real = judge(
            slo,
            prometheus
                .query(slo.query().unwrap(), Some(t_ms as f64 / 1000.0))
                .await,
        );
        let embedded = shakedown_slo::judge_embedded(slo, &store, t_ms);
        println!(
            "{}: prometheus {:?} {}, embedded {:?} {}",
            slo.name, real.outcome, real.detail, embedded.outcome, embedded.detail
        );
        assert_eq!(real.outcome, Outcome::Met, "{real:?}");
        assert_eq!(embedded.outcome, real.outcome, "{embedded:?}");
        let (r, e) = (real.value.unwrap(), embedded.value.unwrap());
        assert!(
            (r - e).abs() <= 0.02 * r,
            "{}: prometheus {r}, embedded {e}",
            slo.name
        );
    }
    // And both are near what the load generator itself counted.
    let ratio = shakedown_slo::judge_embedded(&slos[1], &store, t_ms);
    assert!(
        (ratio.value.unwrap() - fails / total as f64).abs() < 0.01,
        "{ratio:?} vs {fails}/{total}"
    );
    proxy.shutdown().await;
}
