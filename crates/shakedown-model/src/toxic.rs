//! TCP proxies and their toxics, with Toxiproxy's names, units and JSON.
//!
//! A toxic is written the way Toxiproxy's API takes it —
//! `{"name", "type", "stream", "toxicity", "attributes": {…}}` — in an API body or under
//! `tcp_proxies[].toxics` in the config file, plus two fields of our own: `ttl` and
//! `expires_at`, after which the proxy removes the toxic by itself. [`Toxic::from_raw`] checks
//! every field and attribute (Toxiproxy ignores unknown attributes and accepts negative
//! latencies; we name them), so a typo never silently injects nothing.
//!
//! Beyond Toxiproxy's TCP toxics, `http_abort` and `http_delay` apply to HTTP listeners of the
//! same proxy: there `toxicity` is the fraction of requests (Envoy's percentage), not of
//! connections.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::fault::{Lifetime, valid_name};
use crate::source::{Problems, join};

/// Which way the bytes a toxic acts on flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stream {
    /// Client → server.
    Upstream,
    /// Server → client (Toxiproxy's default).
    Downstream,
}

impl Stream {
    /// Toxiproxy's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Upstream => "upstream",
            Stream::Downstream => "downstream",
        }
    }
}

/// What a toxic does, with Toxiproxy's attribute names and units.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ToxicKind {
    /// Every chunk held `latency` ± `jitter` ms after it was read.
    Latency {
        /// Milliseconds.
        latency: u64,
        /// Milliseconds, drawn uniformly in ±jitter per chunk.
        jitter: u64,
    },
    /// At most `rate` KB/s (1 KB = 1000 bytes, as Toxiproxy); 0 = unlimited.
    Bandwidth {
        /// KB/s.
        rate: u64,
    },
    /// Waits `delay` ms after the source closed before closing the destination.
    SlowClose {
        /// Milliseconds.
        delay: u64,
    },
    /// Drops all data; closes the connection once no data came for `timeout` ms (0 = never:
    /// a black hole). Removing it closes the connection, as in Toxiproxy.
    Timeout {
        /// Milliseconds.
        timeout: u64,
    },
    /// On the first data, waits `timeout` ms and resets both sides (TCP RST).
    ResetPeer {
        /// Milliseconds.
        timeout: u64,
    },
    /// Splits data into slices of `average_size` ± `size_variation` bytes, `delay` µs apart.
    Slicer {
        /// Bytes.
        average_size: u64,
        /// Bytes.
        size_variation: u64,
        /// Microseconds.
        delay: u64,
    },
    /// Lets `bytes` through on the connection, then closes it.
    LimitData {
        /// Bytes.
        bytes: u64,
    },
    /// HTTP listeners only: answer `status` without calling the upstream.
    HttpAbort {
        /// HTTP status, 200–599.
        status: u16,
    },
    /// HTTP listeners only: hold each request `delay` ms before forwarding it.
    HttpDelay {
        /// Milliseconds.
        delay: u64,
    },
}

/// The type names accepted, in documentation order.
pub const TOXIC_TYPES: &[&str] = &[
    "latency",
    "bandwidth",
    "slow_close",
    "timeout",
    "reset_peer",
    "slicer",
    "limit_data",
    "http_abort",
    "http_delay",
];

impl ToxicKind {
    /// Toxiproxy's type name.
    pub fn type_name(&self) -> &'static str {
        match self {
            ToxicKind::Latency { .. } => "latency",
            ToxicKind::Bandwidth { .. } => "bandwidth",
            ToxicKind::SlowClose { .. } => "slow_close",
            ToxicKind::Timeout { .. } => "timeout",
            ToxicKind::ResetPeer { .. } => "reset_peer",
            ToxicKind::Slicer { .. } => "slicer",
            ToxicKind::LimitData { .. } => "limit_data",
            ToxicKind::HttpAbort { .. } => "http_abort",
            ToxicKind::HttpDelay { .. } => "http_delay",
        }
    }

    /// Whether it acts on HTTP requests (HTTP listeners) rather than TCP bytes.
    pub fn is_http(&self) -> bool {
        matches!(
            self,
            ToxicKind::HttpAbort { .. } | ToxicKind::HttpDelay { .. }
        )
    }

    /// The attributes object, every attribute present (as Toxiproxy shows them).
    pub fn attributes(&self) -> Value {
        match *self {
            ToxicKind::Latency { latency, jitter } => json!({"latency": latency, "jitter": jitter}),
            ToxicKind::Bandwidth { rate } => json!({"rate": rate}),
            ToxicKind::SlowClose { delay } => json!({"delay": delay}),
            ToxicKind::Timeout { timeout } | ToxicKind::ResetPeer { timeout } => {
                json!({"timeout": timeout})
            }
            ToxicKind::Slicer {
                average_size,
                size_variation,
                delay,
            } => {
                json!({"average_size": average_size, "size_variation": size_variation, "delay": delay})
            }
            ToxicKind::LimitData { bytes } => json!({"bytes": bytes}),
            ToxicKind::HttpAbort { status } => json!({"status": status}),
            ToxicKind::HttpDelay { delay } => json!({"delay": delay}),
        }
    }

    /// Builds a kind from its type name and attributes; every problem is recorded at `path`.
    /// Omitted attributes are 0, as in Toxiproxy (except `http_abort`'s `status`, required).
    pub fn parse(
        type_name: &str,
        attributes: &Map<String, Value>,
        path: &str,
        problems: &mut Problems,
    ) -> Option<ToxicKind> {
        let names: &[&str] = match type_name {
            "latency" => &["latency", "jitter"],
            "bandwidth" => &["rate"],
            "slow_close" | "http_delay" => &["delay"],
            "timeout" | "reset_peer" => &["timeout"],
            "slicer" => &["average_size", "size_variation", "delay"],
            "limit_data" => &["bytes"],
            "http_abort" => &["status"],
            _ => {
                problems.push(
                    join(path, "type"),
                    format!(
                        "invalid toxic type `{type_name}`; known: {}",
                        TOXIC_TYPES.join(", ")
                    ),
                );
                return None;
            }
        };
        let apath = join(path, "attributes");
        for key in attributes.keys() {
            if !names.contains(&key.as_str()) {
                problems.push(
                    join(&apath, key),
                    format!(
                        "unknown attribute of a {type_name} toxic; it takes {}",
                        names.join(", ")
                    ),
                );
            }
        }
        let before = problems.len();
        let mut get = |name: &str| -> u64 {
            match attributes.get(name) {
                None | Some(Value::Null) => 0,
                Some(v) => match whole(v) {
                    Some(n) if n >= 0 => n as u64,
                    Some(_) => {
                        problems.push(join(&apath, name), "must not be negative");
                        0
                    }
                    None => {
                        problems.push(join(&apath, name), format!("`{v}` is not a whole number"));
                        0
                    }
                },
            }
        };
        let kind = match type_name {
            "latency" => ToxicKind::Latency {
                latency: get("latency"),
                jitter: get("jitter"),
            },
            "bandwidth" => ToxicKind::Bandwidth { rate: get("rate") },
            "slow_close" => ToxicKind::SlowClose {
                delay: get("delay"),
            },
            "timeout" => ToxicKind::Timeout {
                timeout: get("timeout"),
            },
            "reset_peer" => ToxicKind::ResetPeer {
                timeout: get("timeout"),
            },
            "slicer" => ToxicKind::Slicer {
                average_size: get("average_size"),
                size_variation: get("size_variation"),
                delay: get("delay"),
            },
            "limit_data" => ToxicKind::LimitData {
                bytes: get("bytes"),
            },
            "http_delay" => ToxicKind::HttpDelay {
                delay: get("delay"),
            },
            _ => {
                let status = get("status");
                if attributes.get("status").is_none() {
                    problems.push(join(&apath, "status"), "an http_abort toxic needs a status");
                } else if !(200..=599).contains(&status) {
                    problems.push(join(&apath, "status"), "must be an HTTP status, 200–599");
                }
                ToxicKind::HttpAbort {
                    status: status as u16,
                }
            }
        };
        if let ToxicKind::Slicer {
            average_size,
            size_variation,
            ..
        } = kind
            && size_variation > average_size
        {
            problems.push(
                join(&apath, "size_variation"),
                "must not exceed average_size",
            );
        }
        // Durations beyond a day are typos, and would overflow the clock arithmetic.
        const DAY_MS: u64 = 86_400_000;
        let too_long = match kind {
            ToxicKind::Latency { latency, jitter } => (latency > DAY_MS)
                .then_some("latency")
                .or((jitter > DAY_MS).then_some("jitter")),
            ToxicKind::SlowClose { delay } | ToxicKind::HttpDelay { delay } => {
                (delay > DAY_MS).then_some("delay")
            }
            ToxicKind::Timeout { timeout } | ToxicKind::ResetPeer { timeout } => {
                (timeout > DAY_MS).then_some("timeout")
            }
            ToxicKind::Slicer { delay, .. } => (delay > DAY_MS * 1000).then_some("delay"),
            _ => None,
        };
        if let Some(name) = too_long {
            problems.push(join(&apath, name), "must be at most one day");
        }
        (problems.len() == before).then_some(kind)
    }
}

/// A JSON number that is a whole number (`100` or `100.0`), as i64.
fn whole(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64().or_else(|| {
            n.as_f64()
                .filter(|f| f.fract() == 0.0 && f.abs() < 9.0e15)
                .map(|f| f as i64)
        }),
        _ => None,
    }
}

/// A validated toxic.
#[derive(Debug, Clone, PartialEq)]
pub struct Toxic {
    /// Unique within its proxy (across both streams).
    pub name: String,
    /// What it does.
    pub kind: ToxicKind,
    /// Which direction.
    pub stream: Stream,
    /// Probability, per connection (TCP) or per request (HTTP), that it applies; 0 is inert.
    pub toxicity: f32,
    /// When the proxy removes it by itself.
    pub lifetime: Lifetime,
}

impl Toxic {
    /// Validates a raw toxic; `path` prefixes every problem.
    pub fn from_raw(raw: &RawToxic, path: &str, problems: &mut Problems) -> Option<Toxic> {
        let before = problems.len();
        let stream = match raw.stream.as_deref() {
            None | Some("downstream") => Stream::Downstream,
            Some("upstream") => Stream::Upstream,
            Some(other) => {
                problems.push(
                    join(path, "stream"),
                    format!(
                        "stream was invalid, can be either upstream or downstream (got `{other}`)"
                    ),
                );
                Stream::Downstream
            }
        };
        let toxicity = toxicity(raw.toxicity, 1.0, &join(path, "toxicity"), problems);
        let empty = Map::new();
        let kind = ToxicKind::parse(
            &raw.kind,
            raw.attributes.as_ref().unwrap_or(&empty),
            path,
            problems,
        );
        let name = raw
            .name
            .clone()
            .unwrap_or_else(|| format!("{}_{}", raw.kind, stream.as_str()));
        if !valid_name(&name) {
            problems.push(
                join(path, "name"),
                format!("`{name}` is not a valid name (letters, digits, `-`, `_`, `.`; 1–128)"),
            );
        }
        let lifetime =
            crate::fault::lifetime_of(raw.ttl.as_ref(), raw.expires_at.as_ref(), path, problems);
        let kind = kind?;
        (problems.len() == before).then_some(Toxic {
            name,
            kind,
            stream,
            toxicity,
            lifetime,
        })
    }

    /// Toxiproxy's toxic update: the given attributes overwrite the current ones, an omitted
    /// `toxicity` keeps its value; name, type and stream never change. Every problem, joined.
    pub fn patched(
        &self,
        new_toxicity: Option<f64>,
        attributes: &Map<String, Value>,
    ) -> Result<Toxic, String> {
        let mut merged = self
            .kind
            .attributes()
            .as_object()
            .cloned()
            .unwrap_or_default();
        merged.extend(attributes.clone());
        let mut problems = Problems::default();
        let kind = ToxicKind::parse(self.kind.type_name(), &merged, "", &mut problems);
        let toxicity = toxicity(new_toxicity, self.toxicity, "toxicity", &mut problems);
        match kind {
            Some(kind) if problems.is_empty() => Ok(Toxic {
                kind,
                toxicity,
                ..self.clone()
            }),
            _ => Err(problems
                .into_vec()
                .into_iter()
                .map(|p| format!("{}: {}", p.path, p.message))
                .collect::<Vec<_>>()
                .join("; ")),
        }
    }

    /// The Toxiproxy JSON of the toxic (plus `ttl`/`expires_at` when it has a lifetime).
    pub fn to_json(&self) -> Value {
        let mut v = json!({
            "name": self.name,
            "type": self.kind.type_name(),
            "stream": self.stream.as_str(),
            "toxicity": self.toxicity,
            "attributes": self.kind.attributes(),
        });
        match self.lifetime {
            Lifetime::Unlimited => {}
            Lifetime::Ttl(d) => {
                v["ttl"] = crate::duration::format_duration(d).into();
            }
            Lifetime::Until(t) => {
                v["expires_at"] = humantime::format_rfc3339_millis(t).to_string().into();
            }
        }
        v
    }
}

/// A toxicity: `default` when absent, else a probability in 0..=1.
fn toxicity(given: Option<f64>, default: f32, path: &str, problems: &mut Problems) -> f32 {
    match given {
        None => default,
        Some(t) if (0.0..=1.0).contains(&t) => t as f32,
        Some(t) => {
            problems.push(path, format!("{t} is not a probability between 0 and 1"));
            default
        }
    }
}

/// A toxic as written (an API body or a config entry).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawToxic {
    /// Unique within the proxy; default `<type>_<stream>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `latency`, `bandwidth`, `slow_close`, `timeout`, `reset_peer`, `slicer`, `limit_data`,
    /// or, on HTTP listeners, `http_abort` / `http_delay`.
    #[serde(rename = "type")]
    pub kind: String,
    /// `upstream` (client → server) or `downstream` (server → client, the default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<String>,
    /// Probability that it applies to a connection (HTTP: to a request); default 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub toxicity: Option<f64>,
    /// Type-specific attributes, Toxiproxy's names and units.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attributes: Option<Map<String, Value>>,
    /// Remove the toxic this long after it is added (Shakedown's extension).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<String>,
    /// Remove the toxic at this RFC 3339 time (Shakedown's extension).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
}

/// A TCP proxy as written (config file, `POST /proxies`, `/populate`).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawTcpProxy {
    /// Unique name (shared namespace with HTTP listeners).
    pub name: String,
    /// `host:port` to listen on; port 0 picks a free port. Default `127.0.0.1:0`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
    /// `host:port` of the real service.
    pub upstream: String,
    /// `false` = down: not listening, no connections. Default true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Toxics active from start-up (the API's `/populate` ignores them, as Toxiproxy does).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub toxics: Vec<RawToxic>,
}

/// A validated TCP proxy.
#[derive(Debug, Clone, PartialEq)]
pub struct TcpProxySpec {
    /// Name.
    pub name: String,
    /// `host:port` to listen on.
    pub listen: String,
    /// `host:port` to connect to.
    pub upstream: String,
    /// Listening or down.
    pub enabled: bool,
    /// Toxics from the config file.
    pub toxics: Vec<Toxic>,
}

impl TcpProxySpec {
    /// Validates a raw proxy; HTTP toxic types are rejected (a TCP proxy has no requests).
    pub fn from_raw(raw: &RawTcpProxy, path: &str, problems: &mut Problems) -> Option<Self> {
        let before = problems.len();
        if !valid_name(&raw.name) {
            problems.push(
                join(path, "name"),
                format!("`{}` is not a valid name", raw.name),
            );
        }
        let listen = raw.listen.clone().unwrap_or_else(|| "127.0.0.1:0".into());
        check_host_port(&listen, &join(path, "listen"), problems);
        check_host_port(&raw.upstream, &join(path, "upstream"), problems);
        let mut toxics = Vec::new();
        for (i, t) in raw.toxics.iter().enumerate() {
            let tpath = crate::source::index(&join(path, "toxics"), i);
            if let Some(toxic) = Toxic::from_raw(t, &tpath, problems) {
                if toxic.kind.is_http() {
                    problems.push(
                        join(&tpath, "type"),
                        "http_abort and http_delay apply to HTTP listeners, not TCP proxies",
                    );
                } else if toxics.iter().any(|x: &Toxic| x.name == toxic.name) {
                    problems.push(
                        join(&tpath, "name"),
                        format!("toxic `{}` is declared twice", toxic.name),
                    );
                } else {
                    toxics.push(toxic);
                }
            }
        }
        (problems.len() == before).then(|| TcpProxySpec {
            name: raw.name.clone(),
            listen,
            upstream: raw.upstream.clone(),
            enabled: raw.enabled.unwrap_or(true),
            toxics,
        })
    }
}

/// `host:port` with a numeric port; hosts are resolved when used.
pub fn check_host_port(s: &str, path: &str, problems: &mut Problems) {
    let ok = s
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
    if !ok {
        problems.push(path, format!("`{s}` is not host:port"));
    }
}

/// The longest a toxic deadline may be, so clocks never overflow.
pub const MAX_TTL: Duration = Duration::from_secs(366 * 86_400);

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(v: Value) -> Result<Toxic, Vec<String>> {
        let raw: RawToxic = serde_json::from_value(v).map_err(|e| vec![e.to_string()])?;
        let mut p = Problems::default();
        Toxic::from_raw(&raw, "", &mut p).ok_or_else(|| {
            p.into_vec()
                .into_iter()
                .map(|p| format!("{}: {}", p.path, p.message))
                .collect()
        })
    }

    #[test]
    fn toxiproxy_defaults_and_names() {
        let t = parse(json!({"type": "latency", "attributes": {"latency": 100}})).unwrap();
        assert_eq!(t.name, "latency_downstream");
        assert_eq!(t.stream, Stream::Downstream);
        assert_eq!(t.toxicity, 1.0);
        assert_eq!(
            t.kind,
            ToxicKind::Latency {
                latency: 100,
                jitter: 0
            }
        );
        let t = parse(json!({"type": "slicer", "stream": "upstream", "toxicity": 0.5, "attributes": {"average_size": 10.0, "size_variation": 2, "delay": 5}})).unwrap();
        assert_eq!(t.name, "slicer_upstream");
        assert_eq!(t.to_json()["attributes"]["average_size"], 10);
        assert_eq!(t.to_json()["toxicity"], 0.5);
    }

    #[test]
    fn bad_toxics_are_named() {
        let e = parse(json!({"type": "latancy"})).unwrap_err();
        assert!(e[0].contains("invalid toxic type"), "{e:?}");
        let e = parse(json!({"type": "latency", "attributes": {"latency": -5}})).unwrap_err();
        assert_eq!(e, ["attributes.latency: must not be negative"]);
        let e = parse(json!({"type": "latency", "toxicity": 1.5})).unwrap_err();
        assert!(e[0].starts_with("toxicity:"), "{e:?}");
        let e = parse(json!({"type": "latency", "stream": "sideways"})).unwrap_err();
        assert!(e[0].contains("stream was invalid"), "{e:?}");
        let e = parse(json!({"type": "bandwidth", "attributes": {"rte": 5}})).unwrap_err();
        assert!(
            e[0].starts_with("attributes.rte: unknown attribute"),
            "{e:?}"
        );
        let e = parse(json!({"type": "latency", "attributes": {"latency": "5"}})).unwrap_err();
        assert!(e[0].contains("not a whole number"), "{e:?}");
        let e = parse(json!({"type": "http_abort"})).unwrap_err();
        assert!(e[0].contains("needs a status"), "{e:?}");
        assert!(parse(json!({"type": "latency", "colour": 1})).is_err());
    }
}
