//! A stub upstream for tests, demos and benchmarks.
//!
//! One server speaks HTTP/1.1 and h2c on the same port (like the proxy it sits behind) and lets the
//! request decide the answer, so one stub serves every test:
//!
//! * `?status=503` — answer with that status;
//! * `?delay_ms=200` — wait before answering;
//! * `?size=65536` — answer with a body of that many bytes;
//! * path `/echo` — answer with the request's method, path and headers as JSON;
//! * `content-type: application/grpc` — answer as a gRPC server would (`grpc-status: 0` trailer).
//!
//! It counts the requests it receives, so a test can prove an aborted request never arrived.
//! With [`StubOptions`] it can also record when each request arrived (to measure a load
//! generator's rate from the receiving end) and stall every response once for a while (the
//! coordinated-omission experiment).

#[cfg(feature = "tls")]
pub mod tls;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// Optional behaviour of a stub.
#[derive(Clone, Debug, Default)]
pub struct StubOptions {
    /// Record the arrival time of every request (memory grows with requests: tests only).
    pub record_arrivals: bool,
    /// `(after, length)`: from `after` past the first request, hold every response until
    /// `after + length` — a server that stops answering once, for a while.
    pub stall: Option<(Duration, Duration)>,
}

#[derive(Debug, Default)]
struct State {
    requests: AtomicU64,
    first: Mutex<Option<Instant>>,
    arrivals: Mutex<Vec<Instant>>,
    options: StubOptions,
}

/// A running stub.
#[derive(Debug)]
pub struct Stub {
    addr: SocketAddr,
    state: Arc<State>,
    stop: watch::Sender<bool>,
}

impl Stub {
    /// Starts a stub on `127.0.0.1:0`.
    pub async fn start() -> std::io::Result<Self> {
        Self::bind("127.0.0.1:0".parse().map_err(std::io::Error::other)?).await
    }

    /// Starts a stub on a given address.
    pub async fn bind(addr: SocketAddr) -> std::io::Result<Self> {
        Self::bind_with(addr, StubOptions::default()).await
    }

    /// Starts a stub on `127.0.0.1:0` with options.
    pub async fn start_with(options: StubOptions) -> std::io::Result<Self> {
        let addr = "127.0.0.1:0".parse().map_err(std::io::Error::other)?;
        Self::bind_with(addr, options).await
    }

    async fn bind_with(addr: SocketAddr, options: StubOptions) -> std::io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(State {
            options,
            ..State::default()
        });
        let (stop, stopped) = watch::channel(false);
        tokio::spawn(serve(listener, state.clone(), stopped));
        Ok(Self { addr, state, stop })
    }

    /// Arrival times of the requests so far, from the first (needs `record_arrivals`).
    pub fn arrivals(&self) -> Vec<Duration> {
        let arrivals = self
            .state
            .arrivals
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let Some(first) = arrivals.first().copied() else {
            return Vec::new();
        };
        arrivals
            .iter()
            .map(|t| t.saturating_duration_since(first))
            .collect()
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// How many requests reached it.
    pub fn requests(&self) -> u64 {
        self.state.requests.load(Ordering::Relaxed)
    }
}

impl Drop for Stub {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

async fn serve(listener: TcpListener, state: Arc<State>, mut stopped: watch::Receiver<bool>) {
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!("stub accept failed: {e}");
                    continue;
                }
            },
            _ = stopped.changed() => return,
        };
        let _ = stream.set_nodelay(true);
        let state = state.clone();
        let mut stopped = stopped.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let state = state.clone();
                async move {
                    arrive(&state).await;
                    answer(req).await
                }
            });
            let builder = auto::Builder::new(TokioExecutor::new());
            let conn = builder.serve_connection(TokioIo::new(stream), svc);
            tokio::select! {
                _ = conn => {}
                _ = stopped.changed() => {}
            }
        });
    }
}

/// Counts a request, records its arrival, and holds it while a stall is on.
async fn arrive(state: &State) {
    state.requests.fetch_add(1, Ordering::Relaxed);
    let opts = &state.options;
    if !opts.record_arrivals && opts.stall.is_none() {
        return;
    }
    let now = Instant::now();
    let first = *state
        .first
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get_or_insert(now);
    if opts.record_arrivals {
        state
            .arrivals
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(now);
    }
    if let Some((after, length)) = opts.stall {
        let (from, until) = (first + after, first + after + length);
        if now >= from && now < until {
            tokio::time::sleep_until(until.into()).await;
        }
    }
}

type StubBody = BoxBody<Bytes, Infallible>;

async fn answer(req: Request<Incoming>) -> Result<Response<StubBody>, Infallible> {
    let query = req.uri().query().unwrap_or("").to_owned();
    let param = |name: &str| {
        query.split('&').find_map(|kv| {
            kv.strip_prefix(name)
                .and_then(|r| r.strip_prefix('='))
                .and_then(|v| v.parse::<u64>().ok())
        })
    };
    if let Some(ms) = param("delay_ms") {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    let status = param("status")
        .and_then(|s| StatusCode::from_u16(s as u16).ok())
        .unwrap_or(StatusCode::OK);

    let grpc = req
        .headers()
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
    if grpc {
        // Drain the request, then answer with one empty message and an OK status trailer.
        let _ = req.into_body().collect().await;
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", HeaderValue::from_static("0"));
        let body = Frames(
            [
                Frame::data(Bytes::from_static(&[0, 0, 0, 0, 0])),
                Frame::trailers(trailers),
            ]
            .into(),
        )
        .boxed();
        return Ok(Response::builder()
            .header(http::header::CONTENT_TYPE, "application/grpc")
            .body(body)
            .unwrap_or_default());
    }

    if req.uri().path() == "/echo" {
        let headers: serde_json::Map<String, serde_json::Value> = req
            .headers()
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned().into(),
                )
            })
            .collect();
        let body = serde_json::json!({
            "method": req.method().as_str(),
            "path": req.uri().path(),
            "version": format!("{:?}", req.version()),
            "headers": headers,
            "body_bytes": req.into_body().collect().await.map(|b| b.to_bytes().len()).unwrap_or(0),
        });
        return Ok(Response::builder()
            .status(status)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body.to_string())).boxed())
            .unwrap_or_default());
    }

    // Read (and discard) any request body so keep-alive connections stay usable.
    let _ = req.into_body().collect().await;
    let body = match param("size") {
        Some(n) => Bytes::from(vec![b'x'; n as usize]),
        None => Bytes::from_static(b"ok\n"),
    };
    Ok(Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, "text/plain")
        .body(Full::new(body).boxed())
        .unwrap_or_default())
}

/// A body that yields a fixed list of frames (data, then trailers).
struct Frames(std::collections::VecDeque<Frame<Bytes>>);

impl hyper::body::Body for Frames {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        std::task::Poll::Ready(self.0.pop_front().map(Ok))
    }
}
