//! Probes: an HTTP request to loopback with expectations on status, body and a JSON value, or a
//! command with an expected exit code.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::Serialize;
use shakedown_model::experiment::{Probe, ProbeAction};

/// What a probe found.
#[derive(Debug, Clone, Serialize)]
pub struct ProbeResult {
    /// Probe name.
    pub name: String,
    /// Whether every expectation held.
    pub ok: bool,
    /// What was seen, or why it failed.
    pub detail: String,
    /// How long it took, ms.
    pub took_ms: f64,
}

/// Runs a probe.
pub async fn run(p: &Probe) -> ProbeResult {
    let start = Instant::now();
    let (ok, detail) = match &p.action {
        ProbeAction::Http {
            url,
            method,
            status,
            body_contains,
            json,
        } => match request(method, url, p.timeout).await {
            Err(e) => (false, format!("{method} {url}: {e}")),
            Ok((code, body)) => {
                let text = String::from_utf8_lossy(&body);
                let status_ok = match status {
                    Some(s) => code == *s,
                    None => (200..300).contains(&code),
                };
                let mut problems = Vec::new();
                if !status_ok {
                    problems.push(format!(
                        "status {code}, expected {}",
                        status.map_or("2xx".to_owned(), |s| s.to_string())
                    ));
                }
                if let Some(needle) = body_contains
                    && !text.contains(needle.as_str())
                {
                    problems.push(format!("body lacks `{needle}`"));
                }
                if let Some((pointer, want)) = json {
                    match serde_json::from_slice::<serde_json::Value>(&body) {
                        Ok(v) => match v.pointer(pointer) {
                            Some(got) if got == want => {}
                            Some(got) => {
                                problems.push(format!("{pointer} is {got}, expected {want}"))
                            }
                            None => problems.push(format!("{pointer} is absent")),
                        },
                        Err(e) => problems.push(format!("body is not JSON: {e}")),
                    }
                }
                if problems.is_empty() {
                    (true, format!("{method} {url} → {code}"))
                } else {
                    (false, format!("{method} {url} → {}", problems.join("; ")))
                }
            }
        },
        ProbeAction::Command { argv, exit_code } => {
            let mut cmd = tokio::process::Command::new(&argv[0]);
            cmd.args(&argv[1..])
                .stdin(std::process::Stdio::null())
                .kill_on_drop(true);
            match tokio::time::timeout(p.timeout, cmd.output()).await {
                Err(_) => (
                    false,
                    format!("`{}` took longer than {:?}", argv.join(" "), p.timeout),
                ),
                Ok(Err(e)) => (false, format!("`{}`: {e}", argv.join(" "))),
                Ok(Ok(out)) => {
                    let code = out.status.code().unwrap_or(-1);
                    if code == *exit_code {
                        (true, format!("`{}` exited {code}", argv.join(" ")))
                    } else {
                        let err = String::from_utf8_lossy(&out.stderr);
                        let tail: String = err
                            .chars()
                            .rev()
                            .take(200)
                            .collect::<Vec<_>>()
                            .into_iter()
                            .rev()
                            .collect();
                        (
                            false,
                            format!(
                                "`{}` exited {code}, expected {exit_code}: {}",
                                argv.join(" "),
                                tail.trim()
                            ),
                        )
                    }
                }
            }
        }
    };
    ProbeResult {
        name: p.name.clone(),
        ok,
        detail,
        took_ms: start.elapsed().as_secs_f64() * 1000.0,
    }
}

/// A GET (readiness checks).
pub async fn http_get(url: &str, timeout: Duration) -> Result<(u16, Bytes), String> {
    request("GET", url, timeout).await
}

/// One request, body collected.
pub async fn request(method: &str, url: &str, timeout: Duration) -> Result<(u16, Bytes), String> {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let req = http::Request::builder()
        .method(method)
        .uri(url)
        .body(Full::new(Bytes::new()))
        .map_err(|e| e.to_string())?;
    let work = async {
        let resp = client.request(req).await.map_err(|e| e.to_string())?;
        let status = resp.status().as_u16();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        Ok((status, body))
    };
    tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| format!("no answer within {timeout:?}"))?
}
