//! The demo's two services, seed 000's shape: a search service that calls a recommendation
//! service for every query. The search service has one switch, its own resilience: with it, the
//! recommendation call has a timeout and a fallback (popular items), so a slow or failing
//! dependency costs at most the timeout and never an error; without it, the search waits as
//! long as the dependency does and fails when it fails.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

/// The recommendation service: `GET /recommendations?q=…` → a small JSON list.
pub async fn recommendation(listen: SocketAddr) -> std::io::Result<()> {
    let listener = TcpListener::bind(listen).await?;
    serve(listener, |req: Request<Incoming>| async move {
        let q = query(&req, "q").unwrap_or_default();
        match req.uri().path() {
            "/health" => json(StatusCode::OK, r#"{"status":"ok"}"#.into()),
            "/recommendations" => json(
                StatusCode::OK,
                format!(
                    r#"{{"query":"{}","items":["{q}-guide","{q}-kit","{q}-pro"]}}"#,
                    escape(&q)
                ),
            ),
            _ => json(StatusCode::NOT_FOUND, r#"{"error":"not found"}"#.into()),
        }
    })
    .await
}

/// How the search service treats its dependency.
#[derive(Debug, Clone)]
pub struct SearchOptions {
    /// Base URL of the recommendation service (through the proxy, in the demo).
    pub recommendation: String,
    /// Timeout and fallback on the recommendation call.
    pub resilient: bool,
    /// The timeout, when resilient.
    pub timeout: Duration,
}

/// The search service: `GET /search?q=…` → results plus recommendations.
pub async fn search(listen: SocketAddr, options: SearchOptions) -> std::io::Result<()> {
    let listener = TcpListener::bind(listen).await?;
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    let options = Arc::new(options);
    serve(listener, move |req: Request<Incoming>| {
        let client = client.clone();
        let options = options.clone();
        async move {
            match req.uri().path() {
                "/health" => json(StatusCode::OK, r#"{"status":"ok"}"#.into()),
                "/search" => {
                    let q = query(&req, "q").unwrap_or_else(|| "shoes".into());
                    let results = format!(r#"["{0} 1","{0} 2","{0} 3"]"#, escape(&q));
                    let url = format!("{}/recommendations?q={}", options.recommendation.trim_end_matches('/'), urlencode(&q));
                    let call = fetch(&client, &url);
                    let outcome = if options.resilient {
                        match tokio::time::timeout(options.timeout, call).await {
                            Ok(Ok(body)) => Ok(body),
                            Ok(Err(e)) => Err(e),
                            Err(_) => Err(format!("no answer within {:?}", options.timeout)),
                        }
                    } else {
                        call.await
                    };
                    match (outcome, options.resilient) {
                        (Ok(recs), _) => json(
                            StatusCode::OK,
                            format!(r#"{{"results":{results},"recommendations":{recs},"fallback":false}}"#),
                        ),
                        (Err(why), true) => json(
                            StatusCode::OK,
                            format!(
                                r#"{{"results":{results},"recommendations":{{"items":["popular-1","popular-2"]}},"fallback":true,"why":"{}"}}"#,
                                escape(&why)
                            ),
                        ),
                        (Err(why), false) => json(
                            StatusCode::SERVICE_UNAVAILABLE,
                            format!(r#"{{"error":"recommendation failed: {}"}}"#, escape(&why)),
                        ),
                    }
                }
                _ => json(StatusCode::NOT_FOUND, r#"{"error":"not found"}"#.into()),
            }
        }
    })
    .await
}

async fn fetch(client: &Client<HttpConnector, Full<Bytes>>, url: &str) -> Result<String, String> {
    let req = Request::get(url)
        .body(Full::new(Bytes::new()))
        .map_err(|e| e.to_string())?;
    let resp = client.request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    if !status.is_success() {
        return Err(format!("recommendation answered {status}"));
    }
    String::from_utf8(body.to_vec()).map_err(|e| e.to_string())
}

async fn serve<F, Fut>(listener: TcpListener, handle: F) -> std::io::Result<()>
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(a) => a,
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let handle = handle.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let handle = handle.clone();
                async move { Ok::<_, Infallible>(handle(req).await) }
            });
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

fn json(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    r
}

fn query(req: &Request<Incoming>, key: &str) -> Option<String> {
    req.uri().query()?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == key).then(|| v.to_owned())
    })
}

fn escape(s: &str) -> String {
    s.chars()
        .filter(|c| !c.is_control())
        .map(|c| match c {
            '"' => "\\\"".to_owned(),
            '\\' => "\\\\".to_owned(),
            c => c.to_string(),
        })
        .collect()
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            b => format!("%{b:02X}"),
        })
        .collect()
}
