//! The admin and control endpoint (loopback by default).
//!
//! Envoy's read-only endpoints (`/ready`, `/server_info`, `/config_dump`, `/stats/prometheus`)
//! plus a fault API: `GET/POST/DELETE /faults`, `GET/PUT/DELETE /faults/{name}`, and
//! `POST /reload`. Every change answers with the new config version, so a pipeline can poll
//! `/config_dump` until `version` reaches it instead of sleeping. Errors are mapped to HTTP in
//! one place ([`ApiError`]); a rejected request changes nothing.

use std::collections::HashSet;

use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};
use shakedown_model::proxy::check_fault_refs;
use shakedown_model::{ConfigError, HttpFault, Problems, parse_fault};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::fault::store::StoreError;
use crate::runtime::{ApplyError, Proxy};

/// Serves the admin API until `stop` fires.
pub(crate) async fn serve(listener: TcpListener, proxy: Proxy, mut stop: watch::Receiver<bool>) {
    let app = router(proxy);
    let shutdown = async move {
        let _ = stop.changed().await;
    };
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
    {
        tracing::error!("admin endpoint failed: {e}");
    }
}

/// Serves the Toxiproxy API (and `/metrics`) on its own address until `stop` fires.
pub(crate) async fn serve_toxiproxy(
    listener: TcpListener,
    proxy: Proxy,
    mut stop: watch::Receiver<bool>,
) {
    let app = crate::toxiproxy::router(proxy.clone()).merge(
        Router::new()
            .route("/metrics", get(metrics))
            .with_state(proxy),
    );
    let shutdown = async move {
        let _ = stop.changed().await;
    };
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
    {
        tracing::error!("Toxiproxy API endpoint failed: {e}");
    }
}

/// The admin routes, as a plain function of the proxy (tested without a socket); the
/// Toxiproxy API's routes are part of it.
pub fn router(proxy: Proxy) -> Router {
    let toxiproxy = crate::toxiproxy::router(proxy.clone());
    Router::new()
        .route("/ready", get(|| async { "LIVE\n" }))
        .route("/server_info", get(server_info))
        .route("/config_dump", get(config_dump))
        .route("/stats/prometheus", get(metrics))
        .route("/metrics", get(metrics))
        .route(
            "/faults",
            get(list_faults).post(create_fault).delete(clear_faults),
        )
        .route(
            "/faults/{name}",
            get(get_fault).put(put_fault).delete(delete_fault),
        )
        .route("/reload", post(reload))
        .with_state(proxy)
        .merge(toxiproxy)
}

/// Every way an admin request can fail.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The body is not a valid fault.
    #[error("invalid fault")]
    Invalid(ConfigError),
    /// Store conflict or unknown name.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A reload failed.
    #[error(transparent)]
    Reload(#[from] ApplyError),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, body) = match &self {
            ApiError::Invalid(e) => (
                StatusCode::BAD_REQUEST,
                json!({"error": "invalid fault", "details": e.diagnostics.iter().map(ToString::to_string).collect::<Vec<_>>()}),
            ),
            ApiError::Store(StoreError::Exists(_)) => {
                (StatusCode::CONFLICT, json!({"error": self.to_string()}))
            }
            ApiError::Store(StoreError::NotFound(_)) => {
                (StatusCode::NOT_FOUND, json!({"error": self.to_string()}))
            }
            ApiError::Store(StoreError::AlreadyExpired(_)) => {
                (StatusCode::BAD_REQUEST, json!({"error": self.to_string()}))
            }
            ApiError::Reload(ApplyError::Invalid(e)) => (
                StatusCode::BAD_REQUEST,
                json!({"error": "config rejected; the running config stays", "details": e.diagnostics.iter().map(ToString::to_string).collect::<Vec<_>>()}),
            ),
            ApiError::Reload(ApplyError::NoFile) => {
                (StatusCode::CONFLICT, json!({"error": self.to_string()}))
            }
            ApiError::Reload(e) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                json!({"error": e.to_string()}),
            ),
        };
        (status, Json(body)).into_response()
    }
}

async fn server_info(State(proxy): State<Proxy>) -> Json<Value> {
    let uptime = proxy.shared.started.elapsed().unwrap_or_default().as_secs();
    Json(json!({
        "state": "LIVE",
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_seconds": uptime,
        "seed": proxy.seed(),
        "config_version": proxy.version(),
    }))
}

#[derive(Debug, Deserialize)]
struct DumpQuery {
    resource: Option<String>,
}

async fn config_dump(State(proxy): State<Proxy>, Query(q): Query<DumpQuery>) -> Json<Value> {
    let mut dump = proxy.config_dump();
    if let Some(resource) = q.resource {
        // `?resource=faults` (or listeners, clusters, bootstrap): only that section.
        let want = format!("{}ConfigDump", capitalize(&resource));
        if let Some(configs) = dump.get_mut("configs").and_then(Value::as_array_mut) {
            configs.retain(|c| c["@type"].as_str().is_some_and(|t| t.ends_with(&want)));
        }
    }
    Json(dump)
}

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_uppercase().chain(c).collect())
        .unwrap_or_default()
}

async fn metrics(State(proxy): State<Proxy>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        proxy.render_metrics(),
    )
}

async fn list_faults(State(proxy): State<Proxy>) -> Json<Value> {
    let set = proxy.faults().current();
    Json(
        json!({"version": set.version, "faults": set.faults.iter().map(|f| f.to_json()).collect::<Vec<_>>()}),
    )
}

async fn get_fault(
    State(proxy): State<Proxy>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let set = proxy.faults().current();
    let fault = set
        .faults
        .iter()
        .find(|f| f.spec.name == name)
        .ok_or(StoreError::NotFound(name))?;
    Ok(Json(
        json!({"version": set.version, "fault": fault.to_json()}),
    ))
}

async fn create_fault(
    State(proxy): State<Proxy>,
    body: String,
) -> Result<impl IntoResponse, ApiError> {
    let fault = validate(&proxy, &body, None)?;
    let name = fault.name.clone();
    let version = proxy.faults().create(fault)?;
    Ok((
        StatusCode::CREATED,
        Json(json!({"version": version, "name": name, "created": true})),
    ))
}

async fn put_fault(
    State(proxy): State<Proxy>,
    Path(name): Path<String>,
    body: String,
) -> Result<impl IntoResponse, ApiError> {
    let fault = validate(&proxy, &body, Some(&name))?;
    let (created, version) = proxy.faults().put(fault)?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((
        status,
        Json(json!({"version": version, "name": name, "created": created})),
    ))
}

async fn delete_fault(
    State(proxy): State<Proxy>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let version = proxy.faults().remove(&name)?;
    Ok(Json(json!({"version": version, "removed": [name]})))
}

async fn clear_faults(State(proxy): State<Proxy>) -> Json<Value> {
    let (removed, version) = proxy.faults().clear();
    Json(json!({"version": version, "removed": removed}))
}

async fn reload(State(proxy): State<Proxy>) -> Result<Json<Value>, ApiError> {
    let version = proxy.reload().await?;
    Ok(Json(json!({"version": version})))
}

/// Parses a fault body and checks its references against the running config.
fn validate(proxy: &Proxy, body: &str, name: Option<&str>) -> Result<HttpFault, ApiError> {
    let fault = parse_fault("request body", body, name).map_err(ApiError::Invalid)?;
    let view = proxy.view();
    let listeners: HashSet<&str> = view.listeners.iter().map(|(n, _)| n.as_str()).collect();
    let clusters: HashSet<&str> = view.clusters.iter().map(|(n, _)| n.as_str()).collect();
    let mut problems = Problems::default();
    check_fault_refs(&fault, "", &listeners, &clusters, &mut problems);
    if !problems.is_empty() {
        let doc = shakedown_model::Document::from_value("request body", Value::Null);
        return Err(ApiError::Invalid(doc.errors(problems.into_vec())));
    }
    Ok(fault)
}
