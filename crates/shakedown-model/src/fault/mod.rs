//! HTTP faults with Envoy's `HTTPFault` semantics, whichever of the three forms they came in.
//!
//! [`raw`] holds what users write; [`HttpFault::from_raw`] turns any of the three forms into one
//! validated [`HttpFault`], so the proxy has a single thing to execute and a single way to show it
//! back (as an Envoy `HTTPFault` body, see [`HttpFault::to_envoy_json`]).

pub mod raw;

use std::time::{Duration, SystemTime};

use serde_json::{Value, json};

use crate::duration::{format_duration, parse_duration};
use crate::header_match::{HeaderMatcher, header_matchers};
use crate::percent::FractionalPercent;
use crate::source::{Problems, join};
use raw::{
    RawAbort, RawDelay, RawEnvoyFault, RawFault, RawIstioFault, RawPercentage, RawRateLimit,
};

/// The Envoy type URL of the fault filter config.
pub const HTTP_FAULT_TYPE_URL: &str =
    "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault";

/// Which form a fault was written in (kept for display; behaviour does not depend on it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultForm {
    /// Shakedown's own fields.
    Native,
    /// An Envoy `HTTPFault` body.
    Envoy,
    /// An Istio `fault` block.
    Istio,
}

impl FaultForm {
    /// Lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            FaultForm::Native => "native",
            FaultForm::Envoy => "envoy",
            FaultForm::Istio => "istio",
        }
    }
}

/// Where a delay's duration comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DelaySource {
    /// Always this long.
    Fixed(Duration),
    /// From `x-envoy-fault-delay-request` (milliseconds).
    Header,
}

/// A delay fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delay {
    /// Where the duration comes from.
    pub source: DelaySource,
    /// How many requests.
    pub percentage: FractionalPercent,
}

/// What an abort answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AbortSource {
    /// This HTTP status.
    Http(u16),
    /// This gRPC status, in a trailers-only response.
    Grpc(u32),
    /// From `x-envoy-fault-abort-request` / `x-envoy-fault-abort-grpc-request`.
    Header,
}

/// An abort fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Abort {
    /// What to answer.
    pub source: AbortSource,
    /// How many requests.
    pub percentage: FractionalPercent,
}

/// Where a response rate limit comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateLimitSource {
    /// KiB per second.
    Fixed(u64),
    /// From `x-envoy-fault-throughput-response` (KiB/s).
    Header,
}

/// A response body rate limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Where the limit comes from.
    pub source: RateLimitSource,
    /// How many requests.
    pub percentage: FractionalPercent,
}

/// When a fault stops by itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Lifetime {
    /// Until removed.
    #[default]
    Unlimited,
    /// This long after it is applied.
    Ttl(Duration),
    /// At this wall-clock time.
    Until(SystemTime),
}

/// A validated HTTP fault.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpFault {
    /// Unique name.
    pub name: String,
    /// The form it was written in.
    pub form: FaultForm,
    /// Listener names it applies to; empty = all.
    pub listeners: Vec<String>,
    /// Only requests routed to this cluster.
    pub upstream_cluster: Option<String>,
    /// Only requests whose headers all match.
    pub headers: Vec<HeaderMatcher>,
    /// Only requests whose `x-envoy-downstream-service-node` is listed.
    pub downstream_nodes: Vec<String>,
    /// Cap on concurrently faulted requests.
    pub max_active_faults: Option<u32>,
    /// Delay.
    pub delay: Option<Delay>,
    /// Abort.
    pub abort: Option<Abort>,
    /// Response rate limit.
    pub response_rate_limit: Option<RateLimit>,
    /// Skip the per-downstream-cluster counters.
    pub disable_downstream_cluster_stats: bool,
    /// When it stops by itself.
    pub lifetime: Lifetime,
}

/// Form-specific defaults.
#[derive(Clone, Copy)]
struct Dialect {
    /// The percentage when none is written.
    default_percentage: FractionalPercent,
}

const NATIVE: Dialect = Dialect {
    default_percentage: FractionalPercent::ALWAYS,
};
const ENVOY: Dialect = Dialect {
    default_percentage: FractionalPercent::NEVER,
};

impl HttpFault {
    /// Validates a raw fault found at `path`. `name` overrides the body's name (the API takes
    /// it from the URL). Cross-references (listeners, clusters) are checked by the caller, who
    /// knows what exists.
    pub fn from_raw(
        raw: &RawFault,
        path: &str,
        name: Option<&str>,
        problems: &mut Problems,
    ) -> Option<Self> {
        let before = problems_len(problems);
        let name = match (name, &raw.name) {
            (Some(url), Some(body)) if url != body => {
                problems.push(
                    join(path, "name"),
                    format!("body names `{body}` but the URL names `{url}`"),
                );
                url.to_owned()
            }
            (Some(n), _) => n.to_owned(),
            (None, Some(n)) => n.clone(),
            (None, None) => {
                problems.push(path, "missing field `name`");
                String::new()
            }
        };
        if !name.is_empty() && !valid_name(&name) {
            problems.push(
                join(path, "name"),
                format!("`{name}` is not a valid name (use letters, digits, `-`, `_`, `.`)"),
            );
        }
        let lifetime = lifetime(raw, path, problems);

        let native_used = raw.delay.is_some()
            || raw.abort.is_some()
            || raw.response_rate_limit.is_some()
            || !raw.downstream_nodes.is_empty();
        let forms = [native_used, raw.envoy.is_some(), raw.istio.is_some()]
            .iter()
            .filter(|b| **b)
            .count();
        if forms != 1 {
            problems.push(
                path,
                if forms == 0 {
                    "a fault needs `delay`, `abort` or `response_rate_limit` (or an `envoy:` / `istio:` body)"
                } else {
                    "write the fault in one form: native fields, `envoy:` or `istio:`, not several"
                },
            );
            return None;
        }

        let mut fault = HttpFault {
            name,
            form: FaultForm::Native,
            listeners: raw.listeners.clone(),
            upstream_cluster: raw.upstream_cluster.clone(),
            headers: header_matchers(&raw.headers, &join(path, "headers"), problems),
            downstream_nodes: raw.downstream_nodes.clone(),
            max_active_faults: raw.max_active_faults,
            delay: None,
            abort: None,
            response_rate_limit: None,
            disable_downstream_cluster_stats: false,
            lifetime,
        };
        if let Some(envoy) = &raw.envoy {
            fault.form = FaultForm::Envoy;
            let epath = join(path, "envoy");
            for (field, set) in [
                ("upstream_cluster", raw.upstream_cluster.is_some()),
                ("headers", !raw.headers.is_empty()),
                ("max_active_faults", raw.max_active_faults.is_some()),
            ] {
                if set {
                    problems.push(
                        join(path, field),
                        format!("set `{field}` inside the `envoy:` body, where Envoy has it"),
                    );
                }
            }
            envoy_body(envoy, &epath, &mut fault, problems);
        } else if let Some(istio) = &raw.istio {
            fault.form = FaultForm::Istio;
            istio_body(istio, &join(path, "istio"), &mut fault, problems);
        } else {
            fault.delay = raw
                .delay
                .as_ref()
                .and_then(|d| delay(d, &join(path, "delay"), NATIVE, problems));
            fault.abort = raw
                .abort
                .as_ref()
                .and_then(|a| abort(a, &join(path, "abort"), NATIVE, problems));
            fault.response_rate_limit = raw
                .response_rate_limit
                .as_ref()
                .and_then(|r| rate_limit(r, &join(path, "response_rate_limit"), NATIVE, problems));
        }
        (problems_len(problems) == before).then_some(fault)
    }

    /// The fault as an Envoy `HTTPFault` body (snake_case, `@type` first), the form shown by
    /// `/config_dump` and the control API.
    pub fn to_envoy_json(&self) -> Value {
        let mut out = serde_json::Map::new();
        out.insert("@type".into(), HTTP_FAULT_TYPE_URL.into());
        if let Some(d) = &self.delay {
            let mut m = serde_json::Map::new();
            match d.source {
                DelaySource::Fixed(t) => m.insert("fixed_delay".into(), format_duration(t).into()),
                DelaySource::Header => m.insert("header_delay".into(), json!({})),
            };
            m.insert("percentage".into(), json!(d.percentage));
            out.insert("delay".into(), m.into());
        }
        if let Some(a) = &self.abort {
            let mut m = serde_json::Map::new();
            match a.source {
                AbortSource::Http(s) => m.insert("http_status".into(), s.into()),
                AbortSource::Grpc(s) => m.insert("grpc_status".into(), s.into()),
                AbortSource::Header => m.insert("header_abort".into(), json!({})),
            };
            m.insert("percentage".into(), json!(a.percentage));
            out.insert("abort".into(), m.into());
        }
        if let Some(c) = &self.upstream_cluster {
            out.insert("upstream_cluster".into(), c.clone().into());
        }
        if !self.headers.is_empty() {
            out.insert(
                "headers".into(),
                json!(self.headers.iter().map(|h| h.raw()).collect::<Vec<_>>()),
            );
        }
        if !self.downstream_nodes.is_empty() {
            out.insert("downstream_nodes".into(), json!(self.downstream_nodes));
        }
        if let Some(m) = self.max_active_faults {
            out.insert("max_active_faults".into(), m.into());
        }
        if let Some(r) = &self.response_rate_limit {
            let mut m = serde_json::Map::new();
            match r.source {
                RateLimitSource::Fixed(k) => {
                    m.insert("fixed_limit".into(), json!({ "limit_kbps": k }))
                }
                RateLimitSource::Header => m.insert("header_limit".into(), json!({})),
            };
            m.insert("percentage".into(), json!(r.percentage));
            out.insert("response_rate_limit".into(), m.into());
        }
        if self.disable_downstream_cluster_stats {
            out.insert("disable_downstream_cluster_stats".into(), true.into());
        }
        out.into()
    }

    /// Whether two faults behave the same, ignoring name, form, lifetime and how a percentage
    /// was spelled (`10/HUNDRED` = `100000/MILLION`).
    pub fn same_behaviour(&self, other: &Self) -> bool {
        self.normalized().to_envoy_json() == other.normalized().to_envoy_json()
            && self.listeners == other.listeners
    }

    fn normalized(&self) -> Self {
        let million = |p: FractionalPercent| FractionalPercent {
            numerator: p.millionths() as u32,
            denominator: crate::percent::Denominator::Million,
        };
        let mut f = self.clone();
        if let Some(d) = &mut f.delay {
            d.percentage = million(d.percentage);
        }
        if let Some(a) = &mut f.abort {
            a.percentage = million(a.percentage);
        }
        if let Some(r) = &mut f.response_rate_limit {
            r.percentage = million(r.percentage);
        }
        f
    }
}

/// Names used in URLs and metrics: letters, digits, `-`, `_`, `.`.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

fn problems_len(p: &Problems) -> usize {
    p.len()
}

fn lifetime(raw: &RawFault, path: &str, problems: &mut Problems) -> Lifetime {
    lifetime_of(raw.ttl.as_ref(), raw.expires_at.as_ref(), path, problems)
}

/// A lifetime from `ttl` / `expires_at` (faults and toxics share the two fields).
pub(crate) fn lifetime_of(
    ttl: Option<&String>,
    expires_at: Option<&String>,
    path: &str,
    problems: &mut Problems,
) -> Lifetime {
    match (ttl, expires_at) {
        (Some(_), Some(_)) => {
            problems.push(join(path, "ttl"), "set `ttl` or `expires_at`, not both");
            Lifetime::Unlimited
        }
        (Some(t), None) => match parse_duration(t) {
            Ok(d) if d > Duration::ZERO => Lifetime::Ttl(d),
            Ok(_) => {
                problems.push(join(path, "ttl"), "ttl must be greater than 0");
                Lifetime::Unlimited
            }
            Err(e) => {
                problems.push(join(path, "ttl"), e);
                Lifetime::Unlimited
            }
        },
        (None, Some(at)) => match humantime::parse_rfc3339_weak(at) {
            Ok(t) => Lifetime::Until(t),
            Err(e) => {
                problems.push(
                    join(path, "expires_at"),
                    format!("`{at}` is not an RFC 3339 time: {e}"),
                );
                Lifetime::Unlimited
            }
        },
        (None, None) => Lifetime::Unlimited,
    }
}

fn percentage(
    raw: Option<&RawPercentage>,
    path: &str,
    dialect: Dialect,
    problems: &mut Problems,
) -> FractionalPercent {
    match raw {
        None => dialect.default_percentage,
        Some(RawPercentage::Fraction(f)) => *f,
        Some(RawPercentage::Percent(p)) => {
            FractionalPercent::from_percent(*p).unwrap_or_else(|e| {
                problems.push(join(path, "percentage"), e);
                FractionalPercent::NEVER
            })
        }
    }
}

fn delay(raw: &RawDelay, path: &str, dialect: Dialect, problems: &mut Problems) -> Option<Delay> {
    let percentage = percentage(raw.percentage.as_ref(), path, dialect, problems);
    let source = match (&raw.fixed_delay, &raw.header_delay) {
        (Some(d), None) => match parse_duration(d) {
            Ok(d) if d > Duration::ZERO => DelaySource::Fixed(d),
            Ok(_) => {
                problems.push(
                    join(path, "fixed_delay"),
                    "fixed_delay must be greater than 0",
                );
                return None;
            }
            Err(e) => {
                problems.push(join(path, "fixed_delay"), e);
                return None;
            }
        },
        (None, Some(_)) => DelaySource::Header,
        _ => {
            problems.push(path, "set exactly one of `fixed_delay` and `header_delay`");
            return None;
        }
    };
    Some(Delay { source, percentage })
}

fn abort(raw: &RawAbort, path: &str, dialect: Dialect, problems: &mut Problems) -> Option<Abort> {
    let percentage = percentage(raw.percentage.as_ref(), path, dialect, problems);
    let source = match (raw.http_status, raw.grpc_status, &raw.header_abort) {
        (Some(s), None, None) => {
            if !(200..600).contains(&s) {
                problems.push(
                    join(path, "http_status"),
                    format!("{s} is not in [200, 600)"),
                );
                return None;
            }
            AbortSource::Http(s as u16)
        }
        (None, Some(g), None) => AbortSource::Grpc(g),
        (None, None, Some(_)) => AbortSource::Header,
        _ => {
            problems.push(
                path,
                "set exactly one of `http_status`, `grpc_status` and `header_abort`",
            );
            return None;
        }
    };
    Some(Abort { source, percentage })
}

fn rate_limit(
    raw: &RawRateLimit,
    path: &str,
    dialect: Dialect,
    problems: &mut Problems,
) -> Option<RateLimit> {
    let percentage = percentage(raw.percentage.as_ref(), path, dialect, problems);
    let source = match (&raw.fixed_limit, &raw.header_limit) {
        (Some(f), None) => {
            if f.limit_kbps < 1 {
                problems.push(
                    join(path, "fixed_limit.limit_kbps"),
                    "limit_kbps must be at least 1",
                );
                return None;
            }
            RateLimitSource::Fixed(f.limit_kbps)
        }
        (None, Some(_)) => RateLimitSource::Header,
        _ => {
            problems.push(path, "set exactly one of `fixed_limit` and `header_limit`");
            return None;
        }
    };
    Some(RateLimit { source, percentage })
}

fn envoy_body(raw: &RawEnvoyFault, path: &str, fault: &mut HttpFault, problems: &mut Problems) {
    if let Some(inner) = &raw.typed_config {
        if let Some(name) = &raw.name
            && name != "envoy.filters.http.fault"
            && name != "envoy.fault"
        {
            problems.push(
                join(path, "name"),
                format!("`{name}` is not the fault filter (envoy.filters.http.fault)"),
            );
        }
        let stray = raw.delay.is_some() || raw.abort.is_some() || raw.response_rate_limit.is_some();
        if stray {
            problems.push(path, "with `typed_config`, put the fault fields inside it");
        }
        return envoy_body(inner, &join(path, "typed_config"), fault, problems);
    }
    if let Some(t) = &raw.type_url
        && t != HTTP_FAULT_TYPE_URL
    {
        problems.push(
            join(path, "@type"),
            format!("expected {HTTP_FAULT_TYPE_URL}, got {t}"),
        );
    }
    if raw.delay.is_none() && raw.abort.is_none() && raw.response_rate_limit.is_none() {
        problems.push(
            path,
            "an HTTPFault needs `delay`, `abort` or `response_rate_limit`",
        );
    }
    fault.delay = raw
        .delay
        .as_ref()
        .and_then(|d| delay(d, &join(path, "delay"), ENVOY, problems));
    fault.abort = raw
        .abort
        .as_ref()
        .and_then(|a| abort(a, &join(path, "abort"), ENVOY, problems));
    fault.response_rate_limit = raw
        .response_rate_limit
        .as_ref()
        .and_then(|r| rate_limit(r, &join(path, "response_rate_limit"), ENVOY, problems));
    fault.upstream_cluster = raw.upstream_cluster.clone().filter(|c| !c.is_empty());
    fault.headers = header_matchers(&raw.headers, &join(path, "headers"), problems);
    fault.downstream_nodes = raw.downstream_nodes.clone();
    fault.max_active_faults = raw.max_active_faults;
    fault.disable_downstream_cluster_stats = raw.disable_downstream_cluster_stats;
}

fn istio_body(raw: &RawIstioFault, path: &str, fault: &mut HttpFault, problems: &mut Problems) {
    if raw.delay.is_none() && raw.abort.is_none() {
        problems.push(path, "an Istio fault needs `delay` or `abort`");
    }
    let pct = |p: Option<&raw::RawIstioPercent>,
               legacy: Option<i32>,
               path: &str,
               problems: &mut Problems| match (p, legacy) {
        (Some(p), _) => FractionalPercent::from_percent(p.value).unwrap_or_else(|e| {
            problems.push(join(path, "percentage.value"), e);
            FractionalPercent::NEVER
        }),
        (None, Some(n)) if (0..=100).contains(&n) => FractionalPercent {
            numerator: n as u32,
            denominator: crate::percent::Denominator::Hundred,
        },
        (None, Some(n)) => {
            problems.push(join(path, "percent"), format!("{n} is outside 0-100"));
            FractionalPercent::NEVER
        }
        // Istio: "If left unspecified, no request will be delayed/aborted".
        (None, None) => FractionalPercent::NEVER,
    };
    if let Some(d) = &raw.delay {
        let dpath = join(path, "delay");
        let percentage = pct(d.percentage.as_ref(), d.percent, &dpath, problems);
        if d.exponential_delay.is_some() {
            problems.push(
                join(&dpath, "exponentialDelay"),
                "exponentialDelay is not supported (istiod does not translate it either)",
            );
        }
        match &d.fixed_delay {
            Some(t) => match parse_duration(t) {
                Ok(t) if t >= Duration::from_millis(1) => {
                    fault.delay = Some(Delay {
                        source: DelaySource::Fixed(t),
                        percentage,
                    })
                }
                Ok(_) => problems.push(
                    join(&dpath, "fixedDelay"),
                    "must be a valid duration greater than 1ms",
                ),
                Err(e) => problems.push(join(&dpath, "fixedDelay"), e),
            },
            None if d.exponential_delay.is_none() => problems.push(&dpath, "missing `fixedDelay`"),
            None => {}
        }
    }
    if let Some(a) = &raw.abort {
        let apath = join(path, "abort");
        let percentage = pct(a.percentage.as_ref(), None, &apath, problems);
        let source = match (a.http_status, &a.grpc_status, &a.http2_error) {
            (Some(s), None, None) if (200..600).contains(&s) => Some(AbortSource::Http(s as u16)),
            (Some(s), None, None) => {
                problems.push(
                    join(&apath, "httpStatus"),
                    format!("{s} is not in [200, 600)"),
                );
                None
            }
            (None, Some(g), None) => match grpc_code(g) {
                Some(c) => Some(AbortSource::Grpc(c)),
                None => {
                    problems.push(
                        join(&apath, "grpcStatus"),
                        format!("`{g}` is not a gRPC status name (e.g. UNAVAILABLE)"),
                    );
                    None
                }
            },
            (None, None, Some(_)) => {
                problems.push(
                    join(&apath, "http2Error"),
                    "http2Error is not supported (istiod does not translate it either)",
                );
                None
            }
            _ => {
                problems.push(&apath, "set exactly one of `httpStatus` and `grpcStatus`");
                None
            }
        };
        fault.abort = source.map(|source| Abort { source, percentage });
    }
}

/// gRPC status names, as Istio's `grpcStatus` takes them.
const GRPC_CODES: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

/// The code of a gRPC status name.
pub fn grpc_code(name: &str) -> Option<u32> {
    GRPC_CODES.iter().position(|n| *n == name).map(|i| i as u32)
}

#[cfg(test)]
mod tests;
