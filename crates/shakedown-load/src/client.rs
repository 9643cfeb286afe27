//! The HTTP client of the load generator: one connection per worker.
//!
//! A pooled client (hyper-util's legacy one) would hide which connection a request used and add
//! a lock per request; a load generator wants the opposite: each worker owns its connections
//! (HTTP/1.1 keep-alive on [`crate::h1`], or HTTP/2 on hyper by prior knowledge or ALPN),
//! reconnects when one closes, and every byte on the wire is counted under TLS, so
//! `data_sent`/`data_received` are what the network carried. An idempotent request on a reused
//! connection that the server had closed while idle (closed before any byte of a response) is
//! sent again on a fresh one, once, as browsers do.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::USER_AGENT;
use http::{HeaderMap, HeaderValue, Method, Request, Uri};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo};
use shakedown_model::load::{HttpOptions, HttpVersion, RequestTemplate};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::LoadError;
use crate::h1::{H1Conn, H1Error};

/// Bytes written and read on the connections of one worker.
#[derive(Debug, Default)]
pub struct IoCounters {
    /// Bytes written to sockets.
    pub sent: AtomicU64,
    /// Bytes read from sockets.
    pub received: AtomicU64,
}

/// A request template made ready to send many times.
#[derive(Debug)]
struct Prepared {
    method: Method,
    /// The whole HTTP/1.1 request, serialized once.
    h1_request: Bytes,
    /// Absolute URI for HTTP/2.
    h2_uri: Uri,
    /// HEAD: a response without a body whatever its headers say.
    head: bool,
    /// Safe to send again when a reused connection turns out closed.
    idempotent: bool,
    headers: HeaderMap,
    body: Bytes,
    endpoint: usize,
}

/// Where connections go: one per distinct scheme, host and port of the templates.
#[derive(Debug)]
struct Endpoint {
    authority: String,
    host: String,
    addrs: Vec<SocketAddr>,
    tls: bool,
}

/// How one request ended, seen from the wire.
#[derive(Debug)]
pub struct Outcome {
    /// Response status, if a response came.
    pub status: Option<u16>,
    /// Why no (complete) response came.
    pub error: Option<&'static str>,
    /// The body, when asked for (checks that look into it).
    pub body: Option<Bytes>,
}

/// The run's client: templates, endpoints and TLS, shared by all workers.
pub struct Client {
    prepared: Vec<Prepared>,
    endpoints: Vec<Endpoint>,
    tls: Option<TlsConnector>,
    version: HttpVersion,
    timeout: Duration,
}

/// The connections one worker owns, one slot per endpoint, and the bytes they moved.
#[derive(Default)]
pub struct Conns {
    slots: Vec<Option<Sender>>,
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    counters: Arc<IoCounters>,
    taken: (u64, u64),
}

impl Conns {
    /// Bytes (sent, received) on the wire since the last call.
    pub fn take_bytes(&mut self) -> (u64, u64) {
        let now = (
            self.counters.sent.load(Ordering::Relaxed),
            self.counters.received.load(Ordering::Relaxed),
        );
        let delta = (now.0 - self.taken.0, now.1 - self.taken.1);
        self.taken = now;
        delta
    }
}

enum Sender {
    /// HTTP/1.1, driven by the worker itself (no connection task).
    H1(H1Conn<Stream>),
    /// HTTP/2: the connection runs as its own task (it answers pings and settings).
    H2(http2::SendRequest<Full<Bytes>>),
}

/// How one try on one connection went.
enum Attempt {
    /// A response (or a failure after sending); whether the connection stays usable.
    Done(Outcome, bool),
    /// No answer at all: refused before anything was written (HTTP/2), or closed before any
    /// byte of a response to an idempotent request (HTTP/1.1).
    NotSent(&'static str),
}

impl Outcome {
    fn failed(error: &'static str) -> Self {
        Self {
            status: None,
            error: Some(error),
            body: None,
        }
    }
}

/// Reads a response to its end.
async fn read(
    sent: Result<
        hyper::Response<hyper::body::Incoming>,
        hyper::client::conn::TrySendError<Request<Full<Bytes>>>,
    >,
    want_body: bool,
) -> Attempt {
    let response = match sent {
        Ok(r) => r,
        Err(mut e) => {
            if e.take_message().is_some() {
                return Attempt::NotSent(classify(e.error()));
            }
            return Attempt::Done(Outcome::failed(classify(e.error())), false);
        }
    };
    let status = response.status().as_u16();
    let close = response
        .headers()
        .get(http::header::CONNECTION)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
    let mut body = response.into_body();
    let mut kept = want_body.then(Vec::new);
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(f) => {
                if let (Some(buf), Some(data)) = (kept.as_mut(), f.data_ref()) {
                    buf.extend_from_slice(data);
                }
            }
            Err(e) => {
                let outcome = Outcome {
                    status: Some(status),
                    error: Some(classify(&e)),
                    body: None,
                };
                return Attempt::Done(outcome, false);
            }
        }
    }
    let outcome = Outcome {
        status: Some(status),
        error: None,
        body: kept.map(Bytes::from),
    };
    Attempt::Done(outcome, !close)
}

impl Client {
    /// Resolves the templates' hosts and prepares them.
    pub async fn new(templates: &[RequestTemplate], http: &HttpOptions) -> Result<Self, LoadError> {
        let mut endpoints: Vec<Endpoint> = Vec::new();
        let mut prepared = Vec::new();
        let user_agent = HeaderValue::from_static(concat!("shakedown/", env!("CARGO_PKG_VERSION")));
        for t in templates {
            let tls = t.url.scheme_str() == Some("https");
            let host = t.url.host().unwrap_or_default().to_string();
            let port = t.url.port_u16().unwrap_or(if tls { 443 } else { 80 });
            let authority = t
                .url
                .authority()
                .map(|a| a.as_str().to_string())
                .unwrap_or_else(|| host.clone());
            let endpoint = match endpoints
                .iter()
                .position(|e| e.authority == authority && e.tls == tls)
            {
                Some(i) => i,
                None => {
                    let bare = host.trim_start_matches('[').trim_end_matches(']');
                    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((bare, port))
                        .await
                        .map_err(|e| LoadError::Resolve(host.clone(), e))?
                        .collect();
                    endpoints.push(Endpoint {
                        authority: authority.clone(),
                        host,
                        addrs,
                        tls,
                    });
                    endpoints.len() - 1
                }
            };
            let mut headers = HeaderMap::new();
            headers.insert(USER_AGENT, user_agent.clone());
            for (k, v) in &t.headers {
                headers.insert(k.clone(), v.clone());
            }
            let path = t.url.path_and_query().map(|p| p.as_str()).unwrap_or("/");
            let body = Bytes::from(t.body.clone());
            prepared.push(Prepared {
                h1_request: crate::h1::serialize(&t.method, path, &authority, &headers, &body),
                h2_uri: t.url.clone(),
                head: t.method == Method::HEAD,
                idempotent: t.method.is_idempotent(),
                method: t.method.clone(),
                headers,
                body,
                endpoint,
            });
        }
        let tls = if endpoints.iter().any(|e| e.tls) {
            Some(TlsConnector::from(
                crate::tls::client_config(http).map_err(LoadError::Tls)?,
            ))
        } else {
            None
        };
        Ok(Self {
            prepared,
            endpoints,
            tls,
            version: http.version,
            timeout: http.timeout,
        })
    }

    /// Sends template `index` on the worker's connection (opening one if needed) and reads the
    /// whole response, within the request timeout.
    pub async fn send(&self, conns: &mut Conns, index: usize, want_body: bool) -> Outcome {
        let p = &self.prepared[index];
        if conns.slots.len() < self.endpoints.len() {
            conns.slots.resize_with(self.endpoints.len(), || None);
        }
        // A lazy timer: one per worker, re-armed only when it fires before the current
        // request's deadline. With a 60 s timeout and sub-millisecond requests that is once a
        // minute instead of a timer insert and removal per request.
        let deadline = tokio::time::Instant::now() + self.timeout;
        let mut timer = conns
            .timer
            .take()
            .unwrap_or_else(|| Box::pin(tokio::time::sleep_until(deadline)));
        let outcome = {
            let exchange = self.exchange(conns, p, want_body);
            tokio::pin!(exchange);
            loop {
                tokio::select! {
                    biased;
                    outcome = &mut exchange => break Some(outcome),
                    _ = timer.as_mut() => {
                        if tokio::time::Instant::now() >= deadline {
                            break None;
                        }
                        timer.as_mut().reset(deadline);
                    }
                }
            }
        };
        conns.timer = Some(timer);
        outcome.unwrap_or_else(|| {
            // The connection is mid-exchange: it cannot carry another request.
            conns.slots[p.endpoint] = None;
            Outcome::failed("timeout")
        })
    }

    async fn exchange(&self, conns: &mut Conns, p: &Prepared, want_body: bool) -> Outcome {
        let counters = conns.counters.clone();
        let slot = &mut conns.slots[p.endpoint];
        for attempt in 1..=2 {
            let reused = slot.is_some();
            if slot.as_ref().is_none_or(Sender::is_closed) {
                match self.connect(&self.endpoints[p.endpoint], &counters).await {
                    Ok(s) => *slot = Some(s),
                    Err(e) => {
                        *slot = None;
                        return Outcome::failed(e);
                    }
                }
            }
            let Some(sender) = slot.as_mut() else {
                return Outcome::failed("connect");
            };
            let attempt_result = match sender {
                Sender::H1(conn) => match conn.exchange(&p.h1_request, p.head, want_body).await {
                    Ok(r) => {
                        let outcome = Outcome {
                            status: Some(r.status),
                            error: None,
                            body: r.body,
                        };
                        Attempt::Done(outcome, r.reusable)
                    }
                    Err(H1Error::ClosedBeforeResponse) if p.idempotent => {
                        Attempt::NotSent("connection closed")
                    }
                    Err(e) => Attempt::Done(Outcome::failed(e.name()), false),
                },
                Sender::H2(s) => {
                    let req = self.request(p);
                    if s.ready().await.is_err() {
                        Attempt::NotSent("connection closed")
                    } else {
                        read(s.try_send_request(req).await, want_body).await
                    }
                }
            };
            match attempt_result {
                Attempt::Done(outcome, keep) => {
                    if !keep {
                        *slot = None;
                    }
                    return outcome;
                }
                // The reused connection had been closed under us before any answer: once more
                // on a fresh one (for HTTP/1.1 only idempotent requests get here).
                Attempt::NotSent(e) => {
                    *slot = None;
                    if !(reused && attempt == 1) {
                        return Outcome::failed(e);
                    }
                }
            }
        }
        Outcome::failed("connection closed")
    }

    fn request(&self, p: &Prepared) -> Request<Full<Bytes>> {
        let mut req = Request::new(Full::new(p.body.clone()));
        *req.method_mut() = p.method.clone();
        *req.headers_mut() = p.headers.clone();
        *req.uri_mut() = p.h2_uri.clone();
        *req.version_mut() = http::Version::HTTP_2;
        req
    }

    async fn connect(
        &self,
        e: &Endpoint,
        counters: &Arc<IoCounters>,
    ) -> Result<Sender, &'static str> {
        let mut last = "connect";
        for addr in &e.addrs {
            let tcp = match TcpStream::connect(addr).await {
                Ok(s) => s,
                Err(err) => {
                    last = if err.kind() == io::ErrorKind::ConnectionRefused {
                        "connection refused"
                    } else {
                        "connect"
                    };
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            let io = Counted {
                inner: tcp,
                counters: counters.clone(),
            };
            return match (&self.tls, e.tls) {
                (Some(tls), true) => {
                    let name = rustls::pki_types::ServerName::try_from(
                        e.host
                            .trim_start_matches('[')
                            .trim_end_matches(']')
                            .to_string(),
                    )
                    .map_err(|_| "tls")?;
                    let stream = tls.connect(name, io).await.map_err(|_| "tls")?;
                    if stream.get_ref().1.alpn_protocol() == Some(b"h2") {
                        h2_handshake(TokioIo::new(stream)).await
                    } else {
                        Ok(Sender::H1(H1Conn::new(Stream::Tls(Box::new(stream)))))
                    }
                }
                _ => {
                    if self.version == HttpVersion::Http2 {
                        h2_handshake(TokioIo::new(io)).await
                    } else {
                        Ok(Sender::H1(H1Conn::new(Stream::Plain(io))))
                    }
                }
            };
        }
        Err(last)
    }
}

async fn h2_handshake<T>(io: TokioIo<T>) -> Result<Sender, &'static str>
where
    T: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let (sender, conn) = http2::handshake(TokioExecutor::new(), io)
        .await
        .map_err(|_| "handshake")?;
    tokio::spawn(conn);
    Ok(Sender::H2(sender))
}

/// A connection's byte stream: plain TCP or TLS over it, both counted.
enum Stream {
    Plain(Counted<TcpStream>),
    Tls(Box<tokio_rustls::client::TlsStream<Counted<TcpStream>>>),
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_flush(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

impl Sender {
    fn is_closed(&self) -> bool {
        match self {
            // Noticed when the next request finds it closed (and is sent again).
            Self::H1(_) => false,
            Self::H2(s) => s.is_closed(),
        }
    }
}

/// Names a hyper error the way the summary reports it.
fn classify(e: &hyper::Error) -> &'static str {
    if e.is_timeout() {
        "timeout"
    } else if e.is_incomplete_message() {
        "connection closed"
    } else if e.is_parse() || e.is_parse_status() {
        "bad response"
    } else if e.is_canceled() {
        "canceled"
    } else {
        "connection error"
    }
}

/// A stream that counts the bytes it moves.
struct Counted<S> {
    inner: S,
    counters: Arc<IoCounters>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Counted<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        if n > 0 {
            self.counters
                .received
                .fetch_add(n as u64, Ordering::Relaxed);
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = r {
            self.counters.sent.fetch_add(n as u64, Ordering::Relaxed);
        }
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = r {
            self.counters.sent.fetch_add(n as u64, Ordering::Relaxed);
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
