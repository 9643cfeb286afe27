//! Running a [`LoadSpec`]: the open model's dispatcher, the closed model's virtual users, and the
//! collector that turns their samples into totals, a time series, live progress and aborts.
//!
//! Workers record into a few mutex-guarded shards (uncontended in practice: a lock per finished
//! request, held for a histogram increment); once per interval the collector swaps each shard
//! for an empty one and adds what it held to the interval and the totals. Timing in the open
//! model is taken from each request's intended start (`start + offset_i`), so a stalled server
//! shows up as the latency the planned requests really suffered — queueing included — and the
//! latency from the actual send is kept beside it as `http_req_duration_uncorrected`.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use shakedown_model::load::{Check, HttpOptions};
use shakedown_model::{LoadSpec, Scenario};
use std::time::Instant;
use tokio::sync::watch;

use crate::client::{Client, Conns, Outcome};
use crate::samples::{Sample, Samples, Tags};
use crate::schedule::Arrivals;
use crate::series::{Point, Series};
use crate::thresholds::{Verdict, judge};
use crate::{LoadError, Report, StopReason};

/// The collector's tick: series resolution and progress cadence.
const TICK: Duration = Duration::from_secs(1);
/// How often `abortOnFail` thresholds are judged during the run (k6: every 2 s).
const ABORT_EVERY: Duration = Duration::from_secs(2);

/// What the live display is told once per tick.
#[derive(Clone, Debug)]
pub struct Progress {
    /// Time since the start.
    pub elapsed: Duration,
    /// Planned length.
    pub planned: Duration,
    /// Requests finished in the last tick, per second.
    pub rate: f64,
    /// Requests planned and not finished (open) or active VUs (closed).
    pub in_flight: u64,
    /// Requests finished so far.
    pub reqs: u64,
    /// Failed requests so far.
    pub failed: u64,
    /// Dropped so far.
    pub dropped: u64,
    /// P99 of `http_req_duration` so far, ms.
    pub p99_ms: f64,
    /// Whether the schedule has ended and in-flight requests are being waited for.
    pub stopping: bool,
}

/// Receives the run's progress once per tick.
pub type ProgressFn = Box<dyn FnMut(&Progress) + Send>;

/// Options of a run that are not part of the spec.
#[derive(Default)]
pub struct RunOptions {
    /// Called once per tick with the run's progress.
    pub progress: Option<ProgressFn>,
    /// Turns true to stop the run early (Ctrl-C); the summary is still produced.
    pub interrupt: Option<watch::Receiver<bool>>,
    /// Serve the run's metrics in Prometheus's format here while it runs.
    pub metrics: Option<tokio::net::TcpListener>,
    /// Publish the same text here once per tick (for an in-process store to sample).
    pub publish: Option<watch::Sender<Arc<String>>>,
}

struct Shared {
    client: Client,
    tags: Tags,
    checks: Vec<Check>,
    http: HttpOptions,
    shards: Vec<Mutex<Samples>>,
    weights: Vec<u32>,
    total_weight: u32,
    want_body: bool,
    /// Open model: planned and not finished. Closed model: VUs active.
    in_flight: AtomicUsize,
    /// Closed model: VUs the ramp wants now (the `vus` gauge).
    vus: AtomicUsize,
    dropped: AtomicU64,
}

impl Shared {
    fn pick(&self, rng: &mut ChaCha8Rng) -> usize {
        if self.weights.len() == 1 {
            return 0;
        }
        let mut x = rng.random_range(0..self.total_weight);
        for (i, w) in self.weights.iter().enumerate() {
            if x < *w {
                return i;
            }
            x -= w;
        }
        0
    }

    /// Sends one request (its template picked by weight) and records it, timed from
    /// `intended` (the open model's planned start) or else from the send itself.
    async fn one_request(
        &self,
        conns: &mut Conns,
        rng: &mut ChaCha8Rng,
        intended: Option<Instant>,
    ) {
        let template = self.pick(rng);
        let sent = Instant::now();
        let outcome = self.client.send(conns, template, self.want_body).await;
        self.record(conns, template, &outcome, intended.unwrap_or(sent), sent);
    }

    fn record(
        &self,
        conns: &mut Conns,
        template: usize,
        o: &Outcome,
        intended: Instant,
        sent: Instant,
    ) {
        let done = Instant::now();
        let (sent_bytes, received_bytes) = conns.take_bytes();
        let results: Vec<bool> = self.checks.iter().map(|c| passes(c, o)).collect();
        let sample = Sample {
            template,
            status: o.status,
            error: o.error,
            expected: o.error.is_none() && o.status.is_some_and(|s| self.http.expected(s)),
            corrected_us: micros(done - intended),
            uncorrected_us: micros(done - sent),
            checks: &results,
            sent_bytes,
            received_bytes,
        };
        let shard = &self.shards[shard_index() % self.shards.len()];
        shard
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .record(&self.tags, &sample);
    }
}

/// Each worker's own stream for the template choice, so a run with one connection replays.
fn worker_rng(seed: u64, worker: usize) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed ^ (worker as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15))
}

/// The shard of the current thread: workers on one runtime thread share one, so a record never
/// takes a lock whose cache line another core just wrote.
fn shard_index() -> usize {
    use std::cell::Cell;
    use std::sync::atomic::AtomicUsize;
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local!(static SHARD: Cell<Option<usize>> = const { Cell::new(None) });
    SHARD.with(|s| match s.get() {
        Some(i) => i,
        None => {
            let i = NEXT.fetch_add(1, Ordering::Relaxed);
            s.set(Some(i));
            i
        }
    })
}

fn passes(c: &Check, o: &Outcome) -> bool {
    let Some(status) = o.status.filter(|_| o.error.is_none()) else {
        return false;
    };
    let status_ok = c.statuses.is_empty() || c.statuses.contains(&status);
    let body_ok = c.body_contains.as_ref().is_none_or(|needle| {
        o.body.as_ref().is_some_and(|b| {
            b.windows(needle.len().max(1))
                .any(|w| w == needle.as_bytes())
                || needle.is_empty()
        })
    });
    status_ok && body_ok
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// Runs `spec` to the end (or to an abort or interrupt) and reports.
pub async fn run(spec: &LoadSpec, mut opts: RunOptions) -> Result<Report, LoadError> {
    let client = Client::new(&spec.requests, &spec.http).await?;
    let tags = tags_of(spec);
    let workers = match &spec.scenario {
        Scenario::Open { connections, .. } => *connections,
        Scenario::Closed { vus, .. } => vus.peak().ceil() as usize,
    };
    let shard_count = workers.clamp(
        1,
        4 * std::thread::available_parallelism().map_or(2, |n| n.get()),
    );
    let shared = Arc::new(Shared {
        client,
        checks: spec.checks.clone(),
        http: spec.http.clone(),
        shards: (0..shard_count)
            .map(|_| Mutex::new(Samples::new(&tags)))
            .collect(),
        weights: spec.requests.iter().map(|r| r.weight).collect(),
        total_weight: spec.requests.iter().map(|r| r.weight).sum(),
        want_body: spec.checks.iter().any(|c| c.body_contains.is_some()),
        in_flight: AtomicUsize::new(0),
        vus: AtomicUsize::new(0),
        dropped: AtomicU64::new(0),
        tags,
    });

    // `stop` ends the schedule: the end of the plan, an abort, or an interrupt.
    let (stop_tx, stop_rx) = watch::channel(None::<StopReason>);
    let stop_tx = Arc::new(stop_tx);
    let _interrupt = opts.interrupt.take().map(|mut interrupt| {
        let stop_tx = stop_tx.clone();
        AbortOnDrop(tokio::spawn(async move {
            if interrupt.wait_for(|v| *v).await.is_ok() {
                stop_tx.send_if_modified(|r| set_once(r, StopReason::Interrupted));
            }
        }))
    });

    let (exposition, _metrics_server) = match (opts.metrics.take(), opts.publish.take()) {
        (None, None) => (None, None),
        (listener, publish) => {
            let tx = publish.unwrap_or_else(|| watch::channel(Arc::new(String::new())).0);
            // The endpoint lives as long as the run.
            let server = listener
                .map(|l| AbortOnDrop(tokio::spawn(crate::metrics::serve(l, tx.subscribe()))));
            (Some(tx), server)
        }
    };

    // Counters appear at zero before the first request, as a client library's do: `rate` over
    // a series that starts mid-run is extrapolated from wherever a scrape first caught it.
    if let Some(tx) = &exposition {
        let _ = tx.send(Arc::new(crate::metrics::render(
            &Samples::new(&shared.tags),
            &shared.tags,
            0,
        )));
    }
    let start = Instant::now();
    let planned = spec.scenario.duration();
    let (vus_max, driver) = match &spec.scenario {
        Scenario::Open {
            rate,
            connections,
            max_in_flight,
            graceful_stop,
            ..
        } => {
            let driver = tokio::spawn(open_model(
                shared.clone(),
                Arrivals::new(rate),
                *connections,
                *max_in_flight,
                *graceful_stop,
                start,
                spec.seed,
                stop_rx.clone(),
            ));
            (*connections, driver)
        }
        Scenario::Closed {
            vus,
            think_time,
            graceful_stop,
            ..
        } => {
            let driver = tokio::spawn(closed_model(
                shared.clone(),
                vus.clone(),
                *think_time,
                *graceful_stop,
                start,
                spec.seed,
                stop_rx.clone(),
            ));
            (workers, driver)
        }
    };

    let mut collector = Collector {
        shared: shared.clone(),
        total: Samples::new(&shared.tags),
        pending: Samples::new(&shared.tags),
        pending_ticks: 0,
        series: Series::new(TICK.as_secs_f64()),
        vus_max: vus_max as u64,
        closed: matches!(spec.scenario, Scenario::Closed { .. }),
    };
    let mut tick = tokio::time::interval_at((start + TICK).into(), TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_abort_check = start;
    // If this future is dropped (the caller gave up on the run), the load stops with it.
    let mut driver = AbortOnDrop(driver);
    let mut planned_end = Box::pin(tokio::time::sleep_until((start + planned).into()));
    let mut schedule_over = false;
    loop {
        tokio::select! {
            _ = &mut driver.0 => break,
            _ = &mut planned_end, if !schedule_over => {
                schedule_over = true;
                stop_tx.send_if_modified(|r| set_once(r, StopReason::Completed));
            }
            _ = tick.tick() => {
                let now = Instant::now();
                let interval = collector.collect(now - start);
                if let Some(tx) = &exposition {
                    let in_flight = shared.in_flight.load(Ordering::Relaxed) as u64;
                    let _ = tx.send(Arc::new(crate::metrics::render(&collector.total, &shared.tags, in_flight)));
                }
                if now - last_abort_check >= ABORT_EVERY {
                    last_abort_check = now;
                    if let Some(v) = abort_verdict(spec, &collector.total, &shared.tags, now - start) {
                        stop_tx.send_if_modified(|r| set_once(r, StopReason::Threshold(v.metric.clone(), v.source.clone())));
                    }
                }
                if let Some(show) = opts.progress.as_mut() {
                    show(&Progress {
                        elapsed: now - start,
                        planned,
                        rate: interval.http_reqs as f64 / TICK.as_secs_f64(),
                        in_flight: if collector.closed {
                            shared.vus.load(Ordering::Relaxed) as u64
                        } else {
                            shared.in_flight.load(Ordering::Relaxed) as u64
                        },
                        reqs: collector.total.http_reqs,
                        failed: collector.total.failed.trues,
                        dropped: collector.total.dropped,
                        p99_ms: collector.total.duration.percentile_ms(99.0),
                        stopping: stop_rx.borrow().is_some(),
                    });
                }
            }
        }
    }
    let elapsed = start.elapsed();
    collector.collect(elapsed);
    collector.flush_pending(elapsed);
    if let Some(tx) = &exposition {
        let _ = tx.send(Arc::new(crate::metrics::render(
            &collector.total,
            &shared.tags,
            0,
        )));
    }
    let stop = stop_rx.borrow().clone().unwrap_or(StopReason::Completed);
    let verdicts: Vec<Verdict> = spec
        .thresholds
        .iter()
        .map(|t| judge(t, &collector.total, &shared.tags, elapsed))
        .collect();
    Ok(Report {
        samples: collector.total,
        tags: shared.tags.clone(),
        series: collector.series,
        elapsed,
        planned,
        stop,
        verdicts,
        scenario: describe(&spec.scenario),
    })
}

/// A task that must not outlive its owner.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn set_once(slot: &mut Option<StopReason>, reason: StopReason) -> bool {
    if slot.is_some() {
        return false;
    }
    *slot = Some(reason);
    true
}

fn abort_verdict(
    spec: &LoadSpec,
    total: &Samples,
    tags: &Tags,
    elapsed: Duration,
) -> Option<Verdict> {
    spec.thresholds
        .iter()
        .filter(|t| t.abort_on_fail && elapsed >= t.delay_abort_eval)
        .map(|t| judge(t, total, tags, elapsed))
        // No samples yet is not a reason to abort; a crossed bound is.
        .find(|v| !v.ok && v.observed.is_some())
}

/// The tags samples carry, and the sub-metrics thresholds ask for.
pub fn tags_of(spec: &LoadSpec) -> Tags {
    let mut subs = Vec::new();
    for t in &spec.thresholds {
        if !t.metric.tags.is_empty() && !subs.contains(&t.metric) {
            subs.push(t.metric.clone());
        }
    }
    Tags {
        names: spec.requests.iter().map(|r| r.name.clone()).collect(),
        methods: spec.requests.iter().map(|r| r.method.to_string()).collect(),
        checks: spec.checks.iter().map(|c| c.name.clone()).collect(),
        subs,
    }
}

/// One line describing the scenario, for the summary.
pub fn describe(s: &Scenario) -> String {
    match s {
        Scenario::Open {
            rate,
            connections,
            max_in_flight,
            executor,
            ..
        } => {
            let r = if rate.stages.iter().all(|(_, t)| *t == rate.start) {
                format!("{:.2} requests/s", rate.start)
            } else {
                let targets: Vec<String> = rate
                    .stages
                    .iter()
                    .map(|(d, t)| {
                        format!(
                            "{t:.2}/s over {}",
                            shakedown_model::duration::format_duration(*d)
                        )
                    })
                    .collect();
                format!("from {:.2}/s: {}", rate.start, targets.join(", "))
            };
            format!(
                "{executor}, {r} for {} ({connections} connections, at most {max_in_flight} in flight)",
                shakedown_model::duration::format_duration(rate.duration())
            )
        }
        Scenario::Closed {
            vus,
            think_time,
            executor,
            ..
        } => format!(
            "{executor}, up to {} VUs for {}, think time {}",
            vus.peak(),
            shakedown_model::duration::format_duration(vus.duration()),
            shakedown_model::duration::format_duration(*think_time)
        ),
    }
}

struct Collector {
    shared: Arc<Shared>,
    total: Samples,
    /// Ticks gathered for the next series point (more than one once the series coarsened).
    pending: Samples,
    pending_ticks: u64,
    series: Series,
    vus_max: u64,
    closed: bool,
}

impl Collector {
    /// Moves what the shards hold into the totals; returns the tick's samples.
    fn collect(&mut self, elapsed: Duration) -> Samples {
        let tags = &self.shared.tags;
        let mut tick = Samples::new(tags);
        for shard in &self.shared.shards {
            let taken = std::mem::replace(
                &mut *shard.lock().unwrap_or_else(|e| e.into_inner()),
                Samples::new(tags),
            );
            tick.add(&taken);
        }
        let dropped = self.shared.dropped.swap(0, Ordering::Relaxed);
        tick.dropped += dropped;
        self.total.add(&tick);
        self.total.vus.set(self.vus_now());
        self.total.vus_max.set(self.vus_max);
        self.pending.add(&tick);
        self.pending_ticks += 1;
        if self.pending_ticks >= self.series.ticks_per_point(TICK.as_secs_f64()) {
            self.flush_pending(elapsed);
        }
        tick
    }

    /// Closed model: the VUs the ramp wants; open model: connections busy.
    fn vus_now(&self) -> u64 {
        if self.closed {
            self.shared.vus.load(Ordering::Relaxed) as u64
        } else {
            (self.shared.in_flight.load(Ordering::Relaxed) as u64).min(self.vus_max)
        }
    }

    fn flush_pending(&mut self, elapsed: Duration) {
        if self.pending_ticks == 0 {
            return;
        }
        let in_flight = if self.closed {
            self.shared.vus.load(Ordering::Relaxed) as u64
        } else {
            self.shared.in_flight.load(Ordering::Relaxed) as u64
        };
        let p = Point::from_samples(elapsed.as_secs_f64(), &self.pending, in_flight);
        self.series.push(p);
        self.pending = Samples::new(&self.shared.tags);
        self.pending_ticks = 0;
    }
}

/// The threads workers run on: one current-thread runtime per core, each worker pinned to one.
/// A worker's request and its connection's I/O then never hop between threads (the
/// multi-thread scheduler would steal and wake across cores on every request).
struct Pool {
    handles: Vec<tokio::runtime::Handle>,
    stops: Vec<tokio::sync::oneshot::Sender<()>>,
}

impl Pool {
    fn new() -> std::io::Result<Self> {
        let n = std::thread::available_parallelism().map_or(2, |n| n.get());
        let (mut handles, mut stops) = (Vec::new(), Vec::new());
        for i in 0..n {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            handles.push(rt.handle().clone());
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            stops.push(stop);
            std::thread::Builder::new()
                .name(format!("shakedown-load-{i}"))
                .spawn(move || {
                    let _ = rt.block_on(stopped);
                })?;
        }
        Ok(Self { handles, stops })
    }

    fn handle(&self, worker: usize) -> &tokio::runtime::Handle {
        &self.handles[worker % self.handles.len()]
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        // Each thread drops its runtime, cancelling whatever is left on it.
        for stop in self.stops.drain(..) {
            let _ = stop.send(());
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn open_model(
    shared: Arc<Shared>,
    arrivals: Arrivals,
    connections: usize,
    max_in_flight: usize,
    graceful_stop: Duration,
    start: Instant,
    seed: u64,
    mut stop: watch::Receiver<Option<StopReason>>,
) {
    let (tx, rx) = async_channel::unbounded::<Instant>();
    let Ok(pool) = Pool::new() else { return };
    let mut workers = tokio::task::JoinSet::new();
    for w in 0..connections {
        let rx = rx.clone();
        let shared = shared.clone();
        let worker = async move {
            let mut conns = Conns::default();
            let mut rng = worker_rng(seed, w);
            while let Ok(intended) = rx.recv().await {
                shared
                    .one_request(&mut conns, &mut rng, Some(intended))
                    .await;
                shared.in_flight.fetch_sub(1, Ordering::Relaxed);
            }
        };
        workers.spawn_on(worker, pool.handle(w));
    }
    drop(rx);
    // The timetable runs on its own thread: a tokio timer rounds every wake-up to the next
    // millisecond, which would add up to a millisecond of the tool's own lateness to every
    // intended start; a thread's sleep is accurate to tens of microseconds.
    let halt = Arc::new(AtomicBool::new(false));
    let dispatcher = {
        let shared = shared.clone();
        let halt = halt.clone();
        std::thread::Builder::new()
            .name("shakedown-schedule".into())
            .spawn(move || dispatch(&shared, arrivals, max_in_flight, start, &halt, &tx))
    };
    let _ = stop.wait_for(Option::is_some).await;
    halt.store(true, Ordering::Relaxed);
    if let Ok(handle) = dispatcher {
        // It notices `halt` within one slice of its sleep.
        let _ = tokio::task::spawn_blocking(move || handle.join()).await;
    }
    // Nothing more is planned: let the queue drain, within the grace period.
    let drained = tokio::time::timeout(graceful_stop, async {
        while workers.join_next().await.is_some() {}
    });
    if drained.await.is_err() {
        workers.abort_all();
    }
}

/// Sends each arrival's intended start to the connections at that time, or drops it when too
/// many are already waiting.
fn dispatch(
    shared: &Shared,
    arrivals: Arrivals,
    max_in_flight: usize,
    start: Instant,
    halt: &AtomicBool,
    tx: &async_channel::Sender<Instant>,
) {
    const SLICE: Duration = Duration::from_millis(20);
    for offset in arrivals {
        let at = start + offset;
        loop {
            if halt.load(Ordering::Relaxed) {
                return;
            }
            let now = Instant::now();
            if at <= now {
                break;
            }
            std::thread::sleep((at - now).min(SLICE));
        }
        if shared.in_flight.load(Ordering::Relaxed) >= max_in_flight {
            shared.dropped.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        shared.in_flight.fetch_add(1, Ordering::Relaxed);
        if tx.send_blocking(at).is_err() {
            return;
        }
    }
}

async fn closed_model(
    shared: Arc<Shared>,
    vus: shakedown_model::Profile,
    think: Duration,
    graceful_stop: Duration,
    start: Instant,
    seed: u64,
    stop: watch::Receiver<Option<StopReason>>,
) {
    let peak = vus.peak().ceil() as usize;
    let (target_tx, target_rx) = watch::channel(vus.start.floor() as usize);
    shared.vus.store(*target_rx.borrow(), Ordering::Relaxed);
    let Ok(pool) = Pool::new() else { return };
    let mut workers = tokio::task::JoinSet::new();
    for w in 0..peak {
        let shared = shared.clone();
        let mut target = target_rx.clone();
        let mut stop = stop.clone();
        let worker = async move {
            let mut conns = Conns::default();
            let mut rng = worker_rng(seed, w);
            loop {
                // Parked while the ramp wants fewer users than this one's index.
                tokio::select! {
                    r = target.wait_for(|t| w < *t) => if r.is_err() { return },
                    _ = stop.wait_for(Option::is_some) => return,
                }
                if stop.borrow().is_some() {
                    return;
                }
                // No shared in-flight count here: an atomic every request on every core costs
                // more than the progress line is worth; `vus` tells how many are active.
                shared.one_request(&mut conns, &mut rng, None).await;
                if !think.is_zero() {
                    tokio::select! {
                        _ = tokio::time::sleep(think) => {}
                        _ = stop.wait_for(Option::is_some) => return,
                    }
                }
            }
        };
        workers.spawn_on(worker, pool.handle(w));
    }
    let ramping = vus.stages.iter().any(|(_, t)| *t != vus.start);
    let mut stop_wait = stop.clone();
    if ramping {
        let mut every = tokio::time::interval(Duration::from_millis(100));
        loop {
            tokio::select! {
                _ = every.tick() => {
                    let want = vus.value_at(start.elapsed()).floor().max(0.0) as usize;
                    shared.vus.store(want.min(peak), Ordering::Relaxed);
                    target_tx.send_if_modified(|t| std::mem::replace(t, want) != want);
                }
                _ = stop_wait.wait_for(Option::is_some) => break,
            }
        }
    } else {
        let _ = stop_wait.wait_for(Option::is_some).await;
    }
    let drained = tokio::time::timeout(graceful_stop, async {
        while workers.join_next().await.is_some() {}
    });
    if drained.await.is_err() {
        workers.abort_all();
    }
}
