//! The running proxy: listeners, clusters, faults, the admin endpoint, and how a new config is
//! applied without dropping connections.
//!
//! A config is applied in two phases. First everything that can fail is done on the side: new
//! listeners are bound, new clusters built, route stacks assembled. Only if all of it worked is
//! the result committed — route tables sent to running listeners, new listeners started, removed
//! ones drained, file faults replaced — so a rejected reload leaves the running config serving.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use serde_json::{Value, json};
use shakedown_model::{ConfigError, ProxyConfig, TcpProxySpec};
use tokio::net::TcpListener;
use tokio::sync::{Mutex, watch};
use tokio::task::JoinHandle;

use crate::access_log::AccessLog;
use crate::admin;
use crate::fault::FaultStore;
use crate::listener::{self, ListenerHandle, RouteEntry, RouteTable};
use crate::metrics::ProxyStats;
use crate::stack::route_stack;
use crate::tcp::{TcpError, TcpProxies};
use crate::toxiproxy::HttpToxics;
use crate::upstream::ClusterState;

/// Start-up choices that are not in the config file.
#[derive(Debug, Clone, Default)]
pub struct ProxyOptions {
    /// The file the config came from, for reloads.
    pub config_path: Option<PathBuf>,
    /// Overrides the file's seed.
    pub seed: Option<u64>,
    /// Overrides the file's admin address.
    pub admin: Option<SocketAddr>,
    /// Serves the Toxiproxy API here (overrides the file's `toxiproxy.address`).
    pub toxiproxy: Option<SocketAddr>,
}

/// Why the proxy could not start or a config could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The config is invalid.
    #[error("{0}")]
    Invalid(#[from] ConfigError),
    /// A listener could not be bound.
    #[error("listener `{name}`: cannot bind {address}: {source}")]
    Bind {
        /// Listener name.
        name: String,
        /// Address.
        address: SocketAddr,
        /// Cause.
        source: std::io::Error,
    },
    /// The config file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// Path.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
    /// The admin endpoint or access log could not start.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// Reload asked of a proxy that has no config file.
    #[error("this proxy was not started from a config file")]
    NoFile,
    /// A TCP proxy of the file could not start.
    #[error("tcp proxy `{name}`: {source}")]
    Tcp {
        /// Its name.
        name: String,
        /// Why.
        source: TcpError,
    },
}

/// The outcome of the last reload attempt.
#[derive(Debug, Clone)]
pub struct ReloadStatus {
    /// When.
    pub at: SystemTime,
    /// The error, if it was rejected.
    pub error: Option<String>,
    /// The version it produced.
    pub version: Option<u64>,
}

/// A running proxy; cheap to clone.
#[derive(Debug, Clone)]
pub struct Proxy {
    pub(crate) shared: Arc<Shared>,
}

#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) stats: Arc<ProxyStats>,
    pub(crate) faults: Arc<FaultStore>,
    pub(crate) seed: u64,
    pub(crate) config_path: Option<PathBuf>,
    pub(crate) started: SystemTime,
    pub(crate) admin_addr: SocketAddr,
    pub(crate) view: RwLock<View>,
    pub(crate) tcp: Arc<TcpProxies>,
    pub(crate) http_toxics: HttpToxics,
    pub(crate) toxiproxy_addr: Option<SocketAddr>,
    runtime: Mutex<Runtime>,
    access_log: Option<AccessLog>,
    shutdown: watch::Sender<bool>,
    tasks: std::sync::Mutex<Vec<JoinHandle<()>>>,
}

/// What the admin endpoint shows and checks against, updated on every apply.
#[derive(Debug, Default)]
pub(crate) struct View {
    pub(crate) raw: Value,
    pub(crate) listeners: Vec<(String, SocketAddr)>,
    pub(crate) clusters: Vec<(String, String)>,
    /// Listener → the first endpoint of its first route's cluster (shown by the Toxiproxy API).
    pub(crate) upstreams: HashMap<String, String>,
    pub(crate) last_reload: Option<ReloadStatus>,
}

#[derive(Debug, Default)]
struct Runtime {
    drain: Duration,
    listeners: Vec<ListenerHandle>,
    clusters: HashMap<String, Arc<ClusterState>>,
    /// TCP proxies the file declared, as declared (reloads replace only what changed).
    file_tcp: HashMap<String, TcpProxySpec>,
}

impl Proxy {
    /// Starts the admin endpoint, the listeners and the fault reaper.
    pub async fn start(config: ProxyConfig, options: ProxyOptions) -> Result<Proxy, ApplyError> {
        let seed = options.seed.or(config.seed).unwrap_or_else(random_seed);
        let stats = ProxyStats::new();
        let tcp = TcpProxies::new(seed, stats.registry.clone());
        let faults = FaultStore::new(seed, Arc::new(AtomicU64::new(0)));
        let access_log = match &config.access_log {
            Some(path) => Some(AccessLog::start(path, &stats.registry).await?),
            None => None,
        };
        let admin_addr = options.admin.unwrap_or(config.admin);
        if !admin_addr.ip().is_loopback() {
            tracing::warn!(
                %admin_addr,
                "the admin endpoint can change faults and is not on loopback: anyone who reaches it controls this proxy"
            );
        }
        let admin_listener = TcpListener::bind(admin_addr).await?;
        let toxiproxy_listener = match options.toxiproxy.or(config.toxiproxy) {
            Some(addr) => {
                if !addr.ip().is_loopback() {
                    tracing::warn!(%addr, "the Toxiproxy API can change faults and is not on loopback");
                }
                Some(
                    TcpListener::bind(addr)
                        .await
                        .map_err(|source| ApplyError::Bind {
                            name: "toxiproxy".into(),
                            address: addr,
                            source,
                        })?,
                )
            }
            None => None,
        };
        let toxiproxy_addr = match &toxiproxy_listener {
            Some(l) => Some(l.local_addr()?),
            None => None,
        };
        let (shutdown, shutdown_rx) = watch::channel(false);
        let shared = Arc::new(Shared {
            stats,
            faults: faults.clone(),
            seed,
            config_path: options.config_path,
            started: SystemTime::now(),
            admin_addr: admin_listener.local_addr()?,
            view: RwLock::default(),
            tcp,
            http_toxics: HttpToxics::default(),
            toxiproxy_addr,
            runtime: Mutex::default(),
            access_log,
            shutdown,
            tasks: Default::default(),
        });
        let proxy = Proxy { shared };
        proxy.apply(config).await?;
        let reaper = tokio::spawn(faults.run_reaper(shutdown_rx.clone()));
        let admin = tokio::spawn(admin::serve(
            admin_listener,
            proxy.clone(),
            shutdown_rx.clone(),
        ));
        let mut tasks = vec![reaper, admin];
        if let Some(listener) = toxiproxy_listener {
            tasks.push(tokio::spawn(admin::serve_toxiproxy(
                listener,
                proxy.clone(),
                shutdown_rx,
            )));
            tracing::info!(address = ?proxy.toxiproxy_addr(), "Toxiproxy API listening");
        }
        proxy
            .shared
            .tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend(tasks);
        tracing::info!(admin = %proxy.admin_addr(), seed, "proxy started");
        Ok(proxy)
    }

    /// The admin endpoint's address.
    pub fn admin_addr(&self) -> SocketAddr {
        self.shared.admin_addr
    }

    /// The bound address of a listener.
    pub fn listener_addr(&self, name: &str) -> Option<SocketAddr> {
        self.view()
            .listeners
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, a)| *a)
    }

    /// Where the Toxiproxy API listens of its own, if it does.
    pub fn toxiproxy_addr(&self) -> Option<SocketAddr> {
        self.shared.toxiproxy_addr
    }

    /// The TCP proxies.
    pub fn tcp(&self) -> &Arc<TcpProxies> {
        &self.shared.tcp
    }

    /// Listener → the first endpoint of its first route's cluster.
    pub(crate) fn first_endpoints(&self) -> HashMap<String, String> {
        self.view().upstreams.clone()
    }

    /// The seed of fault decisions.
    pub fn seed(&self) -> u64 {
        self.shared.seed
    }

    /// The current config version.
    pub fn version(&self) -> u64 {
        self.shared.faults.version()
    }

    /// The fault store (for embedding).
    pub fn faults(&self) -> &Arc<FaultStore> {
        &self.shared.faults
    }

    /// The metrics in Prometheus text format.
    pub fn render_metrics(&self) -> String {
        self.shared.stats.registry.render()
    }

    /// The last reload attempt.
    pub fn last_reload(&self) -> Option<ReloadStatus> {
        self.view().last_reload.clone()
    }

    pub(crate) fn view(&self) -> std::sync::RwLockReadGuard<'_, View> {
        self.shared.view.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Re-reads the config file and applies it; on any error the running config stays.
    pub async fn reload(&self) -> Result<u64, ApplyError> {
        let result = self.reload_inner().await;
        let status = ReloadStatus {
            at: SystemTime::now(),
            error: result.as_ref().err().map(ToString::to_string),
            version: result.as_ref().ok().copied(),
        };
        match &result {
            Ok(v) => tracing::info!(version = v, "config reloaded"),
            Err(e) => tracing::error!("config reload rejected; the running config stays:\n{e}"),
        }
        self.shared
            .view
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .last_reload = Some(status);
        result
    }

    async fn reload_inner(&self) -> Result<u64, ApplyError> {
        let path = self.shared.config_path.as_ref().ok_or(ApplyError::NoFile)?;
        let text = tokio::fs::read_to_string(path)
            .await
            .map_err(|source| ApplyError::Read {
                path: path.display().to_string(),
                source,
            })?;
        let config = ProxyConfig::load(&path.display().to_string(), &text)?;
        self.apply(config).await
    }

    /// Applies a validated config: all or nothing.
    pub async fn apply(&self, config: ProxyConfig) -> Result<u64, ApplyError> {
        let shared = &self.shared;
        let mut rt = shared.runtime.lock().await;

        // Phase 1: everything that can fail, off to the side.
        let mut clusters = HashMap::new();
        for spec in &config.clusters {
            let state = match rt.clusters.get(&spec.name) {
                // An unchanged cluster keeps its connection pools and round-robin position.
                Some(existing) if existing.spec == *spec => existing.clone(),
                _ => ClusterState::new(spec.clone(), &shared.stats),
            };
            clusters.insert(spec.name.clone(), state);
        }
        let mut fresh: Vec<(usize, TcpListener)> = Vec::new();
        for (i, l) in config.listeners.iter().enumerate() {
            let reused = rt
                .listeners
                .iter()
                .any(|h| h.name == l.name && h.configured == l.address);
            if !reused {
                let socket =
                    TcpListener::bind(l.address)
                        .await
                        .map_err(|source| ApplyError::Bind {
                            name: l.name.clone(),
                            address: l.address,
                            source,
                        })?;
                fresh.push((i, socket));
            }
        }
        let tables: Vec<Arc<RouteTable>> = config
            .listeners
            .iter()
            .map(|l| {
                let stats = shared
                    .stats
                    .listener(&l.stat_prefix, &l.address.to_string());
                let routes = l
                    .routes
                    .iter()
                    .filter_map(|r| {
                        let cluster = clusters.get(&r.cluster)?.clone();
                        let service = route_stack(
                            &l.name,
                            r,
                            cluster,
                            stats.clone(),
                            shared.faults.subscribe(),
                        );
                        Some(RouteEntry {
                            route: r.clone(),
                            service,
                        })
                    })
                    .collect();
                Arc::new(RouteTable {
                    listener: l.name.clone(),
                    stats,
                    routes,
                })
            })
            .collect();

        // TCP proxies the file adds start now, so a bind failure still changes nothing.
        let mut started: Vec<String> = Vec::new();
        for spec in &config.tcp_proxies {
            if rt.file_tcp.contains_key(&spec.name) {
                continue;
            }
            if let Err(source) = shared.tcp.create(spec.clone()) {
                for name in &started {
                    let _ = shared.tcp.delete(name);
                }
                return Err(ApplyError::Tcp {
                    name: spec.name.clone(),
                    source,
                });
            }
            started.push(spec.name.clone());
        }

        // Phase 2: commit.
        let mut old: Vec<ListenerHandle> = std::mem::take(&mut rt.listeners);
        let mut next = Vec::new();
        for (i, l) in config.listeners.iter().enumerate() {
            let table = tables[i].clone();
            if let Some(pos) = old
                .iter()
                .position(|h| h.name == l.name && h.configured == l.address)
            {
                let handle = old.swap_remove(pos);
                handle.update(table);
                next.push(handle);
            } else if let Some(k) = fresh.iter().position(|(j, _)| *j == i) {
                let (_, socket) = fresh.swap_remove(k);
                next.push(listener::spawn(
                    socket,
                    l.address,
                    table,
                    shared.access_log.clone(),
                    config.drain_timeout,
                )?);
            }
        }
        for removed in old {
            tracing::info!(listener = %removed.name, "listener removed; draining");
            tokio::spawn(removed.stop());
        }
        let view_listeners = next
            .iter()
            .map(|h| (h.name.clone(), h.local_addr))
            .collect();
        // File TCP proxies that changed are replaced (their connections cut), removed ones go;
        // unchanged ones keep their connections and any toxics the API added.
        let mut file_tcp = HashMap::new();
        let mut tcp_error = None;
        for spec in &config.tcp_proxies {
            match rt.file_tcp.remove(&spec.name) {
                Some(old) if old != *spec => {
                    let _ = shared.tcp.delete(&spec.name);
                    if let Err(source) = shared.tcp.create(spec.clone()) {
                        tracing::error!(proxy = %spec.name, "tcp proxy could not restart: {source}");
                        tcp_error.get_or_insert(ApplyError::Tcp {
                            name: spec.name.clone(),
                            source,
                        });
                    }
                }
                _ => {}
            }
            file_tcp.insert(spec.name.clone(), spec.clone());
        }
        for gone in rt.file_tcp.keys() {
            let _ = shared.tcp.delete(gone);
        }
        rt.file_tcp = file_tcp;
        let upstreams = config
            .listeners
            .iter()
            .filter_map(|l| {
                let first = &l.routes.first()?.cluster;
                let cluster = config.clusters.iter().find(|c| c.name == *first)?;
                Some((l.name.clone(), cluster.endpoints.first()?.to_string()))
            })
            .collect();
        rt.listeners = next;
        rt.clusters = clusters;
        rt.drain = config.drain_timeout;
        let version = shared.faults.replace_file_faults(config.faults.clone());
        let mut view = shared.view.write().unwrap_or_else(|p| p.into_inner());
        view.raw = serde_json::to_value(&config.raw).unwrap_or(Value::Null);
        view.listeners = view_listeners;
        view.clusters = config
            .clusters
            .iter()
            .map(|c| (c.name.clone(), c.stat_name.clone()))
            .collect();
        view.upstreams = upstreams;
        drop(view);
        match tcp_error {
            Some(e) => Err(e),
            None => Ok(version),
        }
    }

    /// Stops accepting, drains in-flight requests (up to the drain timeout) and stops the admin
    /// endpoint.
    pub async fn shutdown(&self) {
        let mut rt = self.shared.runtime.lock().await;
        let stops: Vec<_> = rt
            .listeners
            .drain(..)
            .map(|h| tokio::spawn(h.stop()))
            .collect();
        for s in stops {
            let _ = s.await;
        }
        self.shared.tcp.stop_all();
        let _ = self.shared.shutdown.send(true);
        let tasks: Vec<_> = self
            .shared
            .tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
            .collect();
        for t in tasks {
            let _ = t.await;
        }
    }

    /// The `/config_dump` document.
    pub fn config_dump(&self) -> Value {
        let view = self.view();
        let faults = self.shared.faults.current();
        let bound: Vec<(String, String)> = view
            .listeners
            .iter()
            .map(|(n, a)| (n.clone(), a.to_string()))
            .collect();
        let listeners = annotated(&view.raw, "listeners", "bound_address", &bound);
        let clusters = annotated(&view.raw, "clusters", "stat_name", &view.clusters);
        let last_reload = view.last_reload.as_ref().map(|r| {
            json!({
                "at": humantime::format_rfc3339_millis(r.at).to_string(),
                "ok": r.error.is_none(),
                "error": r.error,
                "version": r.version,
            })
        });
        json!({
            "version": faults.version,
            "version_info": faults.version.to_string(),
            "seed": self.shared.seed,
            "configs": [
                {
                    "@type": "type.googleapis.com/shakedown.admin.v1.BootstrapConfigDump",
                    "config_path": self.shared.config_path.as_ref().map(|p| p.display().to_string()),
                    "admin": {"address": self.admin_addr().to_string()},
                    "drain_timeout": view.raw.get("drain_timeout"),
                    "access_log": view.raw.get("access_log"),
                    "last_reload": last_reload,
                },
                {"@type": "type.googleapis.com/shakedown.admin.v1.ClustersConfigDump", "clusters": clusters},
                {"@type": "type.googleapis.com/shakedown.admin.v1.ListenersConfigDump", "listeners": listeners},
                {
                    "@type": "type.googleapis.com/shakedown.admin.v1.FaultsConfigDump",
                    "faults": faults.faults.iter().map(|f| f.to_json()).collect::<Vec<_>>(),
                },
            ],
        })
    }
}

/// The raw `section` list of the config, each entry given `field` looked up by its name.
fn annotated(raw: &Value, section: &str, field: &str, by_name: &[(String, String)]) -> Vec<Value> {
    let entries = raw
        .get(section)
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    entries
        .into_iter()
        .map(|mut entry| {
            let name = entry.get("name").and_then(Value::as_str).map(str::to_owned);
            let found = name.and_then(|n| by_name.iter().find(|(x, _)| *x == n));
            if let (Some((_, value)), Some(obj)) = (found, entry.as_object_mut()) {
                obj.insert(field.into(), value.clone().into());
            }
            entry
        })
        .collect()
}

/// A seed when none is given: different every run, printed so the run can be replayed.
fn random_seed() -> u64 {
    let t = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    (t.as_nanos() as u64) ^ (u64::from(std::process::id()) << 32)
}
