//! The response body every route returns: a local answer or the upstream's stream, optionally
//! throttled, with hooks that run when the body ends.
//!
//! Bodies are never buffered whole: upstream frames (data and trailers) pass through as they
//! come. The hooks run when the last frame has been handed to hyper or when the body is dropped
//! (client gone), so request timing and `active_faults` are always settled.

use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::time::{Instant, Sleep};

/// Errors a response body can yield mid-stream.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Something to run once, when the response is finished (or abandoned).
pub type Hook = Box<dyn FnOnce() + Send + Sync>;

enum Inner {
    Full(Option<Bytes>),
    Upstream(Incoming),
}

/// A proxied or locally generated response body.
pub struct ResponseBody {
    inner: Inner,
    throttle: Option<Box<Throttle>>,
    hooks: Vec<Hook>,
}

impl std::fmt::Debug for ResponseBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseBody")
            .field("throttled", &self.throttle.is_some())
            .finish()
    }
}

impl ResponseBody {
    /// A body with these bytes.
    pub fn full(bytes: impl Into<Bytes>) -> Self {
        let b = bytes.into();
        Self {
            inner: Inner::Full((!b.is_empty()).then_some(b)),
            throttle: None,
            hooks: Vec::new(),
        }
    }

    /// No body.
    pub fn empty() -> Self {
        Self {
            inner: Inner::Full(None),
            throttle: None,
            hooks: Vec::new(),
        }
    }

    /// The upstream's body, streamed.
    pub fn upstream(body: Incoming) -> Self {
        Self {
            inner: Inner::Upstream(body),
            throttle: None,
            hooks: Vec::new(),
        }
    }

    /// Runs `hook` when the body ends or is dropped.
    pub fn on_end(&mut self, hook: Hook) {
        self.hooks.push(hook);
    }

    /// Limits the body to `bytes_per_sec`.
    pub fn throttle(&mut self, bytes_per_sec: u64) {
        self.throttle = Some(Box::new(Throttle::new(bytes_per_sec)));
    }

    fn finish(&mut self) {
        for hook in self.hooks.drain(..) {
            hook();
        }
    }

    fn poll_inner(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match &mut self.inner {
            Inner::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            Inner::Upstream(body) => Pin::new(body).poll_frame(cx).map_err(Into::into),
        }
    }
}

impl Drop for ResponseBody {
    fn drop(&mut self) {
        self.finish();
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        loop {
            if let Some(t) = &mut this.throttle
                && let Some(frame) = ready!(t.poll_release(cx))
            {
                return Poll::Ready(Some(Ok(frame)));
            }
            let frame = ready!(this.poll_inner(cx));
            match (frame, &mut this.throttle) {
                (Some(Ok(frame)), Some(t)) if frame.is_data() => {
                    if let Ok(data) = frame.into_data() {
                        t.hold(data);
                    }
                }
                (None, _) => {
                    this.finish();
                    return Poll::Ready(None);
                }
                (other, _) => return Poll::Ready(other),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        let pending = self.throttle.as_ref().is_some_and(|t| t.pending.is_some());
        !pending
            && match &self.inner {
                Inner::Full(b) => b.is_none(),
                Inner::Upstream(body) => body.is_end_stream(),
            }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            Inner::Upstream(body) => body.size_hint(),
        }
    }
}

/// Releases bytes no faster than a rate, the way Envoy's fault filter does: the first 50 ms
/// worth goes at once, the rest follows the clock (64 KiB at 16 KiB/s takes ≈3.95 s).
struct Throttle {
    bytes_per_sec: u64,
    started: Option<Instant>,
    sent: u64,
    pending: Option<Bytes>,
    sleep: Pin<Box<Sleep>>,
}

/// Released in slices of at most this many bytes, so a big frame still flows smoothly.
const SLICE: u64 = 16 * 1024;
/// Envoy's rate limiter fill interval, granted up front.
const HEAD_START: Duration = Duration::from_millis(50);

impl Throttle {
    fn new(bytes_per_sec: u64) -> Self {
        Self {
            bytes_per_sec: bytes_per_sec.max(1),
            started: None,
            sent: 0,
            pending: None,
            sleep: Box::pin(tokio::time::sleep(Duration::ZERO)),
        }
    }

    fn hold(&mut self, data: Bytes) {
        self.started.get_or_insert_with(Instant::now);
        if !data.is_empty() {
            self.pending = Some(data);
        }
    }

    fn poll_release(&mut self, cx: &mut Context<'_>) -> Poll<Option<Frame<Bytes>>> {
        let Some(data) = &mut self.pending else {
            return Poll::Ready(None);
        };
        let started = *self.started.get_or_insert_with(Instant::now);
        loop {
            let elapsed = started.elapsed() + HEAD_START;
            let allowed = (elapsed.as_secs_f64() * self.bytes_per_sec as f64) as u64;
            if allowed > self.sent {
                let n = (allowed - self.sent).min(SLICE).min(data.len() as u64) as usize;
                let out = data.split_to(n);
                self.sent += n as u64;
                if data.is_empty() {
                    self.pending = None;
                }
                return Poll::Ready(Some(Frame::data(out)));
            }
            // Sleep until at least one more byte (or a slice) is allowed.
            let want = (self.sent + 1).max(self.sent + (data.len() as u64).min(SLICE) / 4);
            let at = started + Duration::from_secs_f64(want as f64 / self.bytes_per_sec as f64);
            let at = at.checked_sub(HEAD_START).unwrap_or(started);
            self.sleep.as_mut().reset(at);
            ready!(self.sleep.as_mut().poll(cx));
        }
    }
}

use std::future::Future as _;
