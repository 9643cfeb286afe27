//! TCP proxies with Toxiproxy's toxics.
//!
//! [`TcpProxies`] holds the named proxies. Every change — create, update, enable, disable,
//! delete, add/update/remove a toxic, reset — is made under one short `std` mutex that never
//! waits on the data path: toxics are published to the proxy's connections as an immutable
//! [`ToxicSet`] on a `watch` channel, and each connection picks the new set up between two
//! chunks ([`link`]). A down proxy (`enabled: false`) drops its listener and cancels its
//! connections through a [`CancellationToken`].
//!
//! Toxics with a deadline are removed by a timer task per toxic; the data path also ignores an
//! expired toxic on its own, so a late timer never extends a fault.

pub mod link;
#[cfg(target_os = "linux")]
mod splice;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime};

use serde_json::{Map, Value, json};
use shakedown_model::fault::Lifetime;
use shakedown_model::toxic::{MAX_TTL, TcpProxySpec};
use shakedown_model::{Problems, Toxic};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::metrics::{Counter, Gauge, Registry};

/// Why a TCP proxy or toxic operation was refused; each maps to Toxiproxy's status and message.
#[derive(Debug, thiserror::Error)]
pub enum TcpError {
    /// No proxy of that name.
    #[error("proxy not found")]
    ProxyNotFound,
    /// No toxic of that name on the proxy.
    #[error("toxic not found")]
    ToxicNotFound,
    /// The proxy name is taken.
    #[error("proxy already exists")]
    ProxyExists,
    /// The toxic name is taken on this proxy.
    #[error("toxic already exists")]
    ToxicExists,
    /// The body or a field is invalid.
    #[error("{0}")]
    Invalid(String),
    /// The listen address could not be bound.
    #[error("cannot listen on {address}: {source}")]
    Listen {
        /// The address.
        address: String,
        /// Why.
        source: std::io::Error,
    },
}

/// A toxic as it runs: its spec, a stable id (kept across updates, so connections keep its
/// per-connection state), and its deadline.
#[derive(Debug)]
pub struct ActiveToxic {
    /// Unique for the process; an update keeps it, a re-add gets a new one.
    pub id: u64,
    /// What it does.
    pub spec: Toxic,
    /// Monotonic deadline, if it has one.
    pub deadline: Option<Instant>,
    /// Wall-clock deadline, for display.
    pub expires_at: Option<SystemTime>,
    /// Connections it was applied to (after the toxicity draw).
    pub applied: Counter,
}

impl ActiveToxic {
    /// Whether it is past its deadline.
    pub fn expired(&self, now: Instant) -> bool {
        self.deadline.is_some_and(|d| d <= now)
    }

    /// Toxiproxy's JSON, plus `expires_at` when it has a deadline.
    pub fn to_json(&self) -> Value {
        let mut v = self.spec.to_json();
        if let Some(obj) = v.as_object_mut() {
            obj.remove("ttl");
            if let Some(at) = self.expires_at {
                obj.insert(
                    "expires_at".into(),
                    humantime::format_rfc3339_millis(at).to_string().into(),
                );
            }
        }
        v
    }
}

/// The toxics of one proxy, in chain order (new toxics go last, as in Toxiproxy).
#[derive(Debug, Default)]
pub struct ToxicSet {
    /// In order.
    pub toxics: Vec<Arc<ActiveToxic>>,
}

/// Per-proxy counters.
#[derive(Debug)]
pub(crate) struct TcpStats {
    pub(crate) connections: Counter,
    pub(crate) active: Gauge,
    pub(crate) connect_failures: Counter,
    /// Toxiproxy's `received_bytes` / `sent_bytes`, upstream then downstream.
    pub(crate) received: [Counter; 2],
    pub(crate) sent: [Counter; 2],
}

impl TcpStats {
    /// Counters in no registry, for a proxy that has not listened yet.
    fn detached() -> Self {
        TcpStats {
            connections: Counter::default(),
            active: Gauge::default(),
            connect_failures: Counter::default(),
            received: Default::default(),
            sent: Default::default(),
        }
    }

    fn new(r: &Registry, name: &str, listen: &str, upstream: &str) -> Self {
        let p: &[(&str, &str)] = &[("proxy", name)];
        let bytes = |metric: &'static str, help: &'static str, dir: &str| {
            r.counter(
                metric,
                help,
                &[
                    ("direction", dir),
                    ("listener", listen),
                    ("proxy", name),
                    ("upstream", upstream),
                ],
            )
        };
        const RECV: &str = "Bytes read from the source of a direction (Toxiproxy's name).";
        const SENT: &str = "Bytes written to the destination of a direction (Toxiproxy's name).";
        TcpStats {
            connections: r.counter(
                "shakedown_tcp_connections_total",
                "Connections accepted by a TCP proxy.",
                p,
            ),
            active: r.gauge(
                "shakedown_tcp_connections_active",
                "Connections open through a TCP proxy.",
                p,
            ),
            connect_failures: r.counter(
                "shakedown_tcp_upstream_connect_failures_total",
                "Connections closed because the upstream could not be reached.",
                p,
            ),
            received: [
                bytes("toxiproxy_proxy_received_bytes_total", RECV, "upstream"),
                bytes("toxiproxy_proxy_received_bytes_total", RECV, "downstream"),
            ],
            sent: [
                bytes("toxiproxy_proxy_sent_bytes_total", SENT, "upstream"),
                bytes("toxiproxy_proxy_sent_bytes_total", SENT, "downstream"),
            ],
        }
    }
}

struct Entry {
    name: String,
    /// As configured until the first bind, then the bound address (so port 0 stays put).
    listen: String,
    upstream: String,
    enabled: bool,
    toxics: watch::Sender<Arc<ToxicSet>>,
    running: Option<Running>,
    stats: Arc<TcpStats>,
}

struct Running {
    bound: SocketAddr,
    cancel: CancellationToken,
    listener: link::ListenerSlot,
}

impl Entry {
    fn to_json(&self) -> Value {
        json!({
            "name": self.name,
            "listen": self.listen,
            "upstream": self.upstream,
            "enabled": self.enabled,
            "toxics": self.toxics.borrow().toxics.iter().map(|t| t.to_json()).collect::<Vec<_>>(),
        })
    }
}

/// Every TCP proxy of a process.
pub struct TcpProxies {
    seed: u64,
    registry: Arc<Registry>,
    proxies: Mutex<BTreeMap<String, Entry>>,
    ids: AtomicU64,
    me: Weak<TcpProxies>,
}

impl std::fmt::Debug for TcpProxies {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcpProxies")
            .field("proxies", &self.names())
            .finish()
    }
}

impl TcpProxies {
    /// An empty set; connection and toxicity draws derive from `seed`.
    pub fn new(seed: u64, registry: Arc<Registry>) -> Arc<Self> {
        Arc::new_cyclic(|me| TcpProxies {
            seed,
            registry,
            proxies: Mutex::default(),
            ids: AtomicU64::new(1),
            me: me.clone(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Entry>> {
        self.proxies.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Names of the proxies.
    pub fn names(&self) -> Vec<String> {
        self.lock().keys().cloned().collect()
    }

    /// Whether a proxy of this name exists.
    pub fn contains(&self, name: &str) -> bool {
        self.lock().contains_key(name)
    }

    /// The bound address of a running proxy.
    pub fn listen_addr(&self, name: &str) -> Option<SocketAddr> {
        self.lock()
            .get(name)
            .and_then(|e| e.running.as_ref().map(|r| r.bound))
    }

    /// Every proxy, as `GET /proxies` shows it (name → proxy with toxics).
    pub fn list(&self) -> Map<String, Value> {
        self.lock()
            .iter()
            .map(|(k, e)| (k.clone(), e.to_json()))
            .collect()
    }

    /// One proxy's JSON.
    pub fn get(&self, name: &str) -> Result<Value, TcpError> {
        self.lock()
            .get(name)
            .map(Entry::to_json)
            .ok_or(TcpError::ProxyNotFound)
    }

    /// Creates a proxy (listening unless disabled) with the spec's toxics.
    pub fn create(&self, spec: TcpProxySpec) -> Result<Value, TcpError> {
        let mut proxies = self.lock();
        if proxies.contains_key(&spec.name) {
            return Err(TcpError::ProxyExists);
        }
        // Registered when it first listens (labelled with the bound address).
        let stats = Arc::new(TcpStats::detached());
        let (toxics, _) = watch::channel(Arc::new(ToxicSet::default()));
        let mut entry = Entry {
            name: spec.name.clone(),
            listen: spec.listen.clone(),
            upstream: spec.upstream.clone(),
            enabled: spec.enabled,
            toxics,
            running: None,
            stats,
        };
        if spec.enabled {
            self.start(&mut entry)?;
        }
        for t in spec.toxics {
            self.add_locked(&mut entry, t)?;
        }
        let json = entry.to_json();
        proxies.insert(spec.name, entry);
        Ok(json)
    }

    /// `/populate`: creates each proxy, replaces one whose listen or upstream differ, keeps
    /// identical ones. All specs are validated by the caller first; a bind failure stops here
    /// with the proxies before it in place (as Toxiproxy).
    pub fn populate(&self, specs: Vec<TcpProxySpec>) -> Result<Vec<Value>, TcpError> {
        let mut out = Vec::new();
        for spec in specs {
            let same = {
                let proxies = self.lock();
                proxies
                    .get(&spec.name)
                    .map(|e| e.listen == spec.listen && e.upstream == spec.upstream)
            };
            match same {
                Some(true) => {
                    let enabled = spec.enabled;
                    out.push(self.update(&spec.name, None, None, Some(enabled))?);
                }
                Some(false) => {
                    self.delete(&spec.name)?;
                    out.push(self.create(TcpProxySpec {
                        toxics: Vec::new(),
                        ..spec
                    })?);
                }
                None => out.push(self.create(TcpProxySpec {
                    toxics: Vec::new(),
                    ..spec
                })?),
            }
        }
        Ok(out)
    }

    /// Changes listen, upstream or enabled; changing an address restarts the proxy (its
    /// connections are cut, as in Toxiproxy).
    pub fn update(
        &self,
        name: &str,
        listen: Option<String>,
        upstream: Option<String>,
        enabled: Option<bool>,
    ) -> Result<Value, TcpError> {
        let mut problems = Problems::default();
        if let Some(l) = &listen {
            shakedown_model::toxic::check_host_port(l, "listen", &mut problems);
        }
        if let Some(u) = &upstream {
            shakedown_model::toxic::check_host_port(u, "upstream", &mut problems);
        }
        if let Some(p) = problems.into_vec().into_iter().next() {
            return Err(TcpError::Invalid(format!("{}: {}", p.path, p.message)));
        }
        let mut proxies = self.lock();
        let entry = proxies.get_mut(name).ok_or(TcpError::ProxyNotFound)?;
        let moved = listen.as_ref().is_some_and(|l| *l != entry.listen)
            || upstream.as_ref().is_some_and(|u| *u != entry.upstream);
        let want = enabled.unwrap_or(entry.enabled);
        let was_running = entry.running.is_some();
        let before = (entry.listen.clone(), entry.upstream.clone());
        if moved || !want {
            Self::stop(entry);
        }
        if let Some(l) = listen {
            entry.listen = l;
        }
        if let Some(u) = upstream {
            entry.upstream = u;
        }
        if want
            && entry.running.is_none()
            && let Err(e) = self.start(entry)
        {
            // A refused change changes nothing: back to the old addresses, listening again if
            // it was.
            (entry.listen, entry.upstream) = before;
            if was_running && let Err(again) = self.start(entry) {
                tracing::error!(proxy = %entry.name, "could not listen again: {again}");
            }
            return Err(e);
        }
        entry.enabled = want;
        Ok(entry.to_json())
    }

    /// Stops and removes a proxy, cutting its connections.
    pub fn delete(&self, name: &str) -> Result<(), TcpError> {
        let mut entry = self.lock().remove(name).ok_or(TcpError::ProxyNotFound)?;
        Self::stop(&mut entry);
        Ok(())
    }

    /// Every proxy enabled, every toxic removed (`POST /reset`). Returns the first failure to
    /// listen again, after trying every proxy.
    pub fn reset(&self) -> Result<(), TcpError> {
        let mut first = None;
        for entry in self.lock().values_mut() {
            let before = entry.toxics.borrow().toxics.clone();
            entry.toxics.send_replace(Arc::new(ToxicSet::default()));
            drop(before);
            if entry.running.is_none() {
                match self.start(entry) {
                    Ok(()) => entry.enabled = true,
                    Err(e) => {
                        first.get_or_insert(e);
                    }
                }
            }
        }
        first.map_or(Ok(()), Err)
    }

    /// Stops every proxy (shutdown).
    pub fn stop_all(&self) {
        for entry in self.lock().values_mut() {
            Self::stop(entry);
        }
    }

    /// A proxy's toxics.
    pub fn toxics(&self, proxy: &str) -> Result<Vec<Value>, TcpError> {
        let proxies = self.lock();
        let entry = proxies.get(proxy).ok_or(TcpError::ProxyNotFound)?;
        Ok(entry
            .toxics
            .borrow()
            .toxics
            .iter()
            .map(|t| t.to_json())
            .collect())
    }

    /// One toxic.
    pub fn toxic(&self, proxy: &str, name: &str) -> Result<Value, TcpError> {
        let proxies = self.lock();
        let entry = proxies.get(proxy).ok_or(TcpError::ProxyNotFound)?;
        let set = entry.toxics.borrow();
        set.toxics
            .iter()
            .find(|t| t.spec.name == name)
            .map(|t| t.to_json())
            .ok_or(TcpError::ToxicNotFound)
    }

    /// Adds a toxic at the end of the chain; open connections pick it up at once.
    pub fn add_toxic(&self, proxy: &str, toxic: Toxic) -> Result<Value, TcpError> {
        let mut proxies = self.lock();
        let entry = proxies.get_mut(proxy).ok_or(TcpError::ProxyNotFound)?;
        self.add_locked(entry, toxic)
    }

    fn add_locked(&self, entry: &mut Entry, toxic: Toxic) -> Result<Value, TcpError> {
        if toxic.kind.is_http() {
            return Err(TcpError::Invalid(format!(
                "{} applies to HTTP listeners; `{}` is a TCP proxy",
                toxic.kind.type_name(),
                entry.name
            )));
        }
        if entry
            .toxics
            .borrow()
            .toxics
            .iter()
            .any(|t| t.spec.name == toxic.name)
        {
            return Err(TcpError::ToxicExists);
        }
        let (deadline, expires_at) = deadline_of(toxic.lifetime)?;
        let active = Arc::new(ActiveToxic {
            id: self.ids.fetch_add(1, Ordering::Relaxed),
            applied: self.registry.counter(
                "shakedown_tcp_toxic_applications_total",
                "Connections a toxic was applied to (after its toxicity draw).",
                &[
                    ("proxy", &entry.name),
                    ("toxic", &toxic.name),
                    ("type", toxic.kind.type_name()),
                    ("stream", toxic.stream.as_str()),
                ],
            ),
            spec: toxic,
            deadline,
            expires_at,
        });
        if let Some(at) = deadline {
            let me = self.me.clone();
            let (proxy, id) = (entry.name.clone(), active.id);
            tokio::spawn(async move {
                tokio::time::sleep_until(at).await;
                if let Some(me) = me.upgrade() {
                    me.expire(&proxy, id);
                }
            });
        }
        let json = active.to_json();
        entry.toxics.send_modify(|set| {
            let mut next = set.toxics.clone();
            next.push(active);
            *set = Arc::new(ToxicSet { toxics: next });
        });
        Ok(json)
    }

    /// Toxiproxy's toxic update: `toxicity` and the given attributes change, the rest stays.
    pub fn update_toxic(
        &self,
        proxy: &str,
        name: &str,
        toxicity: Option<f64>,
        attributes: &Map<String, Value>,
    ) -> Result<Value, TcpError> {
        let mut proxies = self.lock();
        let entry = proxies.get_mut(proxy).ok_or(TcpError::ProxyNotFound)?;
        let current = entry
            .toxics
            .borrow()
            .toxics
            .iter()
            .find(|t| t.spec.name == name)
            .cloned()
            .ok_or(TcpError::ToxicNotFound)?;
        let spec = current
            .spec
            .patched(toxicity, attributes)
            .map_err(TcpError::Invalid)?;
        let updated = Arc::new(ActiveToxic {
            id: current.id,
            spec,
            deadline: current.deadline,
            expires_at: current.expires_at,
            applied: current.applied.clone(),
        });
        let json = updated.to_json();
        entry.toxics.send_modify(|set| {
            let next = set
                .toxics
                .iter()
                .map(|t| {
                    if t.id == updated.id {
                        updated.clone()
                    } else {
                        t.clone()
                    }
                })
                .collect();
            *set = Arc::new(ToxicSet { toxics: next });
        });
        Ok(json)
    }

    /// Removes a toxic; connections drop it between two chunks.
    pub fn remove_toxic(&self, proxy: &str, name: &str) -> Result<(), TcpError> {
        let mut proxies = self.lock();
        let entry = proxies.get_mut(proxy).ok_or(TcpError::ProxyNotFound)?;
        let mut found = false;
        entry.toxics.send_if_modified(|set| {
            let before = set.toxics.len();
            let next: Vec<_> = set
                .toxics
                .iter()
                .filter(|t| t.spec.name != name)
                .cloned()
                .collect();
            found = next.len() != before;
            if found {
                *set = Arc::new(ToxicSet { toxics: next });
            }
            found
        });
        if found {
            Ok(())
        } else {
            Err(TcpError::ToxicNotFound)
        }
    }

    /// Removes toxic `id` of `proxy` if it is still there (its deadline passed).
    fn expire(&self, proxy: &str, id: u64) {
        let proxies = self.lock();
        if let Some(entry) = proxies.get(proxy) {
            entry.toxics.send_if_modified(|set| {
                let before = set.toxics.len();
                let next: Vec<_> = set.toxics.iter().filter(|t| t.id != id).cloned().collect();
                let changed = next.len() != before;
                if changed {
                    tracing::info!(proxy, id, "toxic reached its deadline and was removed");
                    *set = Arc::new(ToxicSet { toxics: next });
                }
                changed
            });
        }
    }

    fn start(&self, entry: &mut Entry) -> Result<(), TcpError> {
        let listen_err = |source| TcpError::Listen {
            address: entry.listen.clone(),
            source,
        };
        // Bound synchronously (a local bind does not block), so the API answers with the
        // real address and never waits on a task.
        let std_listener =
            std::net::TcpListener::bind(entry.listen.as_str()).map_err(listen_err)?;
        std_listener.set_nonblocking(true).map_err(listen_err)?;
        let listener = tokio::net::TcpListener::from_std(std_listener).map_err(listen_err)?;
        let bound = listener.local_addr().map_err(listen_err)?;
        entry.listen = bound.to_string();
        // Toxiproxy's byte counters are labelled with the bound listen address.
        entry.stats = Arc::new(TcpStats::new(
            &self.registry,
            &entry.name,
            &entry.listen,
            &entry.upstream,
        ));
        let cancel = CancellationToken::new();
        let listener = Arc::new(Mutex::new(Some(listener)));
        tokio::spawn(link::accept_loop(link::AcceptArgs {
            listener: listener.clone(),
            upstream: entry.upstream.clone(),
            toxics: entry.toxics.subscribe(),
            cancel: cancel.clone(),
            stats: entry.stats.clone(),
            seed: self.seed ^ hash(&entry.name),
        }));
        tracing::info!(proxy = %entry.name, listen = %bound, upstream = %entry.upstream, "TCP proxy listening");
        entry.running = Some(Running {
            bound,
            cancel,
            listener,
        });
        Ok(())
    }

    fn stop(entry: &mut Entry) {
        if let Some(running) = entry.running.take() {
            // Closed here and now, not when the accept task next runs.
            drop(
                running
                    .listener
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .take(),
            );
            running.cancel.cancel();
            tracing::info!(proxy = %entry.name, "TCP proxy down; connections cut");
        }
    }
}

impl Drop for TcpProxies {
    fn drop(&mut self) {
        self.stop_all();
    }
}

fn deadline_of(lifetime: Lifetime) -> Result<(Option<Instant>, Option<SystemTime>), TcpError> {
    let ttl = match lifetime {
        Lifetime::Unlimited => return Ok((None, None)),
        Lifetime::Ttl(d) => d,
        Lifetime::Until(at) => at
            .duration_since(SystemTime::now())
            .map_err(|_| TcpError::Invalid("expires_at: already in the past".into()))?,
    };
    if ttl > MAX_TTL {
        return Err(TcpError::Invalid("ttl: at most 366 days".into()));
    }
    Ok((
        Some(Instant::now() + ttl),
        Some(SystemTime::now() + ttl.max(Duration::ZERO)),
    ))
}

/// FNV-1a, to give each proxy its own seed stream.
fn hash(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}
