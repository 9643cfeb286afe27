//! One TCP connection through a proxy: two directions, each a reader and a pump.
//!
//! The reader takes chunks off the source socket as they come, stamps each with the time it was
//! read, and queues it (bounded: a full queue stops reading, so a slow toxic pushes back on the
//! sender as a slow network would). The pump runs each chunk through the direction's toxics in
//! chain order and writes what comes out. Because the reader never waits on a toxic, a latency
//! toxic delays every chunk by its latency from the moment it was *read* — the throughput of a
//! delayed stream is kept, as in Toxiproxy.
//!
//! Toxics change under a running connection: the pump watches the proxy's [`ToxicSet`] and, on
//! a change, rebuilds its chain keeping each surviving toxic's per-connection state (its
//! toxicity draw, bytes counted by `limit_data`, …). A chunk waiting inside a toxic is re-run
//! from where it stood, so removing a latency toxic releases held data at once and the control
//! API never waits on the data path.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::Shutdown;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use shakedown_model::{Stream, ToxicKind};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{ActiveToxic, TcpStats, ToxicSet};
use crate::fault::clock;

/// Bytes read per chunk.
const CHUNK: usize = 32 * 1024;
/// Chunks queued between a reader and its pump (at most 8 MiB per direction).
const QUEUE: usize = 256;
/// How long connecting to the upstream may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The listening socket, shared with the proxy's control side so that taking a proxy down
/// closes it at once (a re-enable can bind the same port right after).
pub(crate) type ListenerSlot = Arc<std::sync::Mutex<Option<TcpListener>>>;

pub(crate) struct AcceptArgs {
    pub(crate) listener: ListenerSlot,
    pub(crate) upstream: String,
    pub(crate) toxics: watch::Receiver<Arc<ToxicSet>>,
    pub(crate) cancel: CancellationToken,
    pub(crate) stats: Arc<TcpStats>,
    pub(crate) seed: u64,
}

/// Accepts until the proxy goes down; the listener closes when this returns.
pub(crate) async fn accept_loop(args: AcceptArgs) {
    let AcceptArgs {
        listener,
        upstream,
        toxics,
        cancel,
        stats,
        seed,
    } = args;
    let mut n = 0u64;
    loop {
        let accepted = std::future::poll_fn(|cx| {
            match listener.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
                Some(l) => l.poll_accept(cx).map(Some),
                None => std::task::Poll::Ready(None),
            }
        });
        let (client, _) = tokio::select! {
            _ = cancel.cancelled() => return,
            a = accepted => match a {
                None => return,
                Some(Ok(a)) => a,
                Some(Err(e)) => {
                    // Out of descriptors and the like: back off instead of spinning.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        n += 1;
        stats.connections.inc();
        tokio::spawn(connection(Conn {
            client,
            upstream: upstream.clone(),
            toxics: toxics.clone(),
            cancel: cancel.child_token(),
            stats: stats.clone(),
            seed: splitmix(seed ^ n),
        }));
    }
}

struct Conn {
    client: TcpStream,
    upstream: String,
    toxics: watch::Receiver<Arc<ToxicSet>>,
    cancel: CancellationToken,
    stats: Arc<TcpStats>,
    seed: u64,
}

/// What ended a connection early.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum End {
    /// Close both sides (FIN).
    Close,
    /// Reset both sides (RST).
    Reset,
}

pub(crate) struct Shared {
    pub(crate) cancel: CancellationToken,
    end: std::sync::Mutex<Option<End>>,
}

impl Shared {
    pub(crate) fn end(&self, how: End) {
        let mut end = self.end.lock().unwrap_or_else(|p| p.into_inner());
        // A reset wins over a close.
        if *end != Some(End::Reset) {
            *end = Some(how);
        }
        drop(end);
        self.cancel.cancel();
    }
}

async fn connection(conn: Conn) {
    let Conn {
        client,
        upstream,
        toxics,
        cancel,
        stats,
        seed,
    } = conn;
    let server = tokio::select! {
        _ = cancel.cancelled() => return,
        s = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(upstream.as_str())) => match s {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                stats.connect_failures.inc();
                tracing::debug!(%upstream, "upstream connect failed: {e}; closing the client");
                return;
            }
            Err(_) => {
                stats.connect_failures.inc();
                tracing::debug!(%upstream, "upstream connect timed out; closing the client");
                return;
            }
        },
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    stats.active.inc();
    let client = Arc::new(client);
    let server = Arc::new(server);
    let shared = Arc::new(Shared {
        cancel,
        end: std::sync::Mutex::new(None),
    });
    let up = direction(Dir {
        stream: Stream::Upstream,
        src: client.clone(),
        dst: server.clone(),
        toxics: toxics.clone(),
        shared: shared.clone(),
        received: stats.received[0].clone(),
        sent: stats.sent[0].clone(),
        seed: splitmix(seed ^ 1),
    });
    let down = direction(Dir {
        stream: Stream::Downstream,
        src: server.clone(),
        dst: client.clone(),
        toxics,
        shared: shared.clone(),
        received: stats.received[1].clone(),
        sent: stats.sent[1].clone(),
        seed: splitmix(seed ^ 2),
    });
    tokio::join!(up, down);
    let end = *shared.end.lock().unwrap_or_else(|p| p.into_inner());
    if end == Some(End::Reset) {
        let _ = client.set_zero_linger();
        let _ = server.set_zero_linger();
    }
    stats.active.dec();
    // Both sockets close (FIN, or RST with zero linger) when the last reference goes here.
}

/// One direction of a connection.
pub(crate) struct Dir {
    pub(crate) stream: Stream,
    pub(crate) src: Arc<TcpStream>,
    pub(crate) dst: Arc<TcpStream>,
    pub(crate) toxics: watch::Receiver<Arc<ToxicSet>>,
    pub(crate) shared: Arc<Shared>,
    pub(crate) received: crate::metrics::Counter,
    pub(crate) sent: crate::metrics::Counter,
    seed: u64,
}

impl Dir {
    /// Whether a live toxic acts on this direction (marks the set seen).
    pub(crate) fn has_toxics(&mut self) -> bool {
        let now = Instant::now();
        let stream = self.stream;
        self.toxics
            .borrow_and_update()
            .toxics
            .iter()
            .any(|t| t.spec.stream == stream && !t.expired(now))
    }
}

async fn direction(mut d: Dir) {
    // No toxic on this stream: the kernel moves the bytes until one appears.
    #[cfg(target_os = "linux")]
    if let Some(super::splice::Outcome::Done) = super::splice::run(&mut d).await {
        return;
    }
    let (tx, rx) = mpsc::channel(QUEUE);
    let received = d.received.clone();
    let sent = d.sent.clone();
    let reader = read_side(d.src.clone(), tx, d.shared.cancel.clone(), received);
    let pump = Pump {
        stream: d.stream,
        dst: d.dst,
        toxics: d.toxics,
        shared: d.shared,
        chain: Vec::new(),
        states: HashMap::new(),
        rng: ChaCha8Rng::seed_from_u64(d.seed),
        jitter_seed: splitmix(d.seed),
        sent,
    };
    tokio::join!(reader, pump.run(rx));
}

/// A chunk on its way: the bytes, when they were read (moved on by latency toxics), a
/// sequence number (for per-chunk draws that must not change when a chunk is re-run), and the
/// earliest time it may move on (slices waiting their turn).
#[derive(Debug, Clone)]
struct Piece {
    data: Bytes,
    stamp: Instant,
    seq: u64,
    not_before: Option<Instant>,
}

async fn read_side(
    src: Arc<TcpStream>,
    tx: mpsc::Sender<Piece>,
    cancel: CancellationToken,
    received: crate::metrics::Counter,
) {
    let mut seq = 0u64;
    loop {
        let mut buf = BytesMut::with_capacity(CHUNK);
        let n = tokio::select! {
            _ = cancel.cancelled() => return,
            r = read_some(&src, &mut buf) => r,
        };
        match n {
            Ok(0) | Err(_) => return, // dropping `tx` tells the pump the source ended
            Ok(n) => {
                received.add(n as u64);
                seq += 1;
                let piece = Piece {
                    data: buf.freeze(),
                    stamp: Instant::now(),
                    seq,
                    not_before: None,
                };
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    r = tx.send(piece) => if r.is_err() { return },
                }
            }
        }
    }
}

async fn read_some(s: &TcpStream, buf: &mut BytesMut) -> io::Result<usize> {
    loop {
        s.readable().await?;
        match s.try_read_buf(buf) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            r => return r,
        }
    }
}

async fn write_all(s: &TcpStream, mut data: &[u8]) -> io::Result<()> {
    while !data.is_empty() {
        s.writable().await?;
        match s.try_write(data) {
            Ok(n) => data = &data[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// A toxic's state on one connection and direction.
#[derive(Debug)]
struct State {
    /// The toxicity it was drawn for (a changed toxicity draws again, as Toxiproxy does).
    toxicity: f32,
    /// Whether it applies to this connection.
    enabled: bool,
    /// `limit_data`: bytes let through.
    passed: u64,
    /// `bandwidth`: when the last piece finished its share of the rate.
    paced_until: Option<Instant>,
    /// `timeout`: when the connection closes unless more data comes.
    closes_at: Option<Instant>,
    /// `reset_peer`: when the reset fires, once data came.
    resets_at: Option<Instant>,
}

/// What one toxic did with a piece.
enum Step {
    /// On to the next toxic.
    Next(Piece),
    /// Wait, then run the same piece through the same toxic again.
    WaitUntil(Instant, Piece),
    /// The first slice goes on; the rest stays at this toxic (due later).
    Slice(Piece, Piece),
    /// Both parts stay at this toxic, the first one first.
    Split(Piece, Piece),
    /// Swallowed.
    Drop,
    /// Let this through, then close the connection.
    LastThenClose(Piece),
    /// Reset the connection now.
    Reset,
}

type Work = VecDeque<(usize, Piece)>;

struct Pump {
    stream: Stream,
    dst: Arc<TcpStream>,
    toxics: watch::Receiver<Arc<ToxicSet>>,
    shared: Arc<Shared>,
    chain: Vec<Arc<ActiveToxic>>,
    states: HashMap<u64, State>,
    rng: ChaCha8Rng,
    jitter_seed: u64,
    sent: crate::metrics::Counter,
}

impl Pump {
    async fn run(mut self, mut rx: mpsc::Receiver<Piece>) {
        let mut work: Work = VecDeque::new();
        if self.refresh(&mut work) {
            self.shared.end(End::Close);
            return;
        }
        // Pieces in flight, each with the chain position it has reached; the front one moves.
        let mut closing = false;
        let cancel = self.shared.cancel.clone();
        loop {
            let Some((pos, piece)) = work.pop_front() else {
                if closing {
                    self.shared.end(End::Close);
                    return;
                }
                let timer = self.next_timer();
                let close = tokio::select! {
                    biased;
                    _ = cancel.cancelled() => return,
                    changed = self.toxics.changed() => changed.is_err() || self.refresh(&mut work),
                    _ = sleep_opt(timer) => self.fire_timers(&mut work),
                    next = rx.recv() => match next {
                        Some(p) => {
                            work.push_back((0, p));
                            false
                        }
                        None => {
                            self.source_ended().await;
                            return;
                        }
                    },
                };
                if close {
                    self.shared.end(End::Close);
                    return;
                }
                continue;
            };
            if pos >= self.chain.len() {
                let r = tokio::select! {
                    _ = cancel.cancelled() => return,
                    r = write_all(&self.dst, &piece.data) => r,
                };
                match r {
                    Ok(()) => self.sent.add(piece.data.len() as u64),
                    Err(_) => {
                        self.shared.end(End::Close);
                        return;
                    }
                }
                continue;
            }
            let (at, piece) = match self.step(pos, piece) {
                Step::Next(p) => {
                    work.push_front((pos + 1, p));
                    continue;
                }
                Step::Slice(first, rest) => {
                    work.push_front((pos, rest));
                    work.push_front((pos + 1, first));
                    continue;
                }
                Step::Split(first, rest) => {
                    work.push_front((pos, rest));
                    work.push_front((pos, first));
                    continue;
                }
                Step::Drop => continue,
                Step::LastThenClose(p) => {
                    // What earlier toxics still hold will never get here.
                    work.clear();
                    work.push_front((pos + 1, p));
                    closing = true;
                    continue;
                }
                Step::Reset => {
                    self.shared.end(End::Reset);
                    return;
                }
                Step::WaitUntil(at, p) => (at, p),
            };
            // Waiting inside a toxic: the piece goes back to the front at its position, and
            // toxic changes, timers and cancellation are watched meanwhile.
            work.push_front((pos, piece));
            let timer = self.next_timer();
            let close = tokio::select! {
                biased;
                _ = cancel.cancelled() => return,
                changed = self.toxics.changed() => changed.is_err() || self.refresh(&mut work),
                _ = sleep_opt(timer) => self.fire_timers(&mut work),
                _ = clock::until(at) => false,
            };
            if close {
                self.shared.end(End::Close);
                return;
            }
        }
    }

    /// Re-reads the toxic set and moves every piece in flight to its place in the new chain:
    /// at the toxic it stood at if that survived, else before the first surviving toxic it had
    /// not passed (toxics are only removed or appended, so the order of survivors holds).
    /// True when the connection must close: a `timeout` toxic that applied here was removed,
    /// which closes the connection in Toxiproxy.
    fn refresh(&mut self, work: &mut Work) -> bool {
        let old: Vec<u64> = self.chain.iter().map(|t| t.id).collect();
        let close = self.rebuild();
        for entry in work.iter_mut() {
            let p = entry.0;
            entry.0 = match old
                .get(p)
                .and_then(|id| self.chain.iter().position(|t| t.id == *id))
            {
                Some(i) => i,
                None => old[..p.min(old.len())]
                    .iter()
                    .filter(|id| self.chain.iter().any(|t| t.id == **id))
                    .count(),
            };
        }
        close
    }

    /// Re-reads the toxic set; returns true when the connection must close (a `timeout` toxic
    /// that applied here was removed — Toxiproxy closes the connection then).
    fn rebuild(&mut self) -> bool {
        let now = Instant::now();
        let set = self.toxics.borrow_and_update().clone();
        let next: Vec<Arc<ActiveToxic>> = set
            .toxics
            .iter()
            .filter(|t| t.spec.stream == self.stream && !t.expired(now))
            .cloned()
            .collect();
        let mut close = false;
        for old in &self.chain {
            if !next.iter().any(|t| t.id == old.id)
                && let Some(state) = self.states.remove(&old.id)
            {
                close |= state.enabled && matches!(old.spec.kind, ToxicKind::Timeout { .. });
            }
        }
        for t in &next {
            let redraw = self
                .states
                .get(&t.id)
                .is_none_or(|s| s.toxicity != t.spec.toxicity);
            if redraw {
                // Toxicity 0 never applies and 1 always does; in between, one draw per
                // connection and direction from this connection's seeded stream.
                let enabled = t.spec.toxicity >= 1.0
                    || (t.spec.toxicity > 0.0 && self.rng.random::<f32>() < t.spec.toxicity);
                let was = self.states.get(&t.id).is_some_and(|s| s.enabled);
                if enabled && !was {
                    t.applied.inc();
                }
                let state = self.states.entry(t.id).or_insert(State {
                    toxicity: t.spec.toxicity,
                    enabled,
                    passed: 0,
                    paced_until: None,
                    closes_at: None,
                    resets_at: None,
                });
                state.toxicity = t.spec.toxicity;
                state.enabled = enabled;
            }
            if let (ToxicKind::Timeout { timeout }, Some(state)) =
                (t.spec.kind, self.states.get_mut(&t.id))
            {
                state.closes_at = (state.enabled && timeout > 0).then(|| {
                    state
                        .closes_at
                        .unwrap_or(now + Duration::from_millis(timeout))
                });
            }
        }
        self.chain = next;
        close
    }

    /// The earliest timer: a `timeout` toxic closing, or a toxic reaching its deadline.
    fn next_timer(&self) -> Option<Instant> {
        self.chain
            .iter()
            .filter_map(|t| {
                let closes = self
                    .states
                    .get(&t.id)
                    .filter(|s| s.enabled)
                    .and_then(|s| s.closes_at);
                match (closes, t.deadline) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                }
            })
            .min()
    }

    /// Handles due timers; true when a `timeout` toxic closes the connection.
    fn fire_timers(&mut self, work: &mut Work) -> bool {
        let now = Instant::now();
        let closes = self.chain.iter().any(|t| {
            self.states
                .get(&t.id)
                .is_some_and(|s| s.enabled && s.closes_at.is_some_and(|at| at <= now))
        });
        if closes {
            return true;
        }
        if self.chain.iter().any(|t| t.expired(now)) {
            return self.refresh(work);
        }
        false
    }

    fn step(&mut self, pos: usize, mut piece: Piece) -> Step {
        let toxic = self.chain[pos].clone();
        let now = Instant::now();
        let Some(state) = self.states.get_mut(&toxic.id) else {
            return Step::Next(piece);
        };
        if !state.enabled {
            return Step::Next(piece);
        }
        match toxic.spec.kind {
            ToxicKind::Latency { latency, jitter } => {
                let mut delay = Duration::from_millis(latency);
                if jitter > 0 {
                    // Uniform in [-jitter, +jitter) ms, at µs resolution, fixed per chunk.
                    let span = jitter * 2000;
                    let draw = splitmix(self.jitter_seed ^ piece.seq ^ (toxic.id << 40)) % span;
                    let offset = draw as i64 - (jitter * 1000) as i64;
                    delay = if offset >= 0 {
                        delay + Duration::from_micros(offset as u64)
                    } else {
                        delay.saturating_sub(Duration::from_micros(offset.unsigned_abs()))
                    };
                }
                let due = piece.stamp + delay;
                if due > now {
                    return Step::WaitUntil(due, piece);
                }
                piece.stamp = due;
                Step::Next(piece)
            }
            ToxicKind::Bandwidth { rate } => {
                if rate == 0 {
                    return Step::Next(piece);
                }
                // A piece already paced waits out its due time, then moves on.
                if let Some(at) = piece.not_before {
                    if at > now {
                        return Step::WaitUntil(at, piece);
                    }
                    piece.not_before = None;
                    return Step::Next(piece);
                }
                // Toxiproxy's pacing: rate KB/s is rate bytes per ms; at most 100 ms worth
                // moves at once, each piece due when the previous one's share of time is over.
                let max = (rate * 100).max(1) as usize;
                let rest = (piece.data.len() > max).then(|| {
                    let mut rest = piece.clone();
                    rest.data = piece.data.slice(max..);
                    piece.data = piece.data.slice(..max);
                    rest
                });
                let share = Duration::from_micros(piece.data.len() as u64 * 1000 / rate);
                let start = state.paced_until.filter(|t| *t > now).unwrap_or(now);
                let due = start + share;
                state.paced_until = Some(due);
                piece.not_before = Some(due);
                match rest {
                    Some(rest) => Step::Split(piece, rest),
                    None => Step::WaitUntil(due, piece),
                }
            }
            ToxicKind::SlowClose { .. } => Step::Next(piece),
            ToxicKind::Timeout { timeout } => {
                if timeout > 0 {
                    state.closes_at = Some(now + Duration::from_millis(timeout));
                }
                Step::Drop
            }
            ToxicKind::ResetPeer { timeout } => {
                let at = *state
                    .resets_at
                    .get_or_insert(now + Duration::from_millis(timeout));
                if at > now {
                    Step::WaitUntil(at, piece)
                } else {
                    Step::Reset
                }
            }
            ToxicKind::Slicer {
                average_size,
                size_variation,
                delay,
            } => {
                if let Some(at) = piece.not_before.filter(|at| *at > now) {
                    return Step::WaitUntil(at, piece);
                }
                piece.not_before = None;
                if average_size == 0 {
                    return Step::Next(piece);
                }
                let size = if size_variation > 0 {
                    let lo = average_size - size_variation;
                    self.rng.random_range(lo..=average_size + size_variation)
                } else {
                    average_size
                }
                .max(1) as usize;
                if piece.data.len() <= size {
                    return Step::Next(piece);
                }
                let mut first = piece.clone();
                first.data = piece.data.slice(..size);
                let mut rest = piece;
                rest.data = rest.data.slice(size..);
                rest.not_before = Some(now + Duration::from_micros(delay));
                Step::Slice(first, rest)
            }
            ToxicKind::LimitData { bytes } => {
                let left = bytes.saturating_sub(state.passed);
                if (piece.data.len() as u64) < left {
                    state.passed += piece.data.len() as u64;
                    return Step::Next(piece);
                }
                state.passed = bytes;
                piece.data = piece.data.slice(..left as usize);
                Step::LastThenClose(piece)
            }
            // HTTP toxics never reach a TCP chain (refused when added).
            ToxicKind::HttpAbort { .. } | ToxicKind::HttpDelay { .. } => Step::Next(piece),
        }
    }

    /// The source closed: wait out `slow_close` toxics, then close our side towards the
    /// destination (half-close: the other direction keeps flowing until it ends too).
    async fn source_ended(&mut self) {
        let delay: u64 = self
            .chain
            .iter()
            .filter(|t| self.states.get(&t.id).is_some_and(|s| s.enabled))
            .map(|t| match t.spec.kind {
                ToxicKind::SlowClose { delay } => delay,
                _ => 0,
            })
            .sum();
        if delay > 0 {
            tokio::select! {
                _ = self.shared.cancel.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_millis(delay)) => {}
            }
        }
        let _ = socket2::SockRef::from(&*self.dst).shutdown(Shutdown::Write);
    }
}

async fn sleep_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// SplitMix64: a well-mixed 64-bit value from any input.
fn splitmix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}
