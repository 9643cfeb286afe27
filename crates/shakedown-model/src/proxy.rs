//! The proxy's config file: listeners with routes, upstream clusters, faults.
//!
//! ```yaml
//! admin: {address: 127.0.0.1:9901}
//! seed: 42
//! listeners:
//!   - name: outbound
//!     address: 127.0.0.1:10000
//!     routes:
//!       - match: {prefix: /}
//!         cluster: recommendation
//! clusters:
//!   - name: recommendation
//!     endpoints: [127.0.0.1:8080]
//! faults:
//!   - name: flaky
//!     abort: {http_status: 503, percentage: 10}
//!     delay: {fixed_delay: 2s, percentage: 70}
//! ```
//!
//! [`ProxyConfig::load`] parses and validates a whole file, reporting every problem with its
//! `file:line:column`; nothing half-valid ever reaches the proxy.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::Duration;

use http::uri::Authority;
use regex::Regex;
use serde::{Deserialize, Serialize};

use crate::duration::parse_duration;
use crate::fault::HttpFault;
use crate::fault::raw::RawFault;
use crate::fault::valid_name;
use crate::header_match::{HeaderMatcher, RawHeaderMatcher, RawRegex, header_matchers};
use crate::source::{ConfigError, Document, Problems, index, join};
use crate::toxic::{RawTcpProxy, TcpProxySpec};

/// Default admin address: loopback only, Envoy's default port.
pub const DEFAULT_ADMIN_ADDRESS: &str = "127.0.0.1:9901";

/// The config file as written.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawProxyConfig {
    /// The admin/control endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin: Option<RawAdmin>,
    /// Seed for fault decisions, so a run can be replayed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// How long shutdown waits for in-flight requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drain_timeout: Option<String>,
    /// JSON-lines access log.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_log: Option<RawAccessLog>,
    /// Where traffic comes in.
    #[serde(default)]
    pub listeners: Vec<RawListener>,
    /// Where traffic goes.
    #[serde(default)]
    pub clusters: Vec<RawCluster>,
    /// Faults active from start-up.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub faults: Vec<RawFault>,
    /// The Toxiproxy-compatible API on its own address (its routes are on the admin endpoint
    /// too).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub toxiproxy: Option<RawToxiproxyApi>,
    /// TCP proxies with Toxiproxy's toxics.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tcp_proxies: Vec<RawTcpProxy>,
}

/// `toxiproxy:`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawToxiproxyApi {
    /// `ip:port`; default `127.0.0.1:8474`, the port Toxiproxy's clients expect.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
}

/// Default address of the Toxiproxy-compatible API.
pub const DEFAULT_TOXIPROXY_ADDRESS: &str = "127.0.0.1:8474";

/// `admin:`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    /// `ip:port`; loopback unless you mean otherwise.
    pub address: String,
}

/// `access_log:`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawAccessLog {
    /// File to append JSON lines to, or `-` for standard output.
    pub path: String,
}

/// A listener.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawListener {
    /// Unique name.
    pub name: String,
    /// `ip:port` to bind.
    pub address: String,
    /// Envoy's HTTP connection manager stat prefix (metric label); defaults to the name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stat_prefix: Option<String>,
    /// Routes, first match wins.
    #[serde(default)]
    pub routes: Vec<RawRoute>,
}

/// A route.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    /// Name, for logs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// What requests this route takes.
    #[serde(rename = "match", default)]
    pub matcher: RawRouteMatch,
    /// Upstream cluster name.
    pub cluster: String,
    /// Time allowed for the upstream response headers; unset = no limit (Istio's default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    /// Retries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<RawRetries>,
}

/// `match:` of a route.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawRouteMatch {
    /// Path prefix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// Exact path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Whole-path regex.
    #[serde(default, alias = "safeRegex", skip_serializing_if = "Option::is_none")]
    pub safe_regex: Option<RawRegex>,
    /// Host names (`api.example.com`, `*.example.com`, `*`); empty = any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    /// Header matchers, all must match.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<RawHeaderMatcher>,
}

/// `retries:` of a route.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawRetries {
    /// Extra attempts after the first.
    pub attempts: u32,
    /// Conditions, comma separated; only `connect-failure` so far.
    #[serde(default, alias = "retryOn", skip_serializing_if = "Option::is_none")]
    pub retry_on: Option<String>,
}

/// A cluster.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawCluster {
    /// Unique name, used by routes and faults.
    pub name: String,
    /// `host:port` endpoints, used round robin.
    pub endpoints: Vec<String>,
    /// The `envoy_cluster_name` metric label; defaults to Istio's `outbound|<port>||<name>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stat_name: Option<String>,
    /// Upstream protocol.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<UpstreamProtocol>,
    /// TCP connect timeout (Istio's default 10s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect_timeout: Option<String>,
}

/// Protocol used towards a cluster.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum UpstreamProtocol {
    /// The downstream request's protocol: HTTP/2 (h2c) for HTTP/2 requests, HTTP/1.1 otherwise.
    #[default]
    Auto,
    /// Always HTTP/1.1.
    Http1,
    /// Always HTTP/2 with prior knowledge (h2c).
    Http2,
}

/// A validated proxy config.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// Admin address.
    pub admin: SocketAddr,
    /// Seed, if fixed.
    pub seed: Option<u64>,
    /// Shutdown drain time.
    pub drain_timeout: Duration,
    /// Access log path (`-` = stdout).
    pub access_log: Option<String>,
    /// Listeners.
    pub listeners: Vec<Listener>,
    /// Clusters.
    pub clusters: Vec<Cluster>,
    /// Faults declared in the file.
    pub faults: Vec<HttpFault>,
    /// Where the Toxiproxy-compatible API listens of its own, if asked.
    pub toxiproxy: Option<SocketAddr>,
    /// TCP proxies.
    pub tcp_proxies: Vec<TcpProxySpec>,
    /// The file as written (for `/config_dump`).
    pub raw: RawProxyConfig,
}

/// A validated listener.
#[derive(Debug, Clone)]
pub struct Listener {
    /// Name.
    pub name: String,
    /// Bind address.
    pub address: SocketAddr,
    /// Stat prefix.
    pub stat_prefix: String,
    /// Routes.
    pub routes: Vec<Route>,
}

/// A validated route.
#[derive(Debug, Clone)]
pub struct Route {
    /// Name (defaults to `<listener>/<index>`).
    pub name: String,
    /// Path match.
    pub path: PathMatch,
    /// Host match; empty = any.
    pub hosts: Vec<HostMatch>,
    /// Header matchers.
    pub headers: Vec<HeaderMatcher>,
    /// Target cluster.
    pub cluster: String,
    /// Upstream timeout.
    pub timeout: Option<Duration>,
    /// Extra attempts on connect failure.
    pub connect_retries: u32,
}

/// How a route matches the path.
#[derive(Debug, Clone)]
pub enum PathMatch {
    /// Starts with.
    Prefix(String),
    /// Equals (query string ignored).
    Exact(String),
    /// Whole path matches.
    Regex(Regex),
}

impl PathMatch {
    /// Whether `path` (without query) matches.
    pub fn matches(&self, path: &str) -> bool {
        match self {
            PathMatch::Prefix(p) => path.starts_with(p.as_str()),
            PathMatch::Exact(p) => path == p,
            PathMatch::Regex(r) => r.is_match(path),
        }
    }
}

/// How a route matches the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostMatch {
    /// Any host.
    Any,
    /// Exactly this host (lower case, no port).
    Exact(String),
    /// `*.suffix`: ends with `.suffix`.
    Wildcard(String),
}

impl HostMatch {
    /// Whether a lower-cased host without port matches.
    pub fn matches(&self, host: &str) -> bool {
        match self {
            HostMatch::Any => true,
            HostMatch::Exact(h) => host == h,
            HostMatch::Wildcard(suffix) => {
                host.len() > suffix.len() && host.ends_with(suffix.as_str())
            }
        }
    }
}

/// A validated cluster.
#[derive(Debug, Clone, PartialEq)]
pub struct Cluster {
    /// Name.
    pub name: String,
    /// Metric label value.
    pub stat_name: String,
    /// Endpoints.
    pub endpoints: Vec<Authority>,
    /// Protocol.
    pub protocol: UpstreamProtocol,
    /// Connect timeout.
    pub connect_timeout: Duration,
}

impl ProxyConfig {
    /// Parses and validates a config file's text; `origin` (the file path) appears in errors.
    pub fn load(origin: &str, text: &str) -> Result<Self, ConfigError> {
        let doc = Document::parse(origin, text)?;
        let (raw, unknown): (RawProxyConfig, _) = doc.deserialize_reporting_unknown()?;
        match Self::validate(raw) {
            Ok(c) if unknown.is_empty() => Ok(c),
            Ok(_) => Err(doc.errors(unknown)),
            Err(p) => {
                let mut all = unknown;
                all.extend(p.into_vec());
                Err(doc.errors(all))
            }
        }
    }

    /// Validates a raw config, collecting every problem.
    pub fn validate(raw: RawProxyConfig) -> Result<Self, Problems> {
        let mut problems = Problems::default();
        let admin = match &raw.admin {
            None => DEFAULT_ADMIN_ADDRESS.parse().ok(),
            Some(a) => socket_addr(&a.address, "admin.address", &mut problems),
        };
        let drain_timeout = match &raw.drain_timeout {
            None => Duration::from_secs(15),
            Some(t) => parse_duration(t).unwrap_or_else(|e| {
                problems.push("drain_timeout", e);
                Duration::ZERO
            }),
        };

        let clusters: Vec<Cluster> = raw
            .clusters
            .iter()
            .enumerate()
            .filter_map(|(i, c)| cluster(c, &index("clusters", i), &mut problems))
            .collect();
        unique(
            raw.clusters.iter().map(|c| c.name.as_str()),
            "clusters",
            &mut problems,
        );
        let cluster_names: HashSet<&str> = raw.clusters.iter().map(|c| c.name.as_str()).collect();

        let mut listeners = Vec::new();
        for (i, l) in raw.listeners.iter().enumerate() {
            let path = index("listeners", i);
            if !valid_name(&l.name) {
                problems.push(
                    join(&path, "name"),
                    format!("`{}` is not a valid name", l.name),
                );
            }
            let address = socket_addr(&l.address, &join(&path, "address"), &mut problems);
            let mut routes = Vec::new();
            for (j, r) in l.routes.iter().enumerate() {
                let rpath = index(&join(&path, "routes"), j);
                if !cluster_names.contains(r.cluster.as_str()) {
                    problems.push(
                        join(&rpath, "cluster"),
                        unknown("cluster", &r.cluster, &cluster_names),
                    );
                }
                if let Some(route) = route(r, &rpath, &format!("{}/{j}", l.name), &mut problems) {
                    routes.push(route);
                }
            }
            if l.routes.is_empty() {
                problems.push(join(&path, "routes"), "a listener needs at least one route");
            }
            if let Some(address) = address {
                listeners.push(Listener {
                    name: l.name.clone(),
                    address,
                    stat_prefix: l.stat_prefix.clone().unwrap_or_else(|| l.name.clone()),
                    routes,
                });
            }
        }
        unique(
            raw.listeners.iter().map(|l| l.name.as_str()),
            "listeners",
            &mut problems,
        );
        // Port 0 means "any free port": never a clash.
        let mut seen = HashSet::new();
        for (i, l) in listeners.iter().enumerate() {
            if l.address.port() != 0 && !seen.insert(l.address) {
                problems.push(
                    join(&index("listeners", i), "address"),
                    format!("{} is used by another listener", l.address),
                );
            }
        }
        if admin.is_some_and(|a| a.port() != 0 && seen.contains(&a)) {
            problems.push(
                "admin.address",
                "the admin address is also a listener address",
            );
        }

        let listener_names: HashSet<&str> = raw.listeners.iter().map(|l| l.name.as_str()).collect();
        let mut faults = Vec::new();
        for (i, f) in raw.faults.iter().enumerate() {
            let path = index("faults", i);
            if let Some(fault) = HttpFault::from_raw(f, &path, None, &mut problems) {
                check_fault_refs(
                    &fault,
                    &path,
                    &listener_names,
                    &cluster_names,
                    &mut problems,
                );
                faults.push(fault);
            }
        }
        unique(
            raw.faults.iter().filter_map(|f| f.name.as_deref()),
            "faults",
            &mut problems,
        );

        let toxiproxy = raw.toxiproxy.as_ref().and_then(|t| {
            let address = t.address.as_deref().unwrap_or(DEFAULT_TOXIPROXY_ADDRESS);
            socket_addr(address, "toxiproxy.address", &mut problems)
        });
        let tcp_proxies: Vec<TcpProxySpec> = raw
            .tcp_proxies
            .iter()
            .enumerate()
            .filter_map(|(i, p)| TcpProxySpec::from_raw(p, &index("tcp_proxies", i), &mut problems))
            .collect();
        for (i, p) in raw.tcp_proxies.iter().enumerate() {
            if listener_names.contains(p.name.as_str()) {
                problems.push(
                    join(&index("tcp_proxies", i), "name"),
                    format!(
                        "`{}` is also a listener's name; the API addresses both by name",
                        p.name
                    ),
                );
            }
        }
        unique(
            raw.tcp_proxies.iter().map(|p| p.name.as_str()),
            "tcp_proxies",
            &mut problems,
        );

        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(ProxyConfig {
            toxiproxy,
            tcp_proxies,
            admin: admin.unwrap_or_else(|| ([127, 0, 0, 1], 9901).into()),
            seed: raw.seed,
            drain_timeout,
            access_log: raw.access_log.as_ref().map(|a| a.path.clone()),
            listeners,
            clusters,
            faults,
            raw,
        })
    }
}

/// Checks that a fault names listeners and clusters that exist.
pub fn check_fault_refs(
    fault: &HttpFault,
    path: &str,
    listeners: &HashSet<&str>,
    clusters: &HashSet<&str>,
    problems: &mut Problems,
) {
    for (k, l) in fault.listeners.iter().enumerate() {
        if !listeners.contains(l.as_str()) {
            problems.push(
                index(&join(path, "listeners"), k),
                unknown("listener", l, listeners),
            );
        }
    }
    if let Some(c) = &fault.upstream_cluster
        && !clusters.contains(c.as_str())
    {
        let field = if fault.form == crate::fault::FaultForm::Envoy {
            "envoy.upstream_cluster"
        } else {
            "upstream_cluster"
        };
        problems.push(join(path, field), unknown("cluster", c, clusters));
    }
}

fn unknown(kind: &str, name: &str, known: &HashSet<&str>) -> String {
    let mut known: Vec<&str> = known.iter().copied().collect();
    known.sort_unstable();
    format!(
        "no {kind} named `{name}` (known: {})",
        if known.is_empty() {
            "none".into()
        } else {
            known.join(", ")
        }
    )
}

/// Records every name defined twice in `what`.
pub(crate) fn unique<'a>(
    names: impl Iterator<Item = &'a str>,
    what: &str,
    problems: &mut Problems,
) {
    let mut seen = HashSet::new();
    for (i, n) in names.enumerate() {
        if !seen.insert(n) {
            problems.push(
                join(&index(what, i), "name"),
                format!("`{n}` is defined twice"),
            );
        }
    }
}

fn socket_addr(text: &str, path: &str, problems: &mut Problems) -> Option<SocketAddr> {
    match text.parse() {
        Ok(a) => Some(a),
        Err(_) => {
            problems.push(
                path,
                format!("`{text}` is not an ip:port address (e.g. 127.0.0.1:10000)"),
            );
            None
        }
    }
}

fn cluster(raw: &RawCluster, path: &str, problems: &mut Problems) -> Option<Cluster> {
    if !valid_name(&raw.name) {
        problems.push(
            join(path, "name"),
            format!("`{}` is not a valid name", raw.name),
        );
    }
    if raw.endpoints.is_empty() {
        problems.push(
            join(path, "endpoints"),
            "a cluster needs at least one endpoint",
        );
    }
    let mut endpoints = Vec::new();
    for (i, e) in raw.endpoints.iter().enumerate() {
        match e.parse::<Authority>() {
            Ok(a) if a.port_u16().is_some() => endpoints.push(a),
            _ => problems.push(
                index(&join(path, "endpoints"), i),
                format!("`{e}` is not host:port"),
            ),
        }
    }
    let connect_timeout = match &raw.connect_timeout {
        None => Duration::from_secs(10),
        Some(t) => match parse_duration(t) {
            Ok(d) if d > Duration::ZERO => d,
            Ok(_) => {
                problems.push(join(path, "connect_timeout"), "must be greater than 0");
                return None;
            }
            Err(e) => {
                problems.push(join(path, "connect_timeout"), e);
                return None;
            }
        },
    };
    let port = endpoints
        .first()
        .and_then(Authority::port_u16)
        .unwrap_or(80);
    Some(Cluster {
        name: raw.name.clone(),
        stat_name: raw
            .stat_name
            .clone()
            .unwrap_or_else(|| format!("outbound|{port}||{}", raw.name)),
        endpoints,
        protocol: raw.protocol.unwrap_or_default(),
        connect_timeout,
    })
}

fn route(raw: &RawRoute, path: &str, default_name: &str, problems: &mut Problems) -> Option<Route> {
    let m = &raw.matcher;
    let mpath = join(path, "match");
    let forms = [m.prefix.is_some(), m.path.is_some(), m.safe_regex.is_some()]
        .iter()
        .filter(|b| **b)
        .count();
    let path_match = match (&m.prefix, &m.path, &m.safe_regex) {
        _ if forms > 1 => {
            problems.push(&mpath, "set only one of `prefix`, `path` and `safe_regex`");
            return None;
        }
        (Some(p), _, _) => PathMatch::Prefix(p.clone()),
        (_, Some(p), _) => PathMatch::Exact(p.clone()),
        (_, _, Some(r)) => match Regex::new(&format!("^(?:{})$", r.regex)) {
            Ok(re) => PathMatch::Regex(re),
            Err(e) => {
                problems.push(join(&mpath, "safe_regex.regex"), format!("bad regex: {e}"));
                return None;
            }
        },
        _ => PathMatch::Prefix("/".into()),
    };
    let hosts = m
        .hosts
        .iter()
        .map(|h| {
            let h = h.to_ascii_lowercase();
            if h == "*" {
                HostMatch::Any
            } else if let Some(rest) = h.strip_prefix('*') {
                HostMatch::Wildcard(rest.to_owned())
            } else {
                HostMatch::Exact(h)
            }
        })
        .collect();
    let timeout = match &raw.timeout {
        None => None,
        Some(t) => match parse_duration(t) {
            Ok(d) if d.is_zero() => None,
            Ok(d) => Some(d),
            Err(e) => {
                problems.push(join(path, "timeout"), e);
                None
            }
        },
    };
    let connect_retries = match &raw.retries {
        None => 0,
        Some(r) => {
            for cond in r
                .retry_on
                .as_deref()
                .unwrap_or("connect-failure")
                .split(',')
            {
                let cond = cond.trim();
                if cond != "connect-failure" {
                    problems.push(
                        join(path, "retries.retry_on"),
                        format!("`{cond}` is not supported yet; only `connect-failure` is"),
                    );
                }
            }
            r.attempts
        }
    };
    Some(Route {
        name: raw.name.clone().unwrap_or_else(|| default_name.to_owned()),
        path: path_match,
        hosts,
        headers: header_matchers(&m.headers, &join(&mpath, "headers"), problems),
        cluster: raw.cluster.clone(),
        timeout,
        connect_retries,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "\
listeners:
  - name: outbound
    address: 127.0.0.1:10000
    routes:
      - match: {prefix: /}
        cluster: rec
clusters:
  - name: rec
    endpoints: [127.0.0.1:8080]
faults:
  - name: flaky
    abort: {http_status: 503, percentage: 10}
    delay: {fixed_delay: 2s, percentage: 70}
";

    #[test]
    fn a_good_file_loads() {
        let c = ProxyConfig::load("p.yaml", GOOD).unwrap();
        assert_eq!(c.listeners[0].stat_prefix, "outbound");
        assert_eq!(c.clusters[0].stat_name, "outbound|8080||rec");
        assert_eq!(c.admin.to_string(), DEFAULT_ADMIN_ADDRESS);
        assert_eq!(c.faults.len(), 1);
    }

    #[test]
    fn every_problem_is_reported_with_its_line() {
        let bad = GOOD
            .replace("cluster: rec\n", "cluster: nope\n")
            .replace("http_status: 503", "http_status: 700")
            .replace("127.0.0.1:10000", "localhost");
        let err = ProxyConfig::load("p.yaml", &bad).unwrap_err();
        let text = err.to_string();
        assert_eq!(err.diagnostics.len(), 3, "{text}");
        assert!(
            text.contains("p.yaml:3:14: listeners[0].address: `localhost` is not an ip:port"),
            "{text}"
        );
        assert!(
            text.contains(
                "p.yaml:6:18: listeners[0].routes[0].cluster: no cluster named `nope` (known: rec)"
            ),
            "{text}"
        );
        assert!(
            text.contains("p.yaml:12:26: faults[0].abort.http_status: 700 is not in [200, 600)"),
            "{text}"
        );
    }

    #[test]
    fn fault_references_are_checked() {
        let bad = GOOD.replace(
            "  - name: flaky\n",
            "  - name: flaky\n    upstream_cluster: ghost\n    listeners: [inbound]\n",
        );
        let text = ProxyConfig::load("p.yaml", &bad).unwrap_err().to_string();
        assert!(
            text.contains("faults[0].upstream_cluster: no cluster named `ghost`"),
            "{text}"
        );
        assert!(
            text.contains("faults[0].listeners[0]: no listener named `inbound`"),
            "{text}"
        );
    }

    #[test]
    fn duplicates_are_rejected() {
        let bad = GOOD.replace("clusters:\n  - name: rec\n    endpoints: [127.0.0.1:8080]\n", "clusters:\n  - name: rec\n    endpoints: [127.0.0.1:8080]\n  - name: rec\n    endpoints: [127.0.0.1:8081]\n");
        let text = ProxyConfig::load("p.yaml", &bad).unwrap_err().to_string();
        assert!(
            text.contains("clusters[1].name: `rec` is defined twice"),
            "{text}"
        );
    }

    #[test]
    fn host_matching() {
        assert!(HostMatch::Wildcard(".example.com".into()).matches("api.example.com"));
        assert!(!HostMatch::Wildcard(".example.com".into()).matches("example.com"));
        assert!(HostMatch::Exact("a.b".into()).matches("a.b"));
    }
}
