//! A client for Prometheus's HTTP API: `/api/v1/query` and `/api/v1/query_range`.
//!
//! Queries are POSTed form-encoded (no URL length limit for long PromQL). Each attempt has a
//! timeout; connection errors, timeouts and 5xx answers (Prometheus answers 503 when a query
//! times out inside it) are retried with exponential backoff, 400 (`bad_data`) and 422
//! (`execution`) never — a rejected query stays rejected. Every result type is decoded; sample
//! values arrive as strings and `"NaN"`, `"+Inf"`, `"-Inf"` are kept as such.

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http::{HeaderValue, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::Deserialize;
use shakedown_model::slo::PrometheusTarget;

/// Labels of a series.
pub type Labels = BTreeMap<String, String>;

/// What a query returned.
#[derive(Clone, Debug, PartialEq)]
pub enum QueryResult {
    /// Instant vector: one value per series.
    Vector(Vec<(Labels, f64, f64)>),
    /// Range vector: points per series.
    Matrix(Vec<(Labels, Vec<(f64, f64)>)>),
    /// A scalar at a time.
    Scalar(f64, f64),
    /// A string at a time.
    String(f64, String),
}

/// Why a query gave no result.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum PromError {
    /// Could not connect (after retries).
    #[error("Prometheus unreachable at {url}: {reason}")]
    Unreachable {
        /// The base URL.
        url: String,
        /// The last connection error.
        reason: String,
    },
    /// No answer within the timeout (after retries).
    #[error("Prometheus did not answer within {0:?} (after retries)")]
    Timeout(Duration),
    /// 400 `bad_data`: the query or a parameter is invalid.
    #[error("query rejected (bad_data): {0}")]
    BadData(String),
    /// 422 `execution`: the query could not be executed.
    #[error("query failed (execution): {0}")]
    Execution(String),
    /// Another error answer.
    #[error("Prometheus answered {status}: {message}")]
    Http {
        /// HTTP status.
        status: u16,
        /// `errorType: error`, or the start of the body.
        message: String,
    },
    /// The answer is not what the API documents.
    #[error("unreadable answer from Prometheus: {0}")]
    Malformed(String),
    /// Credentials or certificates could not be read.
    #[error("{0}")]
    Credentials(String),
}

impl PromError {
    fn retryable(&self) -> bool {
        match self {
            Self::Unreachable { .. } | Self::Timeout(_) => true,
            Self::Http { status, .. } => *status >= 500,
            _ => false,
        }
    }
}

/// A Prometheus HTTP API client.
pub struct Prometheus {
    base: String,
    http: HyperClient<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>,
    timeout: Duration,
    retries: u32,
    auth: Option<HeaderValue>,
    backoff: Duration,
}

#[derive(Deserialize)]
struct Envelope {
    status: String,
    #[serde(default)]
    data: Option<Data>,
    #[serde(default, rename = "errorType")]
    error_type: Option<String>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Deserialize)]
struct Data {
    #[serde(rename = "resultType")]
    result_type: String,
    result: serde_json::Value,
}

impl Prometheus {
    /// A client for `target`; reads its credential files now.
    pub fn new(target: &PrometheusTarget) -> Result<Self, PromError> {
        let read = |path: &str| {
            std::fs::read_to_string(path)
                .map(|s| s.trim().to_string())
                .map_err(|e| PromError::Credentials(format!("{path}: {e}")))
        };
        let auth = match (&target.bearer_token_file, &target.basic_auth) {
            (Some(f), _) => Some(format!("Bearer {}", read(f)?)),
            (None, Some((user, f))) => {
                let pair = format!("{user}:{}", read(f)?);
                Some(format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(pair)
                ))
            }
            (None, None) => None,
        };
        let auth = auth
            .map(|a| {
                HeaderValue::from_str(&a).map_err(|_| {
                    PromError::Credentials("credentials are not a valid header".into())
                })
            })
            .transpose()?;
        // Mozilla's roots plus the CA file, the same rustls set-up as the load generator's.
        let tls = shakedown_load::tls::client_config(&shakedown_model::load::HttpOptions {
            version: shakedown_model::load::HttpVersion::Http1,
            ca_file: target.ca_file.clone(),
            ..Default::default()
        })
        .map_err(PromError::Credentials)?;
        let mut tls = (*tls).clone();
        // hyper-rustls sets ALPN itself from the enabled HTTP versions.
        tls.alpn_protocols.clear();
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .build();
        Ok(Self {
            base: target.url.to_string().trim_end_matches('/').to_string(),
            http: HyperClient::builder(TokioExecutor::new()).build(https),
            timeout: target.timeout,
            retries: target.retries,
            auth,
            backoff: Duration::from_millis(200),
        })
    }

    /// A client for a base URL with default settings (10 s timeout, 2 retries).
    pub fn at(url: &str) -> Result<Self, PromError> {
        let uri: Uri = url
            .parse()
            .map_err(|_| PromError::Malformed(format!("`{url}` is not a URL")))?;
        Self::new(&PrometheusTarget {
            url: uri,
            timeout: Duration::from_secs(10),
            retries: 2,
            bearer_token_file: None,
            ca_file: None,
            basic_auth: None,
        })
    }

    /// Sets the per-attempt timeout and the retries.
    pub fn with_limits(mut self, timeout: Duration, retries: u32, backoff: Duration) -> Self {
        self.timeout = timeout;
        self.retries = retries;
        self.backoff = backoff;
        self
    }

    /// `/api/v1/query` at `time` (unix seconds; now if `None`).
    pub async fn query(&self, query: &str, time: Option<f64>) -> Result<QueryResult, PromError> {
        let mut form = vec![("query", query.to_string())];
        if let Some(t) = time {
            form.push(("time", format!("{t:.3}")));
        }
        self.call("/api/v1/query", &form).await
    }

    /// `/api/v1/query_range` from `start` to `end` (unix seconds) every `step`.
    pub async fn query_range(
        &self,
        query: &str,
        start: f64,
        end: f64,
        step: Duration,
    ) -> Result<QueryResult, PromError> {
        let form = vec![
            ("query", query.to_string()),
            ("start", format!("{start:.3}")),
            ("end", format!("{end:.3}")),
            ("step", format!("{}", step.as_secs_f64())),
        ];
        self.call("/api/v1/query_range", &form).await
    }

    async fn call(&self, path: &str, form: &[(&str, String)]) -> Result<QueryResult, PromError> {
        let body = form
            .iter()
            .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
            .collect::<Vec<_>>()
            .join("&");
        let mut attempt = 0;
        loop {
            let result = self.attempt(path, &body).await;
            match result {
                Err(e) if e.retryable() && attempt < self.retries => {
                    let wait = self.backoff * 2u32.pow(attempt);
                    tracing::debug!("Prometheus {path}: {e}; retrying in {wait:?}");
                    tokio::time::sleep(wait).await;
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    async fn attempt(&self, path: &str, body: &str) -> Result<QueryResult, PromError> {
        let url = format!("{}{path}", self.base);
        let mut req = Request::post(&url)
            .header(
                http::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .body(Full::new(Bytes::from(body.to_string())))
            .map_err(|e| PromError::Malformed(format!("{url}: {e}")))?;
        if let Some(a) = &self.auth {
            req.headers_mut()
                .insert(http::header::AUTHORIZATION, a.clone());
        }
        let exchange = async {
            let resp = self
                .http
                .request(req)
                .await
                .map_err(|e| PromError::Unreachable {
                    url: self.base.clone(),
                    reason: error_chain(&e),
                })?;
            let status = resp.status();
            let bytes = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| PromError::Unreachable {
                    url: self.base.clone(),
                    reason: e.to_string(),
                })?
                .to_bytes();
            Ok::<_, PromError>((status, bytes))
        };
        let (status, bytes) = tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| PromError::Timeout(self.timeout))??;
        decode(status, &bytes)
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// Percent-encodes for `application/x-www-form-urlencoded`.
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3 / 2);
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'*' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// Decodes an answer of the API (any status) into a result or an error.
pub fn decode(status: StatusCode, body: &[u8]) -> Result<QueryResult, PromError> {
    let envelope: Envelope = match serde_json::from_slice(body) {
        Ok(e) => e,
        Err(e) => {
            let text = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
            return Err(if status.is_success() {
                PromError::Malformed(format!("{e}: {text}"))
            } else {
                PromError::Http {
                    status: status.as_u16(),
                    message: text,
                }
            });
        }
    };
    if envelope.status != "success" {
        let message = envelope.error.unwrap_or_default();
        return Err(match (status.as_u16(), envelope.error_type.as_deref()) {
            (_, Some("bad_data")) | (400, _) => PromError::BadData(message),
            (_, Some("execution")) | (422, _) => PromError::Execution(message),
            (s, t) => PromError::Http {
                status: s,
                message: format!("{}: {message}", t.unwrap_or("error")),
            },
        });
    }
    let data = envelope
        .data
        .ok_or_else(|| PromError::Malformed("success without data".into()))?;
    let bad = |what: &str| PromError::Malformed(format!("{what} in a {} result", data.result_type));
    match data.result_type.as_str() {
        "vector" => {
            let items = data.result.as_array().ok_or_else(|| bad("not a list"))?;
            items
                .iter()
                .map(|item| {
                    let (t, v) = point(item.get("value").ok_or_else(|| bad("no value"))?)
                        .ok_or_else(|| bad("bad value"))?;
                    Ok((labels(item), t, v))
                })
                .collect::<Result<_, _>>()
                .map(QueryResult::Vector)
        }
        "matrix" => {
            let items = data.result.as_array().ok_or_else(|| bad("not a list"))?;
            items
                .iter()
                .map(|item| {
                    let values = item
                        .get("values")
                        .and_then(|v| v.as_array())
                        .ok_or_else(|| bad("no values"))?;
                    let points = values
                        .iter()
                        .map(|p| point(p).ok_or_else(|| bad("bad point")))
                        .collect::<Result<_, _>>()?;
                    Ok((labels(item), points))
                })
                .collect::<Result<_, _>>()
                .map(QueryResult::Matrix)
        }
        "scalar" => point(&data.result)
            .map(|(t, v)| QueryResult::Scalar(t, v))
            .ok_or_else(|| bad("bad scalar")),
        "string" => {
            let pair = data
                .result
                .as_array()
                .filter(|a| a.len() == 2)
                .ok_or_else(|| bad("bad string"))?;
            let t = pair[0].as_f64().ok_or_else(|| bad("bad time"))?;
            let s = pair[1].as_str().ok_or_else(|| bad("bad string"))?;
            Ok(QueryResult::String(t, s.to_string()))
        }
        other => Err(PromError::Malformed(format!(
            "unknown resultType `{other}`"
        ))),
    }
}

fn labels(item: &serde_json::Value) -> Labels {
    item.get("metric")
        .and_then(|m| m.as_object())
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                .collect()
        })
        .unwrap_or_default()
}

/// `[<unix time>, "<value>"]`; values may be `"NaN"`, `"+Inf"`, `"-Inf"`.
fn point(v: &serde_json::Value) -> Option<(f64, f64)> {
    let pair = v.as_array().filter(|a| a.len() == 2)?;
    let t = pair[0].as_f64()?;
    let value = match pair[1].as_str()? {
        "+Inf" | "Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        s => s.parse().ok()?,
    };
    Some((t, value))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(body: &str) -> QueryResult {
        decode(StatusCode::OK, body.as_bytes()).unwrap()
    }

    #[test]
    fn every_result_type() {
        let v = ok(
            r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{"le":"+Inf"},"value":[1700000000.5,"0.245"]}]}}"#,
        );
        let QueryResult::Vector(v) = v else { panic!() };
        assert_eq!(v[0].0.get("le").map(String::as_str), Some("+Inf"));
        assert_eq!((v[0].1, v[0].2), (1700000000.5, 0.245));
        let m = ok(
            r#"{"status":"success","data":{"resultType":"matrix","result":[{"metric":{},"values":[[1,"1"],[2,"+Inf"]]}]}}"#,
        );
        assert_eq!(
            m,
            QueryResult::Matrix(vec![(
                Labels::new(),
                vec![(1.0, 1.0), (2.0, f64::INFINITY)]
            )])
        );
        let QueryResult::Scalar(_, n) =
            ok(r#"{"status":"success","data":{"resultType":"scalar","result":[1,"NaN"]}}"#)
        else {
            panic!()
        };
        assert!(n.is_nan());
        assert_eq!(
            ok(r#"{"status":"success","data":{"resultType":"string","result":[1,"hello"]}}"#),
            QueryResult::String(1.0, "hello".into())
        );
        assert_eq!(
            ok(r#"{"status":"success","data":{"resultType":"vector","result":[]}}"#),
            QueryResult::Vector(vec![])
        );
    }

    #[test]
    fn error_shapes() {
        let e = decode(StatusCode::BAD_REQUEST, br#"{"status":"error","errorType":"bad_data","error":"1:16: parse error: unclosed left parenthesis"}"#).unwrap_err();
        assert_eq!(
            e,
            PromError::BadData("1:16: parse error: unclosed left parenthesis".into())
        );
        assert!(!e.retryable());
        let e = decode(
            StatusCode::UNPROCESSABLE_ENTITY,
            br#"{"status":"error","errorType":"execution","error":"found duplicate series"}"#,
        )
        .unwrap_err();
        assert!(matches!(e, PromError::Execution(_)));
        let e = decode(
            StatusCode::SERVICE_UNAVAILABLE,
            br#"{"status":"error","errorType":"timeout","error":"query timed out"}"#,
        )
        .unwrap_err();
        assert!(e.retryable(), "{e:?}");
        let e = decode(StatusCode::BAD_GATEWAY, b"<html>bad gateway</html>").unwrap_err();
        assert_eq!(
            e,
            PromError::Http {
                status: 502,
                message: "<html>bad gateway</html>".into()
            }
        );
        assert!(matches!(
            decode(StatusCode::OK, b"{}").unwrap_err(),
            PromError::Malformed(_)
        ));
    }

    #[test]
    fn form_encoding() {
        assert_eq!(
            encode(r#"sum(rate(x{a="b c"}[2m]))"#),
            "sum%28rate%28x%7Ba%3D%22b+c%22%7D%5B2m%5D%29%29"
        );
    }
}
