//! The load side in Prometheus's text format, served during a run (`--metrics-listen`), so the
//! Prometheus that scrapes the service can scrape the load too and the verdict can join both.
//!
//! Refreshed by the collector once per tick. Latency is a classic histogram in seconds whose
//! bucket counts come straight from the HDR histogram (`count ≤ le`), for `histogram_quantile`.
//! Hand-written exposition, as in the proxy: a few families, no registry needed.

use std::fmt::Write as _;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::samples::{STATUS_CLASSES, Samples, Tags, Trend};

/// Bucket bounds of the latency histograms, seconds (Prometheus's defaults, finer at the low end).
pub const BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Renders the run's totals so far.
pub fn render(s: &Samples, tags: &Tags, in_flight: u64) -> String {
    let mut out = String::with_capacity(4096);
    counter(
        &mut out,
        "shakedown_load_http_reqs_total",
        "Requests finished, by status class.",
        |o| {
            for (class, n) in STATUS_CLASSES.iter().zip(s.classes) {
                let _ = writeln!(
                    o,
                    "shakedown_load_http_reqs_total{{status_class=\"{class}\"}} {n}"
                );
            }
        },
    );
    counter(
        &mut out,
        "shakedown_load_http_req_failed_total",
        "Requests counted in http_req_failed.",
        |o| {
            let _ = writeln!(o, "shakedown_load_http_req_failed_total {}", s.failed.trues);
        },
    );
    for (name, v, help) in [
        (
            "shakedown_load_iterations_total",
            s.iterations,
            "Iterations finished.",
        ),
        (
            "shakedown_load_dropped_iterations_total",
            s.dropped,
            "Planned requests dropped (over max_in_flight).",
        ),
        (
            "shakedown_load_data_sent_bytes_total",
            s.data_sent,
            "Bytes written to the wire.",
        ),
        (
            "shakedown_load_data_received_bytes_total",
            s.data_received,
            "Bytes read from the wire.",
        ),
    ] {
        counter(&mut out, name, help, |o| {
            let _ = writeln!(o, "{name} {v}");
        });
    }
    if !tags.checks.is_empty() {
        counter(
            &mut out,
            "shakedown_load_checks_total",
            "Check results.",
            |o| {
                for (name, r) in tags.checks.iter().zip(&s.per_check) {
                    let name = name.replace('\\', "\\\\").replace('"', "\\\"");
                    let _ = writeln!(
                        o,
                        "shakedown_load_checks_total{{check=\"{name}\",result=\"pass\"}} {}",
                        r.trues
                    );
                    let _ = writeln!(
                        o,
                        "shakedown_load_checks_total{{check=\"{name}\",result=\"fail\"}} {}",
                        r.total - r.trues
                    );
                }
            },
        );
    }
    let _ = writeln!(
        out,
        "# HELP shakedown_load_in_flight Requests planned and not finished (open model) or in flight (closed).\n# TYPE shakedown_load_in_flight gauge\nshakedown_load_in_flight {in_flight}"
    );
    let _ = writeln!(
        out,
        "# HELP shakedown_load_vus Active virtual users or busy connections.\n# TYPE shakedown_load_vus gauge\nshakedown_load_vus {}",
        s.vus.value
    );
    histogram(
        &mut out,
        "shakedown_load_http_req_duration_seconds",
        "Latency from the intended send (open model) or the send (closed).",
        &s.duration,
    );
    histogram(
        &mut out,
        "shakedown_load_http_req_duration_uncorrected_seconds",
        "Latency from the actual send.",
        &s.uncorrected,
    );
    out
}

fn counter(out: &mut String, name: &str, help: &str, body: impl FnOnce(&mut String)) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
    body(out);
}

fn histogram(out: &mut String, name: &str, help: &str, t: &Trend) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
    for le in BUCKETS {
        let n = t.count_at_most((le * 1e6).round() as u64);
        let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {n}");
    }
    let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", t.count());
    let _ = writeln!(out, "{name}_sum {}", t.sum_seconds());
    let _ = writeln!(out, "{name}_count {}", t.count());
}

/// Serves the latest rendering on every path until the sender is dropped.
pub async fn serve(listener: TcpListener, latest: watch::Receiver<Arc<String>>) {
    let mut closed = latest.clone();
    loop {
        let (stream, _) = tokio::select! {
            a = listener.accept() => match a { Ok(a) => a, Err(_) => continue },
            _ = closed.changed() => {
                if closed.has_changed().is_err() { return } else { continue }
            }
        };
        let latest = latest.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |_req| {
                let body = latest.borrow().clone();
                async move {
                    let mut resp =
                        hyper::Response::new(Full::new(Bytes::from(body.as_bytes().to_vec())));
                    resp.headers_mut().insert(
                        http::header::CONTENT_TYPE,
                        http::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
                    );
                    Ok::<_, std::convert::Infallible>(resp)
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}
