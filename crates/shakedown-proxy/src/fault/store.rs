//! The set of active faults: changed by the control plane, read by the data path.
//!
//! Writers (the admin API, a config reload, the deadline reaper) serialise on a mutex and publish
//! a new immutable [`FaultSet`] with `send_replace`; the fault layer only ever `borrow()`s the
//! latest set, so no lock is held across a request. Every change bumps the shared config version
//! shown by `/config_dump`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{Value, json};
use shakedown_model::{HttpFault, Lifetime};
use tokio::sync::{Notify, watch};
use tokio::time::Instant;

/// Where a fault came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// The config file; a reload replaces these.
    File,
    /// The control API; reloads leave these alone.
    Api,
}

impl Origin {
    fn name(self) -> &'static str {
        match self {
            Origin::File => "file",
            Origin::Api => "api",
        }
    }
}

/// A fault as the data path sees it.
#[derive(Debug)]
pub struct ActiveFault {
    /// What to do.
    pub spec: HttpFault,
    /// Where it came from.
    pub origin: Origin,
    /// When it was applied (wall clock, for display).
    pub applied_at: SystemTime,
    /// When the proxy removes it (monotonic clock), and the same in wall-clock time.
    pub deadline: Option<(Instant, SystemTime)>,
    /// Requests currently affected by this fault (for `max_active_faults`).
    pub active: AtomicU64,
    rng: Mutex<ChaCha8Rng>,
}

impl ActiveFault {
    fn new(
        spec: HttpFault,
        origin: Origin,
        seed: u64,
        deadline: Option<(Instant, SystemTime)>,
    ) -> Self {
        // Each fault draws from its own stream, derived from the run's seed and its name, so
        // adding one fault does not change the decisions of another.
        let rng = ChaCha8Rng::seed_from_u64(seed ^ fnv1a(spec.name.as_bytes()));
        Self {
            spec,
            origin,
            applied_at: SystemTime::now(),
            deadline,
            active: AtomicU64::new(0),
            rng: Mutex::new(rng),
        }
    }

    /// A uniform random draw for one decision.
    pub fn draw(&self) -> u64 {
        self.rng
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .next_u64()
    }

    /// Whether the deadline has passed.
    pub fn expired(&self, now: Instant) -> bool {
        self.deadline.is_some_and(|(d, _)| now >= d)
    }

    /// Whether the fault applies to a listener.
    pub fn applies_to_listener(&self, listener: &str) -> bool {
        self.spec.listeners.is_empty() || self.spec.listeners.iter().any(|l| l == listener)
    }

    /// The fault as shown by the control API and `/config_dump`.
    pub fn to_json(&self) -> Value {
        json!({
            "name": self.spec.name,
            "origin": self.origin.name(),
            "form": self.spec.form.name(),
            "listeners": self.spec.listeners,
            "applied_at": humantime::format_rfc3339_millis(self.applied_at).to_string(),
            "expires_at": self.deadline.map(|(_, wall)| humantime::format_rfc3339_millis(wall).to_string()),
            "active_requests": self.active.load(Ordering::Relaxed),
            "http_fault": self.spec.to_envoy_json(),
        })
    }
}

/// An immutable snapshot of the active faults, in the order they apply.
#[derive(Debug, Default)]
pub struct FaultSet {
    /// Config version when this set was published.
    pub version: u64,
    /// Faults, applied in this order (like a chain of Envoy fault filters).
    pub faults: Vec<Arc<ActiveFault>>,
}

/// Errors of fault changes.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum StoreError {
    /// `POST` of a name that exists.
    #[error("a fault named `{0}` already exists")]
    Exists(String),
    /// Unknown name.
    #[error("no fault named `{0}`")]
    NotFound(String),
    /// A deadline already passed.
    #[error("fault `{0}` expires in the past")]
    AlreadyExpired(String),
}

#[derive(Debug, Default)]
struct State {
    faults: Vec<Arc<ActiveFault>>,
    /// File faults that expired, by name and behaviour, so a reload does not revive them.
    expired_file_faults: Vec<HttpFault>,
}

/// The writer side of the active faults.
#[derive(Debug)]
pub struct FaultStore {
    state: Mutex<State>,
    tx: watch::Sender<Arc<FaultSet>>,
    version: Arc<AtomicU64>,
    seed: u64,
    wake_reaper: Notify,
}

impl FaultStore {
    /// An empty store. `version` is the proxy-wide config version, shared with routing changes.
    pub fn new(seed: u64, version: Arc<AtomicU64>) -> Arc<Self> {
        let (tx, _) = watch::channel(Arc::new(FaultSet::default()));
        Arc::new(Self {
            state: Mutex::default(),
            tx,
            version,
            seed,
            wake_reaper: Notify::new(),
        })
    }

    /// A receiver for the data path.
    pub fn subscribe(&self) -> watch::Receiver<Arc<FaultSet>> {
        self.tx.subscribe()
    }

    /// The current set.
    pub fn current(&self) -> Arc<FaultSet> {
        self.tx.borrow().clone()
    }

    /// Adds a fault; fails if the name exists.
    pub fn create(&self, fault: HttpFault) -> Result<u64, StoreError> {
        let mut st = self.lock();
        if st.faults.iter().any(|f| f.spec.name == fault.name) {
            return Err(StoreError::Exists(fault.name));
        }
        let active = self.activate(fault, Origin::Api)?;
        st.faults.push(active);
        Ok(self.publish(&st))
    }

    /// Adds or replaces a fault; returns whether it was created, and the new version.
    pub fn put(&self, fault: HttpFault) -> Result<(bool, u64), StoreError> {
        let mut st = self.lock();
        let active = self.activate(fault, Origin::Api)?;
        let created = match st
            .faults
            .iter()
            .position(|f| f.spec.name == active.spec.name)
        {
            Some(i) => {
                st.faults[i] = active;
                false
            }
            None => {
                st.faults.push(active);
                true
            }
        };
        Ok((created, self.publish(&st)))
    }

    /// Removes a fault by name.
    pub fn remove(&self, name: &str) -> Result<u64, StoreError> {
        let mut st = self.lock();
        let before = st.faults.len();
        st.faults.retain(|f| f.spec.name != name);
        if st.faults.len() == before {
            return Err(StoreError::NotFound(name.to_owned()));
        }
        Ok(self.publish(&st))
    }

    /// Removes every fault; returns the names removed and the new version.
    pub fn clear(&self) -> (Vec<String>, u64) {
        let mut st = self.lock();
        let names = st.faults.drain(..).map(|f| f.spec.name.clone()).collect();
        (names, self.publish(&st))
    }

    /// Replaces the faults that came from the config file. A file fault whose behaviour did not
    /// change keeps its deadline and counters; one that already expired is not revived.
    pub fn replace_file_faults(&self, faults: Vec<HttpFault>) -> u64 {
        let mut st = self.lock();
        let mut next: Vec<Arc<ActiveFault>> = Vec::new();
        for fault in faults {
            if st.expired_file_faults.iter().any(|e| {
                e.name == fault.name && e.same_behaviour(&fault) && e.lifetime == fault.lifetime
            }) {
                tracing::info!(fault = %fault.name, "not reviving a file fault that already expired");
                continue;
            }
            let kept = st.faults.iter().find(|f| {
                f.origin == Origin::File
                    && f.spec.name == fault.name
                    && f.spec.same_behaviour(&fault)
                    && f.spec.lifetime == fault.lifetime
            });
            match kept {
                Some(f) => next.push(f.clone()),
                None => match self.activate(fault, Origin::File) {
                    Ok(f) => next.push(f),
                    Err(e) => tracing::warn!("{e}; not applied"),
                },
            }
        }
        // API faults stay, unless a file fault now uses the same name (the file wins).
        for f in st.faults.iter().filter(|f| f.origin == Origin::Api) {
            if !next.iter().any(|n| n.spec.name == f.spec.name) {
                next.push(f.clone());
            }
        }
        st.faults = next;
        self.publish(&st)
    }

    /// Removes every fault whose deadline is at or before `now`; returns their names.
    pub fn reap(&self, now: Instant) -> Vec<String> {
        let mut st = self.lock();
        let (gone, kept): (Vec<_>, Vec<_>) = st.faults.drain(..).partition(|f| f.expired(now));
        st.faults = kept;
        if gone.is_empty() {
            return Vec::new();
        }
        for f in &gone {
            tracing::info!(fault = %f.spec.name, "fault reached its deadline and was removed");
            if f.origin == Origin::File {
                st.expired_file_faults.push(f.spec.clone());
            }
        }
        self.publish(&st);
        gone.iter().map(|f| f.spec.name.clone()).collect()
    }

    /// The earliest deadline among active faults.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.lock()
            .faults
            .iter()
            .filter_map(|f| f.deadline.map(|(d, _)| d))
            .min()
    }

    /// Removes faults at their deadlines until `stop` fires. The data path also ignores an
    /// expired fault on its own, so a late reaper never extends a fault's life.
    pub async fn run_reaper(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        loop {
            let next = self.next_deadline();
            tokio::select! {
                _ = sleep_until(next) => { self.reap(Instant::now()); }
                _ = self.wake_reaper.notified() => {}
                _ = stop.changed() => return,
            }
        }
    }

    /// Bumps the version without changing faults (a routing change).
    pub fn bump_version(&self) -> u64 {
        let st = self.lock();
        self.publish(&st)
    }

    /// The current config version.
    pub fn version(&self) -> u64 {
        self.version.load(Ordering::SeqCst)
    }

    fn activate(&self, fault: HttpFault, origin: Origin) -> Result<Arc<ActiveFault>, StoreError> {
        let now = Instant::now();
        let wall = SystemTime::now();
        let deadline = match fault.lifetime {
            Lifetime::Unlimited => None,
            Lifetime::Ttl(d) => Some((now + d, wall + d)),
            Lifetime::Until(at) => match at.duration_since(wall) {
                Ok(left) if left > Duration::ZERO => Some((now + left, at)),
                _ => return Err(StoreError::AlreadyExpired(fault.name)),
            },
        };
        Ok(Arc::new(ActiveFault::new(
            fault, origin, self.seed, deadline,
        )))
    }

    fn publish(&self, st: &State) -> u64 {
        let version = self.version.fetch_add(1, Ordering::SeqCst) + 1;
        self.tx.send_replace(Arc::new(FaultSet {
            version,
            faults: st.faults.clone(),
        }));
        self.wake_reaper.notify_one();
        version
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// FNV-1a: a stable hash (unlike `DefaultHasher`) so seeds replay across builds.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use shakedown_model::parse_fault;

    fn fault(text: &str) -> HttpFault {
        parse_fault("t", text, None).unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn faults_die_at_their_deadline_without_anyone_calling_back() {
        let store = FaultStore::new(1, Arc::default());
        let (stop_tx, stop_rx) = watch::channel(false);
        tokio::spawn(store.clone().run_reaper(stop_rx));
        store
            .create(fault("name: short\nttl: 30s\nabort: {http_status: 503}\n"))
            .unwrap();
        store
            .create(fault("name: forever\nabort: {http_status: 503}\n"))
            .unwrap();
        let v = store.version();
        tokio::time::sleep(Duration::from_secs(29)).await;
        assert_eq!(store.current().faults.len(), 2);
        tokio::time::sleep(Duration::from_secs(2)).await;
        let set = store.current();
        assert_eq!(
            set.faults
                .iter()
                .map(|f| f.spec.name.as_str())
                .collect::<Vec<_>>(),
            ["forever"]
        );
        assert!(set.version > v, "removal bumps the version");
        let _ = stop_tx.send(true);
    }

    #[tokio::test(start_paused = true)]
    async fn expired_faults_are_inert_even_before_the_reaper_runs() {
        let store = FaultStore::new(1, Arc::default());
        store
            .create(fault("name: short\nttl: 1s\nabort: {http_status: 503}\n"))
            .unwrap();
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(store.current().faults[0].expired(Instant::now()));
    }

    #[test]
    fn create_put_remove() {
        let store = FaultStore::new(1, Arc::default());
        let v1 = store
            .create(fault("name: a\nabort: {http_status: 503}\n"))
            .unwrap();
        assert_eq!(
            store.create(fault("name: a\nabort: {http_status: 500}\n")),
            Err(StoreError::Exists("a".into()))
        );
        let (created, v2) = store
            .put(fault("name: a\nabort: {http_status: 500}\n"))
            .unwrap();
        assert!(!created && v2 > v1);
        assert_eq!(store.remove("b"), Err(StoreError::NotFound("b".into())));
        assert!(store.remove("a").unwrap() > v2);
        assert!(store.current().faults.is_empty());
    }

    #[test]
    fn reload_keeps_api_faults_and_unchanged_file_faults() {
        let store = FaultStore::new(1, Arc::default());
        store.replace_file_faults(vec![fault("name: f\nabort: {http_status: 503}\n")]);
        store.current().faults[0].active.store(7, Ordering::Relaxed);
        store
            .create(fault("name: api\nabort: {http_status: 500}\n"))
            .unwrap();
        store.replace_file_faults(vec![fault("name: f\nabort: {http_status: 503}\n")]);
        let set = store.current();
        assert_eq!(set.faults.len(), 2);
        assert_eq!(
            set.faults[0].active.load(Ordering::Relaxed),
            7,
            "unchanged file fault kept as is"
        );
        store.replace_file_faults(vec![]);
        assert_eq!(
            store
                .current()
                .faults
                .iter()
                .map(|f| f.spec.name.as_str())
                .collect::<Vec<_>>(),
            ["api"]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_expired_file_fault_is_not_revived_by_a_reload() {
        let store = FaultStore::new(1, Arc::default());
        let f = || fault("name: f\nttl: 5s\nabort: {http_status: 503}\n");
        store.replace_file_faults(vec![f()]);
        tokio::time::advance(Duration::from_secs(6)).await;
        store.reap(Instant::now());
        store.replace_file_faults(vec![f()]);
        assert!(store.current().faults.is_empty());
    }

    #[test]
    fn past_deadlines_are_refused() {
        let store = FaultStore::new(1, Arc::default());
        let err = store.create(fault(
            "name: old\nexpires_at: 2001-01-01T00:00:00Z\nabort: {http_status: 503}\n",
        ));
        assert_eq!(err, Err(StoreError::AlreadyExpired("old".into())));
    }
}
