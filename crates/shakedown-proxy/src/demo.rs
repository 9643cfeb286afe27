//! The one-command demo: seed 000's fault, in front of a local upstream, nothing installed.
//!
//! It starts a stub "recommendation" upstream and a proxy on loopback, measures a baseline,
//! injects seed 000's `HTTPFault` (10 % aborted with 503, 70 % delayed 2 s) through the control
//! API in its Envoy form, polls `/config_dump` until the fault is live, measures again, shows the
//! Envoy metrics seed 000's PromQL reads, removes the fault, verifies it is gone, and stops.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use shakedown_model::ProxyConfig;
use shakedown_testkit::Stub;
use tokio::sync::Semaphore;

use crate::runtime::{Proxy, ProxyOptions};

/// Seed 000's EnvoyFilter `patch.value.typed_config`, as JSON.
pub const SEED_000_FAULT: &str = r#"{
  "ttl": "10m",
  "envoy": {
    "@type": "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault",
    "abort": {"httpStatus": 503, "percentage": {"numerator": 10, "denominator": "HUNDRED"}},
    "delay": {"fixedDelay": "2s", "percentage": {"numerator": 70, "denominator": "HUNDRED"}}
  }
}"#;

/// The Istio-style cluster name of seed 000's dependency.
pub const CLUSTER_STAT_NAME: &str = "outbound|80||recommendation-service.prod.svc.cluster.local";

/// Demo settings.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Requests per phase.
    pub requests: usize,
    /// Requests in flight at once.
    pub concurrency: usize,
    /// Seed of the fault decisions.
    pub seed: u64,
}

impl Default for DemoOptions {
    fn default() -> Self {
        Self {
            requests: 200,
            concurrency: 50,
            seed: 42,
        }
    }
}

/// What one phase measured.
#[derive(Debug, Clone, Default)]
pub struct Phase {
    /// Requests sent.
    pub sent: usize,
    /// Responses with status 503.
    pub status_503: usize,
    /// Other non-2xx responses or transport errors.
    pub other_errors: usize,
    /// Latencies, sorted.
    pub latencies: Vec<Duration>,
}

impl Phase {
    /// The `q`-quantile latency (nearest rank).
    pub fn quantile(&self, q: f64) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        let rank =
            ((q * self.latencies.len() as f64).ceil() as usize).clamp(1, self.latencies.len());
        self.latencies[rank - 1]
    }

    /// Requests slower than `d`.
    pub fn slower_than(&self, d: Duration) -> usize {
        self.latencies.iter().filter(|l| **l >= d).count()
    }
}

/// What the whole demo saw.
#[derive(Debug, Clone)]
pub struct DemoReport {
    /// Without the fault.
    pub baseline: Phase,
    /// With seed 000's fault.
    pub faulted: Phase,
    /// After removing it.
    pub after: Phase,
    /// Config version when the fault was seen live.
    pub live_version: u64,
    /// How long polling `/config_dump` took.
    pub live_after: Duration,
    /// Requests that reached the upstream during the faulted phase.
    pub upstream_requests_faulted: u64,
    /// Metric lines of interest from `/stats/prometheus`.
    pub metrics: Vec<String>,
}

type DemoClient = Client<HttpConnector, Full<Bytes>>;

/// Runs the demo, printing progress through `say`.
pub async fn run(opts: DemoOptions, mut say: impl FnMut(&str)) -> anyhow_lite::Result<DemoReport> {
    let upstream = Stub::start().await?;
    let config = ProxyConfig::load(
        "<demo>",
        &format!(
            "admin: {{address: 127.0.0.1:0}}\n\
             listeners:\n  - name: search-outbound\n    address: 127.0.0.1:0\n    stat_prefix: outbound_http\n    routes:\n      - match: {{prefix: /}}\n        cluster: recommendation\n\
             clusters:\n  - name: recommendation\n    stat_name: \"{CLUSTER_STAT_NAME}\"\n    endpoints: [\"{}\"]\n",
            upstream.addr()
        ),
    )
    .map_err(|e| anyhow_lite::Error(e.to_string()))?;
    let proxy = Proxy::start(
        config,
        ProxyOptions {
            seed: Some(opts.seed),
            ..Default::default()
        },
    )
    .await
    .map_err(|e| anyhow_lite::Error(e.to_string()))?;
    let listen = proxy
        .listener_addr("search-outbound")
        .ok_or_else(|| anyhow_lite::Error("listener missing".into()))?;
    let admin = proxy.admin_addr();
    let client: DemoClient = Client::builder(TokioExecutor::new()).build_http();
    say(&format!(
        "upstream (stub recommendation service) on http://{}",
        upstream.addr()
    ));
    say(&format!(
        "shakedown proxy on http://{listen}, admin on http://{admin}, seed {}",
        opts.seed
    ));

    say(&format!(
        "\n1. baseline: {} requests, {} at a time, no fault",
        opts.requests, opts.concurrency
    ));
    let baseline = load(&client, listen, &opts).await;
    say(&summary(&baseline));

    say("\n2. inject seed 000's HTTPFault (Envoy form) through the control API");
    say(&format!(
        "   PUT http://{admin}/faults/seed-000\n{}",
        indent(SEED_000_FAULT, "     ")
    ));
    let (status, body) = call(
        &client,
        Method::PUT,
        admin,
        "/faults/seed-000",
        SEED_000_FAULT,
    )
    .await?;
    if status != StatusCode::CREATED {
        return Err(anyhow_lite::Error(format!(
            "fault rejected: {status} {body}"
        )));
    }
    let wanted: u64 = serde_json::from_str::<serde_json::Value>(&body)?["version"]
        .as_u64()
        .unwrap_or(0);
    let polled = Instant::now();
    let live_version = loop {
        let (version, faults) = faults_in_config_dump(&client, admin).await?;
        if version >= wanted && faults.iter().any(|f| f["name"] == "seed-000") {
            break version;
        }
        if polled.elapsed() > Duration::from_secs(5) {
            return Err(anyhow_lite::Error(
                "fault never showed up in /config_dump".into(),
            ));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let live_after = polled.elapsed();
    say(&format!(
        "   /config_dump shows the fault at version {live_version} (polled {live_after:?}; no sleep needed)"
    ));

    say(&format!(
        "\n3. with the fault: {} requests, {} at a time",
        opts.requests, opts.concurrency
    ));
    let before_upstream = upstream.requests();
    let faulted = load(&client, listen, &opts).await;
    let upstream_requests_faulted = upstream.requests() - before_upstream;
    say(&summary(&faulted));
    say(&format!(
        "   delayed >= 2s: {} ({:.1}%, configured 70%); aborted 503: {} ({:.1}%, configured 10%)",
        faulted.slower_than(Duration::from_secs(2)),
        pct(faulted.slower_than(Duration::from_secs(2)), faulted.sent),
        faulted.status_503,
        pct(faulted.status_503, faulted.sent)
    ));
    say(&format!(
        "   requests that reached the upstream: {upstream_requests_faulted} (aborted ones never do, as in Envoy)"
    ));

    say("\n4. Envoy metrics on /stats/prometheus (the series seed 000's PromQL reads)");
    let (_, text) = call(&client, Method::GET, admin, "/stats/prometheus", "").await?;
    let metrics: Vec<String> = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.starts_with("envoy_cluster_upstream_rq_total")
                || l.starts_with("envoy_cluster_upstream_rq_xx")
                || l.starts_with("envoy_cluster_upstream_rq_time_count")
                || (l.starts_with("envoy_http_downstream_rq_xx") && l.contains("outbound_http"))
                || l.starts_with("envoy_http_fault_")
        })
        .map(str::to_owned)
        .collect();
    for m in &metrics {
        say(&format!("   {m}"));
    }

    say("\n5. remove the fault and verify it is gone");
    let (status, _) = call(&client, Method::DELETE, admin, "/faults/seed-000", "").await?;
    let gone = faults_in_config_dump(&client, admin).await?.1.is_empty();
    let after = load(
        &client,
        listen,
        &DemoOptions {
            requests: opts.requests.min(50),
            ..opts.clone()
        },
    )
    .await;
    say(&format!(
        "   DELETE -> {status}; /config_dump lists {} faults",
        if gone { "no" } else { "SOME" }
    ));
    say(&summary(&after));

    proxy.shutdown().await;
    Ok(DemoReport {
        baseline,
        faulted,
        after,
        live_version,
        live_after,
        upstream_requests_faulted,
        metrics,
    })
}

/// The config version and the fault list of `/config_dump?resource=faults`.
async fn faults_in_config_dump(
    client: &DemoClient,
    admin: SocketAddr,
) -> anyhow_lite::Result<(u64, Vec<serde_json::Value>)> {
    let (_, dump) = call(
        client,
        Method::GET,
        admin,
        "/config_dump?resource=faults",
        "",
    )
    .await?;
    let dump: serde_json::Value = serde_json::from_str(&dump)?;
    let faults = dump["configs"][0]["faults"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    Ok((dump["version"].as_u64().unwrap_or(0), faults))
}

async fn load(client: &DemoClient, addr: SocketAddr, opts: &DemoOptions) -> Phase {
    let permits = Arc::new(Semaphore::new(opts.concurrency.max(1)));
    let mut tasks = Vec::with_capacity(opts.requests);
    for i in 0..opts.requests {
        let permit = permits.clone().acquire_owned().await;
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            let _permit = permit;
            let started = Instant::now();
            let req = Request::get(format!("http://{addr}/recommendations?q=tekton&i={i}"))
                .body(Full::new(Bytes::new()));
            let status = match req {
                Ok(req) => match client.request(req).await {
                    Ok(resp) => {
                        let status = resp.status();
                        let _ = resp.into_body().collect().await;
                        Some(status)
                    }
                    Err(_) => None,
                },
                Err(_) => None,
            };
            (status, started.elapsed())
        }));
    }
    let mut phase = Phase {
        sent: opts.requests,
        ..Phase::default()
    };
    for t in tasks {
        if let Ok((status, latency)) = t.await {
            match status {
                Some(StatusCode::SERVICE_UNAVAILABLE) => phase.status_503 += 1,
                Some(s) if s.is_success() => {}
                _ => phase.other_errors += 1,
            }
            phase.latencies.push(latency);
        }
    }
    phase.latencies.sort();
    phase
}

async fn call(
    client: &DemoClient,
    method: Method,
    addr: SocketAddr,
    path: &str,
    body: &str,
) -> anyhow_lite::Result<(StatusCode, String)> {
    let req = Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_owned())))
        .map_err(|e| anyhow_lite::Error(e.to_string()))?;
    let resp = client
        .request(req)
        .await
        .map_err(|e| anyhow_lite::Error(e.to_string()))?;
    let status = resp.status();
    let bytes = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| anyhow_lite::Error(e.to_string()))?
        .to_bytes();
    Ok((status, String::from_utf8_lossy(&bytes).into_owned()))
}

fn summary(p: &Phase) -> String {
    let mut s = String::new();
    let _ = write!(
        s,
        "   {} requests: {} ok, {} x 503, {} other errors; latency p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        p.sent,
        p.sent - p.status_503 - p.other_errors,
        p.status_503,
        p.other_errors,
        ms(p.quantile(0.50)),
        ms(p.quantile(0.99)),
        ms(p.latencies.last().copied().unwrap_or_default()),
    );
    s
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn pct(n: usize, of: usize) -> f64 {
    if of == 0 {
        0.0
    } else {
        100.0 * n as f64 / of as f64
    }
}

fn indent(text: &str, pad: &str) -> String {
    text.lines()
        .map(|l| format!("{pad}{l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A tiny error type so the library does not depend on `anyhow` (binaries do).
pub mod anyhow_lite {
    /// A message.
    #[derive(Debug)]
    pub struct Error(pub String);

    impl std::fmt::Display for Error {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(&self.0)
        }
    }

    impl std::error::Error for Error {}

    impl From<std::io::Error> for Error {
        fn from(e: std::io::Error) -> Self {
            Self(e.to_string())
        }
    }

    impl From<serde_json::Error> for Error {
        fn from(e: serde_json::Error) -> Self {
            Self(e.to_string())
        }
    }

    /// A result with [`Error`].
    pub type Result<T> = std::result::Result<T, Error>;
}
