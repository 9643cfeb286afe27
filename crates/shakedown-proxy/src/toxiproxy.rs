//! Toxiproxy's REST API: the same routes, JSON bodies, status codes and error shapes, so
//! Toxiproxy's client libraries and test fixtures drive Shakedown unchanged.
//!
//! Served on the admin endpoint and, when the config asks (`toxiproxy:`) or under
//! `shakedown toxiproxy`, on its own address (127.0.0.1:8474 by default, the port clients
//! expect). Every handler only takes short locks: it never waits on a connection.
//!
//! Beyond Toxiproxy: HTTP listeners of the proxy appear as proxies too, and take two extra
//! toxic types, `http_abort {status}` and `http_delay {delay}` (ms), for which `toxicity` is
//! the fraction of requests. They become HTTP faults of the listener (named
//! `toxiproxy.<listener>.<toxic>`) and show in `/faults` as well. Toxics (TCP and HTTP) take
//! `ttl` or `expires_at`, after which the proxy removes them by itself.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use shakedown_model::toxic::{RawTcpProxy, TcpProxySpec};
use shakedown_model::{Problems, Toxic, ToxicKind};

use crate::runtime::Proxy;
use crate::tcp::TcpError;

/// The version `/version` reports: the Toxiproxy API level implemented, tagged as ours.
pub const VERSION: &str = concat!("2.12.0-shakedown.", env!("CARGO_PKG_VERSION"));

/// HTTP toxics made through this API, by listener and toxic name.
#[derive(Debug, Default)]
pub(crate) struct HttpToxics {
    by_listener: Mutex<BTreeMap<(String, String), Toxic>>,
}

impl HttpToxics {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<(String, String), Toxic>> {
        self.by_listener.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The fault name an HTTP toxic becomes.
pub fn fault_name(listener: &str, toxic: &str) -> String {
    format!("toxiproxy.{listener}.{toxic}")
}

/// Toxiproxy's routes (without `/metrics`, which the admin endpoint has already).
pub fn router(proxy: Proxy) -> Router {
    static REQUEST_IDS: AtomicU64 = AtomicU64::new(1);
    Router::new()
        .route("/version", get(version))
        .route("/reset", post(reset))
        .route("/populate", post(populate))
        .route("/proxies", get(list).post(create))
        .route(
            "/proxies/{proxy}",
            get(show).post(update).patch(update).delete(delete),
        )
        .route("/proxies/{proxy}/toxics", get(toxics).post(add_toxic))
        .route(
            "/proxies/{proxy}/toxics/{toxic}",
            get(show_toxic)
                .post(update_toxic)
                .patch(update_toxic)
                .delete(remove_toxic),
        )
        .layer(middleware::from_fn(|req: Request, next: Next| async move {
            // Browsers are refused, as in Toxiproxy: a page must not drive the control API.
            let browser = req
                .headers()
                .get(header::USER_AGENT)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|ua| ua.starts_with("Mozilla/"));
            let mut resp = if browser {
                (StatusCode::FORBIDDEN, "User agent not allowed\n").into_response()
            } else {
                next.run(req).await
            };
            let id = REQUEST_IDS.fetch_add(1, Ordering::Relaxed);
            if let Ok(v) = HeaderValue::from_str(&format!("shakedown-{id}")) {
                resp.headers_mut().insert("x-toxiproxy-request-id", v);
            }
            resp
        }))
        .with_state(proxy)
}

/// An API failure: Toxiproxy's `{"error", "status"}` body, as `http.Error` writes it.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
        }
    }

    fn bad(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }
}

impl From<TcpError> for ApiError {
    fn from(e: TcpError) -> Self {
        let status = match &e {
            TcpError::ProxyNotFound | TcpError::ToxicNotFound => StatusCode::NOT_FOUND,
            TcpError::ProxyExists | TcpError::ToxicExists => StatusCode::CONFLICT,
            TcpError::Invalid(_) => StatusCode::BAD_REQUEST,
            TcpError::Listen { source, .. } if source.kind() == std::io::ErrorKind::AddrInUse => {
                StatusCode::CONFLICT
            }
            TcpError::Listen { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError::new(status, e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"error": self.message, "status": self.status.as_u16()});
        (
            self.status,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            format!("{body}\n"),
        )
            .into_response()
    }
}

fn ok(status: StatusCode, body: Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

async fn version() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json;charset=utf-8")],
        format!("{}\n", json!({ "version": VERSION })),
    )
        .into_response()
}

async fn reset(State(proxy): State<Proxy>) -> Result<StatusCode, ApiError> {
    let names: Vec<String> = {
        let mut map = proxy.shared.http_toxics.lock();
        let names = map.keys().map(|(l, t)| fault_name(l, t)).collect();
        map.clear();
        names
    };
    for n in names {
        let _ = proxy.faults().remove(&n);
    }
    proxy.tcp().reset()?;
    Ok(StatusCode::NO_CONTENT)
}

/// A body parsed as JSON, with Toxiproxy's message on failure.
fn json_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::bad(format!("bad request body: {e}")))
}

/// A proxy body: Toxiproxy's required fields first, then our validation.
fn proxy_spec(value: Value, at: &str) -> Result<TcpProxySpec, ApiError> {
    for field in ["name", "upstream"] {
        if value
            .get(field)
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
        {
            return Err(ApiError::bad(format!(
                "missing required field: {field}{at}"
            )));
        }
    }
    let mut raw: RawTcpProxy = serde_json::from_value(value)
        .map_err(|e| ApiError::bad(format!("bad request body: {e}{at}")))?;
    // Toxics in a proxy body are ignored, as Toxiproxy does (they are not part of its model).
    raw.toxics.clear();
    let mut problems = Problems::default();
    TcpProxySpec::from_raw(&raw, "", &mut problems).ok_or_else(|| first_problem(problems, at))
}

fn first_problem(problems: Problems, at: &str) -> ApiError {
    let msg = problems
        .into_vec()
        .into_iter()
        .map(|p| format!("{}: {}", p.path, p.message))
        .collect::<Vec<_>>()
        .join("; ");
    ApiError::bad(format!("{msg}{at}"))
}

async fn list(State(proxy): State<Proxy>) -> Response {
    let mut all = proxy.tcp().list();
    for (name, v) in http_listeners(&proxy) {
        all.insert(name, v);
    }
    ok(StatusCode::OK, Value::Object(all))
}

async fn create(State(proxy): State<Proxy>, body: Bytes) -> Result<Response, ApiError> {
    let spec = proxy_spec(json_body(&body)?, "")?;
    if proxy.listener_addr(&spec.name).is_some() {
        return Err(TcpError::ProxyExists.into());
    }
    let created = proxy.tcp().create(spec)?;
    Ok(ok(StatusCode::CREATED, created))
}

async fn populate(State(proxy): State<Proxy>, body: Bytes) -> Result<Response, ApiError> {
    let items: Vec<Value> = json_body(&body)?;
    // Everything is checked before anything changes.
    let mut specs: Vec<TcpProxySpec> = Vec::new();
    for (i, item) in items.into_iter().enumerate() {
        let at = format!(" at proxy {}", i + 1);
        let spec = proxy_spec(item, &at)?;
        if specs.iter().any(|s| s.name == spec.name) {
            return Err(ApiError::bad(format!(
                "duplicate proxy name `{}`{at}",
                spec.name
            )));
        }
        if proxy.listener_addr(&spec.name).is_some() {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                format!("proxy already exists (an HTTP listener){at}"),
            ));
        }
        specs.push(spec);
    }
    let proxies = proxy.tcp().populate(specs)?;
    Ok(ok(StatusCode::CREATED, json!({ "proxies": proxies })))
}

async fn show(State(proxy): State<Proxy>, Path(name): Path<String>) -> Result<Response, ApiError> {
    if let Some(v) = http_listener(&proxy, &name) {
        return Ok(ok(StatusCode::OK, v));
    }
    Ok(ok(StatusCode::OK, proxy.tcp().get(&name)?))
}

#[derive(Debug, Deserialize)]
struct ProxyPatch {
    #[serde(default)]
    listen: Option<String>,
    #[serde(default)]
    upstream: Option<String>,
    #[serde(default)]
    enabled: Option<bool>,
    // Clients resend the whole proxy; these are read-only.
    #[serde(default, rename = "name")]
    _name: Option<Value>,
    #[serde(default, rename = "toxics")]
    _toxics: Option<Value>,
}

async fn update(
    State(proxy): State<Proxy>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let patch: ProxyPatch = json_body(&body)?;
    if let Some(v) = http_listener(&proxy, &name) {
        let same = |field: &str, given: &Option<String>| {
            given.as_ref().is_none_or(|g| v[field].as_str() == Some(g))
        };
        if patch.enabled == Some(false)
            || !same("listen", &patch.listen)
            || !same("upstream", &patch.upstream)
        {
            return Err(ApiError::bad(
                "an HTTP listener is changed through the config file; break it with http_abort or http_delay toxics",
            ));
        }
        return Ok(ok(StatusCode::OK, v));
    }
    let updated = proxy
        .tcp()
        .update(&name, patch.listen, patch.upstream, patch.enabled)?;
    Ok(ok(StatusCode::OK, updated))
}

async fn delete(
    State(proxy): State<Proxy>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    if proxy.listener_addr(&name).is_some() {
        return Err(ApiError::bad(
            "an HTTP listener is removed through the config file",
        ));
    }
    proxy.tcp().delete(&name)?;
    Ok(StatusCode::NO_CONTENT)
}

async fn toxics(
    State(proxy): State<Proxy>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    if proxy.listener_addr(&name).is_some() {
        return Ok(ok(StatusCode::OK, Value::Array(http_toxics(&proxy, &name))));
    }
    Ok(ok(StatusCode::OK, Value::Array(proxy.tcp().toxics(&name)?)))
}

async fn add_toxic(
    State(proxy): State<Proxy>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let toxic = parse_toxic(&body)?;
    if proxy.listener_addr(&name).is_some() {
        return Ok(ok(StatusCode::OK, add_http_toxic(&proxy, &name, toxic)?));
    }
    if !proxy.tcp().contains(&name) {
        return Err(TcpError::ProxyNotFound.into());
    }
    Ok(ok(StatusCode::OK, proxy.tcp().add_toxic(&name, toxic)?))
}

fn parse_toxic(body: &[u8]) -> Result<Toxic, ApiError> {
    let value: Value = json_body(body)?;
    if value.get("type").and_then(Value::as_str).is_none() {
        return Err(ApiError::bad("invalid toxic type"));
    }
    shakedown_model::parse_toxic("request body", &value.to_string()).map_err(|e| {
        let msgs: Vec<String> = e
            .diagnostics
            .iter()
            .map(|d| {
                if d.path.is_empty() {
                    d.message.clone()
                } else {
                    format!("{}: {}", d.path, d.message)
                }
            })
            .collect();
        // Toxiproxy's own words first where it has them, so clients that match them still do.
        let joined = msgs.join("; ");
        let lead = if joined.contains("invalid toxic type") {
            "invalid toxic type: "
        } else if joined.contains("stream was invalid") {
            "stream was invalid, can be either upstream or downstream: "
        } else {
            "bad request body: "
        };
        ApiError::bad(format!("{lead}{joined}"))
    })
}

async fn show_toxic(
    State(proxy): State<Proxy>,
    Path((name, toxic)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    if proxy.listener_addr(&name).is_some() {
        return http_toxics(&proxy, &name)
            .into_iter()
            .find(|t| t["name"] == toxic.as_str())
            .map(|t| ok(StatusCode::OK, t))
            .ok_or_else(|| TcpError::ToxicNotFound.into());
    }
    Ok(ok(StatusCode::OK, proxy.tcp().toxic(&name, &toxic)?))
}

#[derive(Debug, Deserialize)]
struct ToxicPatch {
    #[serde(default)]
    toxicity: Option<f64>,
    #[serde(default)]
    attributes: Option<Map<String, Value>>,
}

async fn update_toxic(
    State(proxy): State<Proxy>,
    Path((name, toxic)): Path<(String, String)>,
    body: Bytes,
) -> Result<Response, ApiError> {
    // Only `toxicity` and `attributes` are read, as in Toxiproxy; the rest cannot change.
    let patch: ToxicPatch = json_body(&body)?;
    let attributes = patch.attributes.unwrap_or_default();
    if proxy.listener_addr(&name).is_some() {
        let current = proxy
            .shared
            .http_toxics
            .lock()
            .get(&(name.clone(), toxic.clone()))
            .cloned()
            .ok_or(TcpError::ToxicNotFound)?;
        let next = current
            .patched(patch.toxicity, &attributes)
            .map_err(ApiError::bad)?;
        let fault = http_fault(&name, &next)?;
        proxy
            .faults()
            .put(fault)
            .map_err(|e| ApiError::bad(e.to_string()))?;
        let json = next.to_json();
        proxy.shared.http_toxics.lock().insert((name, toxic), next);
        return Ok(ok(StatusCode::OK, json));
    }
    Ok(ok(
        StatusCode::OK,
        proxy
            .tcp()
            .update_toxic(&name, &toxic, patch.toxicity, &attributes)?,
    ))
}

async fn remove_toxic(
    State(proxy): State<Proxy>,
    Path((name, toxic)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    if proxy.listener_addr(&name).is_some() {
        let known = proxy
            .shared
            .http_toxics
            .lock()
            .remove(&(name.clone(), toxic.clone()))
            .is_some();
        let removed = proxy.faults().remove(&fault_name(&name, &toxic)).is_ok();
        return if known && removed {
            Ok(StatusCode::NO_CONTENT)
        } else {
            Err(TcpError::ToxicNotFound.into())
        };
    }
    proxy.tcp().remove_toxic(&name, &toxic)?;
    Ok(StatusCode::NO_CONTENT)
}

/// The HTTP fault an HTTP toxic stands for.
fn http_fault(listener: &str, toxic: &Toxic) -> Result<shakedown_model::HttpFault, ApiError> {
    let percentage = f64::from(toxic.toxicity) * 100.0;
    let mut body = match toxic.kind {
        ToxicKind::HttpAbort { status } => {
            json!({"abort": {"http_status": status, "percentage": percentage}})
        }
        ToxicKind::HttpDelay { delay } => {
            json!({"delay": {"fixed_delay": format!("{delay}ms"), "percentage": percentage}})
        }
        _ => {
            return Err(ApiError::bad(format!(
                "`{listener}` is an HTTP listener: its toxics are http_abort and http_delay, not {}",
                toxic.kind.type_name()
            )));
        }
    };
    body["name"] = fault_name(listener, &toxic.name).into();
    body["listeners"] = json!([listener]);
    let lifetime = toxic.to_json();
    for field in ["ttl", "expires_at"] {
        if let Some(v) = lifetime.get(field) {
            body[field] = v.clone();
        }
    }
    shakedown_model::parse_fault("request body", &body.to_string(), None).map_err(|e| {
        ApiError::bad(
            e.diagnostics
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; "),
        )
    })
}

fn add_http_toxic(proxy: &Proxy, listener: &str, toxic: Toxic) -> Result<Value, ApiError> {
    let key = (listener.to_owned(), toxic.name.clone());
    let fault = http_fault(listener, &toxic)?;
    let mut map = proxy.shared.http_toxics.lock();
    // A toxic whose fault expired (deadline) is gone; its name is free again.
    let live = |k: &(String, String)| {
        proxy
            .faults()
            .current()
            .faults
            .iter()
            .any(|f| f.spec.name == fault_name(&k.0, &k.1))
    };
    map.retain(|k, _| live(k));
    if map.contains_key(&key) {
        return Err(TcpError::ToxicExists.into());
    }
    proxy.faults().create(fault).map_err(|e| match e {
        crate::fault::store::StoreError::Exists(_) => TcpError::ToxicExists.into(),
        other => ApiError::bad(other.to_string()),
    })?;
    let json = toxic.to_json();
    map.insert(key, toxic);
    Ok(json)
}

/// The live HTTP toxics of a listener, in name order.
fn http_toxics(proxy: &Proxy, listener: &str) -> Vec<Value> {
    let faults = proxy.faults().current();
    let map = proxy.shared.http_toxics.lock();
    map.iter()
        .filter(|((l, t), _)| {
            l == listener
                && faults
                    .faults
                    .iter()
                    .any(|f| f.spec.name == fault_name(l, t))
        })
        .map(|(_, t)| t.to_json())
        .collect()
}

fn http_listener(proxy: &Proxy, name: &str) -> Option<Value> {
    http_listeners(proxy)
        .into_iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v)
}

/// HTTP listeners in Toxiproxy's proxy shape; `upstream` is the first route's first endpoint.
fn http_listeners(proxy: &Proxy) -> Vec<(String, Value)> {
    let view = proxy.view();
    let upstreams = proxy.first_endpoints();
    view.listeners
        .iter()
        .map(|(name, addr)| {
            let upstream = upstreams.get(name).cloned().unwrap_or_default();
            (
                name.clone(),
                json!({
                    "name": name,
                    "listen": addr.to_string(),
                    "upstream": upstream,
                    "enabled": true,
                    "toxics": http_toxics(proxy, name),
                }),
            )
        })
        .collect()
}
