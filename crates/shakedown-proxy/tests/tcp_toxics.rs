//! TCP proxies and Toxiproxy's toxics over real sockets on 127.0.0.1:0, driven through the
//! Toxiproxy-compatible API: every toxic and attribute, both streams, toxicity 0 / 1 / seeded
//! fractions, stacking, toxics added to open connections, down and up, deadlines, removal under
//! sustained traffic, bad input, HTTP toxics on HTTP listeners, toxics from the config file and
//! the metrics.
//!
//! Timing checks have a floor (a toxic never acts early) and a generous ceiling (a loaded CI
//! machine); BENCHMARKS.md has the precise figures.

mod fixture;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use fixture::{Env, Reply, eventually, metric_value, send};
use http::Method;
use serde_json::{Value, json};
use shakedown_proxy::ProxyOptions;
use shakedown_testkit::Stub;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const MS: Duration = Duration::from_millis(1);

/// An upstream that echoes every byte and closes when the client does.
async fn echo_server() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    addr
}

/// An upstream that sends `n` bytes (a repeating pattern) on each connection, then closes.
async fn source_server(n: usize) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let data: Vec<u8> = (0..n).map(|i| (i % 251) as u8).collect();
                let _ = s.write_all(&data).await;
                let _ = s.shutdown().await;
            });
        }
    });
    addr
}

struct T {
    env: Env,
    echo: SocketAddr,
}

impl T {
    async fn new(seed: u64) -> T {
        Self::with(seed, "").await
    }

    async fn with(seed: u64, extra: &str) -> T {
        let stub = Stub::start().await.unwrap();
        let echo = echo_server().await;
        let text = format!(
            "{}toxiproxy: {{address: 127.0.0.1:0}}\n{}",
            fixture::base_config(stub.addr(), seed),
            extra.replace("ECHO", &echo.to_string())
        );
        let env = Env::from_config(stub, &text, ProxyOptions::default()).await;
        T { env, echo }
    }

    async fn api(&self, method: Method, path: &str, body: &str) -> Reply {
        let addr = self.env.proxy.toxiproxy_addr().expect("toxiproxy API");
        send(
            &self.env.http1,
            method,
            addr,
            path,
            &[("content-type", "application/json")],
            Bytes::from(body.to_owned()),
        )
        .await
    }

    /// Creates proxy `name` to `upstream`; returns its listen address.
    async fn proxy_to(&self, name: &str, upstream: SocketAddr) -> SocketAddr {
        let r = self
            .api(
                Method::POST,
                "/proxies",
                &json!({"name": name, "listen": "127.0.0.1:0", "upstream": upstream.to_string()})
                    .to_string(),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.text());
        r.json()["listen"].as_str().unwrap().parse().unwrap()
    }

    async fn echo_proxy(&self, name: &str) -> SocketAddr {
        self.proxy_to(name, self.echo).await
    }

    async fn toxic(&self, proxy: &str, body: Value) -> Value {
        let r = self
            .api(
                Method::POST,
                &format!("/proxies/{proxy}/toxics"),
                &body.to_string(),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()
    }

    async fn remove(&self, proxy: &str, toxic: &str) {
        let r = self
            .api(
                Method::DELETE,
                &format!("/proxies/{proxy}/toxics/{toxic}"),
                "",
            )
            .await;
        assert_eq!(r.status, 204, "{}", r.text());
    }
}

async fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).await.unwrap();
    s.set_nodelay(true).unwrap();
    s
}

/// Writes `msg` and reads the echo back; the time it took.
async fn roundtrip(s: &mut TcpStream, msg: &[u8]) -> Duration {
    let start = Instant::now();
    s.write_all(msg).await.unwrap();
    let mut back = vec![0; msg.len()];
    tokio::time::timeout(Duration::from_secs(10), s.read_exact(&mut back))
        .await
        .expect("echo within 10 s")
        .unwrap();
    assert_eq!(back, msg);
    start.elapsed()
}

/// Reads until EOF or error (bounded); the bytes and how it ended.
async fn drain(s: &mut TcpStream, limit: Duration) -> (Vec<u8>, std::io::Result<()>) {
    let mut out = Vec::new();
    let mut buf = [0u8; 65536];
    let r = tokio::time::timeout(limit, async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) => return Ok(()),
                Ok(n) => out.extend_from_slice(&buf[..n]),
                Err(e) => return Err(e),
            }
        }
    })
    .await
    .unwrap_or_else(|_| Err(std::io::Error::other("still open")));
    (out, r)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_toxics_bytes_pass_exactly_and_half_closes_carry_through() {
    let t = T::new(1).await;
    let addr = t.echo_proxy("echo").await;
    // 8 MiB each way at once, a pattern the echo must return unchanged.
    let s = connect(addr).await;
    let (mut r, mut w) = s.into_split();
    let data: Vec<u8> = (0..8 << 20)
        .map(|i: u32| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    let sent = data.clone();
    let writer = tokio::spawn(async move {
        w.write_all(&sent).await.unwrap();
        w.shutdown().await.unwrap(); // half-close: the echo ends when it has sent everything
    });
    let mut back = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), r.read_to_end(&mut back))
        .await
        .unwrap()
        .unwrap();
    writer.await.unwrap();
    assert!(
        back == data,
        "echoed {} of {} bytes, or changed",
        back.len(),
        data.len()
    );

    // A server that answers and closes at once loses nothing, with or without a toxic on the
    // way (noxious drops such answers).
    let addr = t.proxy_to("src", source_server(300_000).await).await;
    for toxic in [
        None,
        Some(json!({"type": "latency", "attributes": {"latency": 30}})),
    ] {
        if let Some(toxic) = toxic {
            t.toxic("src", toxic).await;
        }
        let mut s = connect(addr).await;
        let (got, end) = drain(&mut s, Duration::from_secs(10)).await;
        end.unwrap();
        assert_eq!(got.len(), 300_000);
        assert!(got.iter().enumerate().all(|(i, b)| *b == (i % 251) as u8));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latency_and_jitter_in_each_direction() {
    let t = T::new(1).await;
    let addr = t.echo_proxy("echo").await;
    let mut s = connect(addr).await;
    assert!(roundtrip(&mut s, b"warm").await < 100 * MS);

    t.toxic(
        "echo",
        json!({"type": "latency", "attributes": {"latency": 100}}),
    )
    .await;
    let took = roundtrip(&mut s, b"down").await;
    assert!(took >= 100 * MS && took < 400 * MS, "{took:?}");

    // Both streams: the delays add up.
    t.toxic(
        "echo",
        json!({"type": "latency", "stream": "upstream", "attributes": {"latency": 50}}),
    )
    .await;
    let took = roundtrip(&mut s, b"both").await;
    assert!(took >= 150 * MS && took < 450 * MS, "{took:?}");
    t.remove("echo", "latency_downstream").await;
    t.remove("echo", "latency_upstream").await;

    // Jitter: every delay within latency ± jitter, and not all the same.
    t.toxic(
        "echo",
        json!({"name": "j", "type": "latency", "attributes": {"latency": 60, "jitter": 40}}),
    )
    .await;
    let mut seen = Vec::new();
    for i in 0..8u8 {
        let took = roundtrip(&mut s, &[i]).await;
        assert!(took >= 20 * MS && took < 350 * MS, "{took:?}");
        seen.push(took.as_millis());
    }
    seen.sort();
    assert!(seen[7] - seen[0] >= 10, "jitter varies the delay: {seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bandwidth_paces_the_stream_and_loses_nothing() {
    let t = T::new(1).await;
    let addr = t.proxy_to("src", source_server(100_000).await).await;
    t.toxic(
        "src",
        json!({"type": "bandwidth", "attributes": {"rate": 100}}),
    )
    .await;
    let start = Instant::now();
    let mut s = connect(addr).await;
    let (data, end) = drain(&mut s, Duration::from_secs(10)).await;
    let took = start.elapsed();
    end.unwrap();
    assert_eq!(data.len(), 100_000);
    assert!(data.iter().enumerate().all(|(i, b)| *b == (i % 251) as u8));
    // 100 KB at 100 KB/s: one second (the first 100 ms worth goes at once).
    assert!(took >= 850 * MS && took < 3000 * MS, "{took:?}");

    // Upstream direction, on the echo proxy: 20 KB up at 50 KB/s ≈ 0.4 s.
    let addr = t.echo_proxy("echo").await;
    t.toxic(
        "echo",
        json!({"type": "bandwidth", "stream": "upstream", "attributes": {"rate": 50}}),
    )
    .await;
    let mut s = connect(addr).await;
    let took = roundtrip(&mut s, &[7u8; 20_000]).await;
    assert!(took >= 300 * MS && took < 2000 * MS, "{took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_close_delays_the_close_only() {
    let t = T::new(1).await;
    let addr = t.proxy_to("src", source_server(10).await).await;
    t.toxic(
        "src",
        json!({"type": "slow_close", "attributes": {"delay": 300}}),
    )
    .await;
    let start = Instant::now();
    let mut s = connect(addr).await;
    let mut first = [0u8; 10];
    s.read_exact(&mut first).await.unwrap();
    let data_at = start.elapsed();
    let (rest, end) = drain(&mut s, Duration::from_secs(5)).await;
    end.unwrap();
    assert!(rest.is_empty());
    let closed_at = start.elapsed();
    assert!(data_at < 200 * MS, "data is not delayed: {data_at:?}");
    assert!(
        closed_at >= 300 * MS && closed_at < 2000 * MS,
        "{closed_at:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeout_drops_data_then_closes_and_zero_is_a_black_hole() {
    let t = T::new(1).await;
    let addr = t.echo_proxy("echo").await;
    t.toxic(
        "echo",
        json!({"name": "t", "type": "timeout", "attributes": {"timeout": 200}}),
    )
    .await;
    let start = Instant::now();
    let mut s = connect(addr).await;
    s.write_all(b"lost").await.unwrap();
    let (data, _) = drain(&mut s, Duration::from_secs(5)).await;
    let took = start.elapsed();
    assert!(data.is_empty(), "data is dropped");
    assert!(took >= 200 * MS && took < 2000 * MS, "{took:?}");
    t.remove("echo", "t").await;

    // timeout 0: nothing passes, nothing closes, until the toxic is removed (which closes the
    // connection, as in Toxiproxy).
    t.toxic(
        "echo",
        json!({"name": "hole", "type": "timeout", "attributes": {"timeout": 0}}),
    )
    .await;
    let mut s = connect(addr).await;
    s.write_all(b"into the void").await.unwrap();
    let mut buf = [0u8; 16];
    let r = tokio::time::timeout(400 * MS, s.read(&mut buf)).await;
    assert!(r.is_err(), "black hole: neither data nor close, got {r:?}");
    t.remove("echo", "hole").await;
    let (data, end) = drain(&mut s, Duration::from_secs(5)).await;
    assert!(data.is_empty());
    assert!(
        end.is_ok()
            || end
                .as_ref()
                .is_err_and(|e| e.kind() != std::io::ErrorKind::Other)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_peer_resets_after_its_timeout_and_toxicity_zero_is_inert() {
    let t = T::new(1).await;
    let addr = t.echo_proxy("echo").await;
    // Toxicity 0 never applies, not even reset_peer (Toxiproxy's bug #603).
    t.toxic(
        "echo",
        json!({"name": "r0", "type": "reset_peer", "toxicity": 0.0, "attributes": {"timeout": 0}}),
    )
    .await;
    let mut s = connect(addr).await;
    roundtrip(&mut s, b"still fine").await;
    t.remove("echo", "r0").await;

    t.toxic(
        "echo",
        json!({"name": "r", "type": "reset_peer", "stream": "upstream", "attributes": {"timeout": 150}}),
    )
    .await;
    let mut s = connect(addr).await;
    let start = Instant::now();
    s.write_all(b"hello").await.unwrap();
    let (data, end) = drain(&mut s, Duration::from_secs(5)).await;
    let took = start.elapsed();
    assert!(data.is_empty());
    let err = end.expect_err("a reset, not a clean close");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset, "{err}");
    assert!(took >= 150 * MS && took < 2000 * MS, "{took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slicer_cuts_data_into_delayed_slices() {
    let t = T::new(1).await;
    let addr = t.proxy_to("src", source_server(100).await).await;
    t.toxic(
        "src",
        json!({"type": "slicer", "attributes": {"average_size": 10, "size_variation": 0, "delay": 30000}}),
    )
    .await;
    let start = Instant::now();
    let mut s = connect(addr).await;
    let mut reads = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        if n == 0 {
            break;
        }
        reads.push(n);
    }
    let took = start.elapsed();
    assert_eq!(reads.iter().sum::<usize>(), 100);
    // Ten slices of 10 bytes, 30 ms apart: the client sees them one by one.
    assert!(reads.len() >= 8, "{reads:?}");
    assert!(reads.iter().all(|n| *n <= 20), "{reads:?}");
    assert!(took >= 270 * MS && took < 3000 * MS, "{took:?}");

    // size_variation: slices between average − variation and average + variation.
    let addr = t.proxy_to("var", source_server(2000).await).await;
    t.toxic(
        "var",
        json!({"type": "slicer", "attributes": {"average_size": 100, "size_variation": 50, "delay": 1000}}),
    )
    .await;
    let mut s = connect(addr).await;
    let (data, end) = drain(&mut s, Duration::from_secs(5)).await;
    end.unwrap();
    assert_eq!(data.len(), 2000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limit_data_passes_n_bytes_then_closes() {
    let t = T::new(1).await;
    let addr = t.proxy_to("src", source_server(10_000).await).await;
    t.toxic(
        "src",
        json!({"type": "limit_data", "attributes": {"bytes": 1234}}),
    )
    .await;
    let mut s = connect(addr).await;
    let (data, _) = drain(&mut s, Duration::from_secs(5)).await;
    assert_eq!(data.len(), 1234);

    // Upstream, counted over the connection: two writes of 60 with a limit of 100; the
    // server gets exactly 100 bytes, then the connection closes.
    let (sink, mut counts) = sink_server().await;
    let addr = t.proxy_to("sink", sink).await;
    t.toxic(
        "sink",
        json!({"type": "limit_data", "stream": "upstream", "attributes": {"bytes": 100}}),
    )
    .await;
    let mut s = connect(addr).await;
    s.write_all(&[1u8; 60]).await.unwrap();
    tokio::time::sleep(50 * MS).await;
    let _ = s.write_all(&[2u8; 60]).await;
    let (_, end) = drain(&mut s, Duration::from_secs(5)).await;
    assert!(
        end.as_ref()
            .map_or_else(|e| e.kind() != std::io::ErrorKind::Other, |()| true),
        "closed after the limit: {end:?}"
    );
    let got = tokio::time::timeout(Duration::from_secs(5), counts.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got, 100);
}

/// An upstream that counts the bytes of each connection until it ends, and reports them.
async fn sink_server() -> (SocketAddr, tokio::sync::mpsc::UnboundedReceiver<usize>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut n = 0;
                let mut buf = [0u8; 4096];
                while let Ok(k) = s.read(&mut buf).await {
                    if k == 0 {
                        break;
                    }
                    n += k;
                }
                let _ = tx.send(n);
            });
        }
    });
    (addr, rx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fractional_toxicity_is_drawn_per_connection_from_the_seed() {
    async fn pattern(seed: u64) -> Vec<bool> {
        let t = T::new(seed).await;
        let addr = t.echo_proxy("echo").await;
        t.toxic(
            "echo",
            json!({"type": "latency", "toxicity": 0.5, "attributes": {"latency": 150}}),
        )
        .await;
        let mut out = Vec::new();
        for _ in 0..24 {
            let mut s = connect(addr).await;
            out.push(roundtrip(&mut s, b"?").await >= 150 * MS);
        }
        let applied = metric_value(
            &t.env.proxy.render_metrics(),
            "shakedown_tcp_toxic_applications_total",
            &[
                ("proxy", "echo"),
                ("toxic", "latency_downstream"),
                ("type", "latency"),
                ("stream", "downstream"),
            ],
        );
        assert_eq!(
            applied,
            Some(out.iter().filter(|x| **x).count() as f64),
            "the metric counts the connections it applied to"
        );
        out
    }
    let a = pattern(7).await;
    let hits = a.iter().filter(|x| **x).count();
    assert!((4..=20).contains(&hits), "about half of 24: {hits}");
    assert_eq!(a, pattern(7).await, "same seed, same connections affected");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn toxics_stack_in_order_and_reach_open_connections() {
    let t = T::new(1).await;
    let addr = t.echo_proxy("echo").await;
    // Opened before any toxic.
    let mut s = connect(addr).await;
    assert!(roundtrip(&mut s, b"a").await < 100 * MS);
    t.toxic(
        "echo",
        json!({"name": "l1", "type": "latency", "attributes": {"latency": 60}}),
    )
    .await;
    t.toxic(
        "echo",
        json!({"name": "l2", "type": "latency", "attributes": {"latency": 60}}),
    )
    .await;
    let took = roundtrip(&mut s, b"b").await;
    assert!(took >= 120 * MS && took < 500 * MS, "stacked: {took:?}");
    let list = t.api(Method::GET, "/proxies/echo/toxics", "").await.json();
    let names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["l1", "l2"], "chain order");

    // Updating an attribute reaches the open connection too.
    let r = t
        .api(
            Method::PATCH,
            "/proxies/echo/toxics/l2",
            r#"{"attributes": {"latency": 0}}"#,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["attributes"]["latency"], 0);
    let took = roundtrip(&mut s, b"c").await;
    assert!(took >= 60 * MS && took < 400 * MS, "{took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn down_cuts_connections_and_up_restores_the_same_port() {
    let t = T::new(1).await;
    let addr = t.echo_proxy("echo").await;
    let mut s = connect(addr).await;
    roundtrip(&mut s, b"x").await;
    let r = t
        .api(Method::POST, "/proxies/echo", r#"{"enabled": false}"#)
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["enabled"], false);
    let (_, end) = drain(&mut s, Duration::from_secs(5)).await;
    assert!(
        end.as_ref()
            .map_or_else(|e| e.kind() != std::io::ErrorKind::Other, |()| true),
        "cut (EOF or reset), not left hanging: {end:?}"
    );
    assert!(TcpStream::connect(addr).await.is_err(), "not listening");

    let r = t
        .api(Method::PATCH, "/proxies/echo", r#"{"enabled": true}"#)
        .await;
    assert_eq!(r.json()["enabled"], true);
    assert_eq!(r.json()["listen"], addr.to_string());
    let mut s = connect(addr).await;
    roundtrip(&mut s, b"back").await;

    // /reset: every proxy up, every toxic gone.
    t.toxic(
        "echo",
        json!({"type": "latency", "attributes": {"latency": 500}}),
    )
    .await;
    t.api(Method::POST, "/proxies/echo", r#"{"enabled": false}"#)
        .await;
    let r = t.api(Method::POST, "/reset", "").await;
    assert_eq!(r.status, 204);
    let p = t.api(Method::GET, "/proxies/echo", "").await.json();
    assert_eq!(p["enabled"], true);
    assert_eq!(p["toxics"], json!([]));
    let mut s = connect(addr).await;
    assert!(roundtrip(&mut s, b"fast").await < 300 * MS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_toxic_with_a_deadline_removes_itself() {
    let t = T::new(1).await;
    let addr = t.echo_proxy("echo").await;
    let body = t
        .toxic(
            "echo",
            json!({"name": "brief", "type": "latency", "ttl": "400ms", "attributes": {"latency": 200}}),
        )
        .await;
    assert!(body["expires_at"].is_string(), "{body}");
    let mut s = connect(addr).await;
    assert!(roundtrip(&mut s, b"slow").await >= 200 * MS);
    assert!(
        eventually(Duration::from_secs(5), async || {
            t.api(Method::GET, "/proxies/echo/toxics", "").await.json() == json!([])
        })
        .await,
        "the toxic is gone after its deadline"
    );
    assert!(roundtrip(&mut s, b"fast").await < 150 * MS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_a_toxic_under_sustained_traffic_is_prompt() {
    let t = T::new(1).await;
    let addr = t.echo_proxy("echo").await;
    t.toxic(
        "echo",
        json!({"name": "slow", "type": "latency", "attributes": {"latency": 2000}}),
    )
    .await;
    // A writer that keeps the chain full for the whole test, and a reader that drains it.
    let s = connect(addr).await;
    let (mut r, mut w) = s.into_split();
    let writer = tokio::spawn(async move {
        let chunk = vec![9u8; 4096];
        let end = Instant::now() + Duration::from_secs(4);
        while Instant::now() < end {
            if w.write_all(&chunk).await.is_err() {
                break;
            }
            tokio::time::sleep(2 * MS).await;
        }
    });
    let got = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = got.clone();
    let reader = tokio::spawn(async move {
        let mut buf = vec![0u8; 65536];
        while let Ok(Ok(n)) = tokio::time::timeout(Duration::from_secs(6), r.read(&mut buf)).await {
            if n == 0 {
                break;
            }
            counter.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
        }
    });
    tokio::time::sleep(500 * MS).await;
    assert_eq!(got.load(std::sync::atomic::Ordering::Relaxed), 0, "held");
    let start = Instant::now();
    t.remove("echo", "slow").await;
    let api_took = start.elapsed();
    assert!(api_took < 500 * MS, "the API answered in {api_took:?}");
    assert!(
        eventually(Duration::from_secs(2), async || got
            .load(std::sync::atomic::Ordering::Relaxed)
            > 0)
        .await,
        "held data flows at once"
    );
    writer.abort();
    reader.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_a_4xx_with_a_reason_and_changes_nothing() {
    let t = T::new(1).await;
    t.echo_proxy("echo").await;
    t.toxic(
        "echo",
        json!({"name": "keep", "type": "latency", "attributes": {"latency": 1}}),
    )
    .await;
    let before = t.api(Method::GET, "/proxies", "").await.json();
    // Upstreams are the test's own echo server; none of these requests reaches it.
    let dup = format!(r#"{{"name": "echo", "upstream": "{}"}}"#, t.echo);
    let no_name = format!(r#"{{"listen": "127.0.0.1:0", "upstream": "{}"}}"#, t.echo);
    let populate = format!(
        r#"[{{"name": "ok", "upstream": "{0}"}}, {{"upstream": "{0}"}}]"#,
        t.echo
    );
    let cases: &[(Method, &str, &str, u16, &str)] = &[
        (
            Method::POST,
            "/proxies/echo/toxics",
            r#"{"type": "lag"}"#,
            400,
            "invalid toxic type",
        ),
        (
            Method::POST,
            "/proxies/echo/toxics",
            r#"{"type": "latency", "attributes": {"latency": -1}}"#,
            400,
            "must not be negative",
        ),
        (
            Method::POST,
            "/proxies/echo/toxics",
            r#"{"type": "latency", "toxicity": 1.5}"#,
            400,
            "toxicity",
        ),
        (
            Method::POST,
            "/proxies/echo/toxics",
            r#"{"type": "latency", "stream": "both"}"#,
            400,
            "stream was invalid",
        ),
        (
            Method::POST,
            "/proxies/echo/toxics",
            r#"{"type": "latency", "#,
            400,
            "bad request body",
        ),
        (
            Method::POST,
            "/proxies/echo/toxics",
            r#"{"name": "keep", "type": "latency"}"#,
            409,
            "toxic already exists",
        ),
        (
            Method::POST,
            "/proxies/nope/toxics",
            r#"{"type": "latency"}"#,
            404,
            "proxy not found",
        ),
        (
            Method::GET,
            "/proxies/echo/toxics/nope",
            "",
            404,
            "toxic not found",
        ),
        (
            Method::DELETE,
            "/proxies/echo/toxics/nope",
            "",
            404,
            "toxic not found",
        ),
        (
            Method::PATCH,
            "/proxies/echo/toxics/keep",
            r#"{"toxicity": -0.1}"#,
            400,
            "toxicity",
        ),
        (Method::POST, "/proxies", &dup, 409, "proxy already exists"),
        (
            Method::POST,
            "/proxies",
            &no_name,
            400,
            "missing required field: name",
        ),
        (
            Method::POST,
            "/proxies",
            r#"{"name": "x"}"#,
            400,
            "missing required field: upstream",
        ),
        (
            Method::POST,
            "/proxies",
            r#"{"name": "x", "upstream": "no-port"}"#,
            400,
            "host:port",
        ),
        (
            Method::POST,
            "/populate",
            &populate,
            400,
            "missing required field: name at proxy 2",
        ),
        (Method::GET, "/proxies/nope", "", 404, "proxy not found"),
        (Method::DELETE, "/proxies/nope", "", 404, "proxy not found"),
    ];
    for (method, path, body, status, reason) in cases {
        let r = t.api(method.clone(), path, body).await;
        assert_eq!(
            r.status.as_u16(),
            *status,
            "{method} {path} {body}: {}",
            r.text()
        );
        let err = r.json();
        assert_eq!(err["status"], *status);
        let msg = err["error"].as_str().unwrap();
        assert!(
            msg.contains(reason),
            "{method} {path}: `{msg}` lacks `{reason}`"
        );
    }
    assert_eq!(t.api(Method::GET, "/proxies", "").await.json(), before);
    // Browsers are refused.
    let addr = t.env.proxy.toxiproxy_addr().unwrap();
    let r = send(
        &t.env.http1,
        Method::GET,
        addr,
        "/proxies",
        &[("user-agent", "Mozilla/5.0")],
        Bytes::new(),
    )
    .await;
    assert_eq!(r.status, 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_listeners_take_http_toxics_through_the_same_api() {
    let t = T::new(1).await;
    let proxies = t.api(Method::GET, "/proxies", "").await.json();
    assert_eq!(proxies["out"]["listen"], t.env.listen().to_string());
    assert_eq!(proxies["out"]["upstream"], t.env.stub.addr().to_string());

    let r = t
        .toxic(
            "out",
            json!({"name": "unavailable", "type": "http_abort", "attributes": {"status": 503}}),
        )
        .await;
    assert_eq!(r["attributes"]["status"], 503);
    assert_eq!(t.env.get("/").await.status, 503);
    // It is an HTTP fault of the listener, visible in the fault API too.
    let faults = t.env.admin_call(Method::GET, "/faults", "").await.json();
    assert_eq!(faults["faults"][0]["name"], "toxiproxy.out.unavailable");

    t.toxic(
        "out",
        json!({"name": "slow", "type": "http_delay", "attributes": {"delay": 150}}),
    )
    .await;
    t.remove("out", "unavailable").await;
    let reply = t.env.get("/").await;
    assert_eq!(reply.status, 200);
    assert!(reply.elapsed >= 150 * MS, "{:?}", reply.elapsed);
    // TCP toxics do not apply to an HTTP listener, and vice versa.
    let r = t
        .api(
            Method::POST,
            "/proxies/out/toxics",
            r#"{"type": "latency", "attributes": {"latency": 5}}"#,
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.text());
    t.echo_proxy("echo").await;
    let r = t
        .api(
            Method::POST,
            "/proxies/echo/toxics",
            r#"{"type": "http_abort", "attributes": {"status": 503}}"#,
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.text());
    // /reset removes HTTP toxics too.
    assert_eq!(t.api(Method::POST, "/reset", "").await.status, 204);
    assert!(t.env.get("/").await.elapsed < 150 * MS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn toxics_in_the_config_file_apply_from_the_start_and_metrics_count_bytes() {
    let t = T::with(
        3,
        "tcp_proxies:\n  - name: db\n    listen: 127.0.0.1:0\n    upstream: ECHO\n    toxics:\n      - {type: latency, attributes: {latency: 120}}\n",
    )
    .await;
    let addr = t.env.proxy.tcp().listen_addr("db").unwrap();
    let mut s = connect(addr).await;
    let took = roundtrip(&mut s, b"0123456789").await;
    assert!(took >= 120 * MS, "{took:?}");
    drop(s);
    // The connection ends asynchronously; byte counters are final once it is gone.
    assert!(
        eventually(Duration::from_secs(5), async || metric_value(
            &t.env.proxy.render_metrics(),
            "shakedown_tcp_connections_active",
            &[("proxy", "db")]
        ) == Some(0.0))
        .await
    );
    let echo = t.echo.to_string();
    let listen = addr.to_string();
    let text = t.env.proxy.render_metrics();
    for metric in [
        "toxiproxy_proxy_received_bytes_total",
        "toxiproxy_proxy_sent_bytes_total",
    ] {
        for dir in ["upstream", "downstream"] {
            // Toxiproxy's labels; `listener` is the bound address.
            let l = [
                ("direction", dir),
                ("listener", listen.as_str()),
                ("proxy", "db"),
                ("upstream", echo.as_str()),
            ];
            assert_eq!(
                metric_value(&text, metric, &l),
                Some(10.0),
                "{metric} {dir}\n{text}"
            );
        }
    }
    assert_eq!(
        metric_value(&text, "shakedown_tcp_connections_total", &[("proxy", "db")]),
        Some(1.0)
    );
    // The Toxiproxy port serves the same metrics.
    let addr = t.env.proxy.toxiproxy_addr().unwrap();
    let r = send(
        &t.env.http1,
        Method::GET,
        addr,
        "/metrics",
        &[],
        Bytes::new(),
    )
    .await;
    assert!(r.text().contains("toxiproxy_proxy_sent_bytes_total"));
    let v = t.api(Method::GET, "/version", "").await;
    assert!(v.json()["version"].as_str().unwrap().starts_with("2."));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_replaces_changed_tcp_proxies_and_a_bad_file_changes_nothing() {
    let echo = echo_server().await;
    let stub = Stub::start().await.unwrap();
    let dir = fixture::temp_dir("tcp-reload");
    let path = dir.join("proxy.yaml");
    let file = |toxics: &str| {
        format!(
            "admin: {{address: 127.0.0.1:0}}\ntcp_proxies:\n  - name: db\n    upstream: {echo}\n    toxics: {toxics}\n  - name: kept\n    upstream: {echo}\n"
        )
    };
    std::fs::write(&path, file("[{type: latency, attributes: {latency: 150}}]")).unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    let env = Env::from_config(
        stub,
        &text,
        ProxyOptions {
            config_path: Some(path.clone()),
            ..Default::default()
        },
    )
    .await;
    let tcp = env.proxy.tcp().clone();
    let db = tcp.listen_addr("db").unwrap();
    let mut kept = connect(tcp.listen_addr("kept").unwrap()).await;
    roundtrip(&mut kept, b"k").await;
    let mut s = connect(db).await;
    assert!(roundtrip(&mut s, b"slow").await >= 150 * MS);

    // A bad file: rejected with the field named, the running proxies untouched.
    std::fs::write(&path, file("[{type: latency, attributes: {latency: -1}}]")).unwrap();
    let err = env.proxy.reload().await.unwrap_err().to_string();
    assert!(
        err.contains("tcp_proxies[0].toxics[0].attributes.latency"),
        "{err}"
    );
    assert!(roundtrip(&mut s, b"still slow").await >= 150 * MS);

    // A good one: the changed proxy is replaced, the unchanged one keeps its connections.
    std::fs::write(&path, file("[]")).unwrap();
    env.proxy.reload().await.unwrap();
    let db = tcp.listen_addr("db").unwrap();
    let mut s = connect(db).await;
    assert!(roundtrip(&mut s, b"fast").await < 150 * MS);
    roundtrip(&mut kept, b"kept open").await;
    let _ = std::fs::remove_dir_all(&dir);
}
