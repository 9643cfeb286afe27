//! A load run as users write it (`shakedown load --config FILE`, or an experiment's `load:`
//! section) and the validated [`LoadSpec`] the load generator runs.
//!
//! The scenario borrows k6's executor names (`constant-arrival-rate`, `ramping-arrival-rate`,
//! `constant-vus`, `ramping-vus`) and its stage shape (`{duration, target}`), so a k6 user reads
//! it at sight; the open model's knobs are Shakedown's own (`connections`, `max_in_flight`)
//! because its semantics differ from k6's: a planned request that finds every connection busy
//! waits in a queue and is timed from its intended start, and only beyond `max_in_flight` is it
//! dropped (counted in `dropped_iterations`). Thresholds are k6's, short or long form.

use std::collections::BTreeMap;
use std::time::Duration;

use schemars::JsonSchema;
use serde::Deserialize;

use crate::duration::parse_duration;
use crate::source::{ConfigError, Document, Problems, index, join};
use crate::threshold::{Threshold, parse_assertion, parse_metric};

/// Default per-request timeout (k6's).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
/// Default time given to requests still in flight when the schedule ends (k6's `gracefulStop`).
pub const DEFAULT_GRACEFUL_STOP: Duration = Duration::from_secs(30);
/// Default number of connections of the open model.
pub const DEFAULT_CONNECTIONS: usize = 10;
/// Default cap on requests planned but not finished in the open model.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 100_000;

/// A load file as written.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawLoad {
    /// Base URL; each request's `path` is joined to it. A request may give a full `url` instead.
    pub target: Option<String>,
    /// Request templates picked by weight; default: one `GET` of `target`.
    #[serde(default)]
    pub requests: Vec<RawRequest>,
    /// How requests are scheduled.
    pub scenario: RawScenario,
    /// Client settings.
    #[serde(default)]
    pub http: RawHttp,
    /// Assertions on each response; their pass rate is the `checks` metric.
    #[serde(default)]
    pub checks: Vec<RawCheck>,
    /// k6 thresholds: metric (or `metric{tag:value}`) → expressions.
    #[serde(default)]
    pub thresholds: BTreeMap<String, Vec<RawThreshold>>,
    /// Seed for the weighted choice of request templates (runs replay).
    pub seed: Option<u64>,
}

/// One request template.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawRequest {
    /// Name, the `name` tag of its samples (default: method and path).
    pub name: Option<String>,
    /// HTTP method (default `GET`).
    pub method: Option<String>,
    /// Full URL; exclusive with `path`.
    pub url: Option<String>,
    /// Path and query joined to `target`.
    pub path: Option<String>,
    /// Request headers.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Request body.
    pub body: Option<String>,
    /// Relative weight (default 1).
    pub weight: Option<u32>,
}

/// The scenario: an executor and its fields.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawScenario {
    /// `constant-arrival-rate`, `ramping-arrival-rate`, `constant-vus` or `ramping-vus`.
    pub executor: String,
    /// Arrivals per `time_unit` (constant-arrival-rate).
    pub rate: Option<f64>,
    /// The unit of `rate`, `start_rate` and arrival-rate stage targets (default `1s`).
    pub time_unit: Option<String>,
    /// Length of a constant scenario.
    pub duration: Option<String>,
    /// Starting rate of ramping-arrival-rate (default 0).
    pub start_rate: Option<f64>,
    /// Starting VUs of ramping-vus (default 1).
    pub start_vus: Option<u32>,
    /// Stages of a ramping executor: the value moves linearly to `target` over `duration`.
    #[serde(default)]
    pub stages: Vec<RawStage>,
    /// Virtual users of constant-vus.
    pub vus: Option<u32>,
    /// Pause after each request of a virtual user (k6's `sleep`).
    pub think_time: Option<String>,
    /// Connections of the open model (default 10).
    pub connections: Option<u32>,
    /// Requests planned but not finished beyond which new ones are dropped (default 100000).
    pub max_in_flight: Option<u32>,
    /// Time left to requests in flight when the schedule ends (default `30s`).
    pub graceful_stop: Option<String>,
}

/// One stage of a ramp.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawStage {
    /// How long the ramp to `target` takes.
    pub duration: String,
    /// Rate (per `time_unit`) or VUs at the end of the stage.
    pub target: f64,
}

/// Client settings.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawHttp {
    /// `auto` (HTTP/1.1, or what TLS ALPN picks), `http1` or `http2` (h2c without TLS).
    pub version: Option<String>,
    /// Per-request timeout, headers and body (default `60s`).
    pub timeout: Option<String>,
    /// Accept any server certificate (test servers with self-signed certificates).
    #[serde(default)]
    pub insecure: bool,
    /// PEM file of extra CA certificates to trust.
    pub ca_file: Option<String>,
    /// HTTP status codes counted as expected (default 200-399, as k6).
    pub expected_statuses: Option<Vec<RawStatusRange>>,
}

/// A status, or an inclusive range of statuses.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum RawStatusRange {
    /// One status.
    One(u16),
    /// `{min, max}`, inclusive.
    Range {
        /// Lowest status.
        min: u16,
        /// Highest status.
        max: u16,
    },
}

/// An assertion on each response.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawCheck {
    /// Name as in k6's `check(res, {name: …})`.
    pub name: String,
    /// Status the response must have (one or a list).
    pub status: Option<RawStatuses>,
    /// Text the response body must contain.
    pub body_contains: Option<String>,
}

/// One status or several.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum RawStatuses {
    /// One status.
    One(u16),
    /// Any of these.
    Many(Vec<u16>),
}

/// A threshold in k6's short (`"p(95)<500"`) or long form.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum RawThreshold {
    /// `"p(95)<500"`.
    Short(String),
    /// `{threshold, abortOnFail, delayAbortEval}`.
    Long(RawThresholdLong),
}

/// k6's long form of a threshold.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawThresholdLong {
    /// The expression.
    pub threshold: String,
    /// Stop the run when crossed.
    #[serde(default, rename = "abortOnFail")]
    pub abort_on_fail: bool,
    /// Not before this much of the run (`10s`).
    #[serde(rename = "delayAbortEval")]
    pub delay_abort_eval: Option<String>,
}

/// A validated load run.
#[derive(Clone, Debug)]
pub struct LoadSpec {
    /// Request templates (at least one).
    pub requests: Vec<RequestTemplate>,
    /// The schedule.
    pub scenario: Scenario,
    /// Client settings.
    pub http: HttpOptions,
    /// Response checks.
    pub checks: Vec<Check>,
    /// Thresholds, in file order.
    pub thresholds: Vec<Threshold>,
    /// Seed of the template choice.
    pub seed: u64,
}

/// One request template.
#[derive(Clone, Debug)]
pub struct RequestTemplate {
    /// The `name` tag.
    pub name: String,
    /// Method.
    pub method: http::Method,
    /// Absolute `http` or `https` URL.
    pub url: http::Uri,
    /// Headers.
    pub headers: Vec<(http::HeaderName, http::HeaderValue)>,
    /// Body (empty for none).
    pub body: String,
    /// Relative weight, ≥ 1.
    pub weight: u32,
}

/// How the run is scheduled.
#[derive(Clone, Debug, PartialEq)]
pub enum Scenario {
    /// Open model: requests start on a schedule whatever the responses do.
    Open {
        /// Arrivals per second over time.
        rate: Profile,
        /// Connections (workers) sending the planned requests.
        connections: usize,
        /// Planned-but-unfinished requests beyond which new ones are dropped.
        max_in_flight: usize,
        /// Time left to requests in flight at the end.
        graceful_stop: Duration,
        /// The k6 executor it was written as.
        executor: &'static str,
    },
    /// Closed model: virtual users each send, wait for the response, think, and repeat.
    Closed {
        /// VUs over time (fractions are rounded down).
        vus: Profile,
        /// Pause after each response.
        think_time: Duration,
        /// Time left to requests in flight at the end.
        graceful_stop: Duration,
        /// The k6 executor it was written as.
        executor: &'static str,
    },
}

impl Scenario {
    /// Total planned length.
    pub fn duration(&self) -> Duration {
        match self {
            Self::Open { rate, .. } => rate.duration(),
            Self::Closed { vus, .. } => vus.duration(),
        }
    }

    /// The same scenario lasting `total` (its stages scaled in proportion).
    pub fn with_duration(&self, total: Duration) -> Scenario {
        let mut s = self.clone();
        match &mut s {
            Self::Open { rate, .. } => *rate = rate.stretched_to(total),
            Self::Closed { vus, .. } => *vus = vus.stretched_to(total),
        }
        s
    }
}

/// A value (arrival rate per second, or VUs) that starts at `start` and moves linearly to each
/// stage's target over the stage's duration; a constant is one stage from `x` to `x`.
#[derive(Clone, Debug, PartialEq)]
pub struct Profile {
    /// Value at time 0.
    pub start: f64,
    /// `(duration, target)` in order.
    pub stages: Vec<(Duration, f64)>,
}

impl Profile {
    /// A constant value for `duration`.
    pub fn constant(value: f64, duration: Duration) -> Self {
        Self {
            start: value,
            stages: vec![(duration, value)],
        }
    }

    /// The same shape lasting `total`: every stage's length scaled in proportion (a constant
    /// simply lasts `total`).
    pub fn stretched_to(&self, total: Duration) -> Profile {
        let old = self.duration().as_secs_f64();
        let stages = if old <= 0.0 {
            vec![(total, self.stages.last().map_or(self.start, |s| s.1))]
        } else {
            self.stages
                .iter()
                .map(|&(d, target)| (total.mul_f64(d.as_secs_f64() / old), target))
                .collect()
        };
        Profile {
            start: self.start,
            stages,
        }
    }

    /// Total length of the stages.
    pub fn duration(&self) -> Duration {
        self.stages.iter().map(|(d, _)| *d).sum()
    }

    /// The value at `t` from the start (the last target after the end).
    pub fn value_at(&self, t: Duration) -> f64 {
        let mut from = self.start;
        let mut elapsed = Duration::ZERO;
        for &(d, target) in &self.stages {
            if t < elapsed + d {
                let f = (t - elapsed).as_secs_f64() / d.as_secs_f64();
                return from + (target - from) * f;
            }
            elapsed += d;
            from = target;
        }
        from
    }

    /// The largest value reached.
    pub fn peak(&self) -> f64 {
        self.stages.iter().fold(self.start, |m, (_, t)| m.max(*t))
    }
}

/// Client settings.
#[derive(Clone, Debug, PartialEq)]
pub struct HttpOptions {
    /// Protocol choice.
    pub version: HttpVersion,
    /// Per-request timeout.
    pub timeout: Duration,
    /// Accept any certificate.
    pub insecure: bool,
    /// Extra CA certificates (PEM file path).
    pub ca_file: Option<String>,
    /// Statuses that are not failures, inclusive ranges.
    pub expected_statuses: Vec<(u16, u16)>,
}

impl Default for HttpOptions {
    fn default() -> Self {
        Self {
            version: HttpVersion::Auto,
            timeout: DEFAULT_TIMEOUT,
            insecure: false,
            ca_file: None,
            expected_statuses: vec![(200, 399)],
        }
    }
}

impl HttpOptions {
    /// Whether a response with `status` counts as expected (not `http_req_failed`).
    pub fn expected(&self, status: u16) -> bool {
        self.expected_statuses
            .iter()
            .any(|&(lo, hi)| (lo..=hi).contains(&status))
    }
}

/// Which HTTP version the client speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HttpVersion {
    /// HTTP/1.1, or HTTP/2 when TLS ALPN selects it.
    Auto,
    /// HTTP/1.1 only.
    Http1,
    /// HTTP/2 only (prior knowledge on cleartext).
    Http2,
}

/// A response check.
#[derive(Clone, Debug, PartialEq)]
pub struct Check {
    /// Its name.
    pub name: String,
    /// Allowed statuses (empty: any).
    pub statuses: Vec<u16>,
    /// Text the body must contain.
    pub body_contains: Option<String>,
}

impl LoadSpec {
    /// Parses and validates a load file; `origin` (its path) appears in errors.
    pub fn load(origin: &str, text: &str) -> Result<Self, ConfigError> {
        let doc = Document::parse(origin, text)?;
        let raw: RawLoad = doc.deserialize()?;
        Self::validate(&raw).map_err(|p| doc.errors(p.into_vec()))
    }

    /// Validates a raw load file, collecting every problem.
    pub fn validate(raw: &RawLoad) -> Result<Self, Problems> {
        let mut problems = Problems::default();
        let requests = requests(raw, &mut problems);
        let scenario = scenario(&raw.scenario, &mut problems);
        let http = http_options(&raw.http, &mut problems);
        let checks = raw
            .checks
            .iter()
            .enumerate()
            .map(|(i, c)| check(c, &index("checks", i), &mut problems))
            .collect();
        let thresholds = thresholds(&raw.thresholds, &mut problems);
        match scenario {
            Some(scenario) if problems.is_empty() => Ok(Self {
                requests,
                scenario,
                http,
                checks,
                thresholds,
                seed: raw.seed.unwrap_or(0),
            }),
            _ => Err(problems),
        }
    }
}

fn requests(raw: &RawLoad, problems: &mut Problems) -> Vec<RequestTemplate> {
    let target = raw.target.as_deref().and_then(|t| match absolute_url(t) {
        Ok(u) => Some(u),
        Err(e) => {
            problems.push("target", e);
            None
        }
    });
    if raw.requests.is_empty() {
        return match (&target, &raw.target) {
            (Some(url), _) => vec![RequestTemplate {
                name: url.to_string(),
                method: http::Method::GET,
                url: url.clone(),
                headers: Vec::new(),
                body: String::new(),
                weight: 1,
            }],
            (None, None) => {
                problems.push("target", "give a `target` URL or a list of `requests`");
                Vec::new()
            }
            (None, Some(_)) => Vec::new(),
        };
    }
    let mut out = Vec::new();
    for (i, r) in raw.requests.iter().enumerate() {
        let path = index("requests", i);
        let url = match (&r.url, &r.path, &target) {
            (Some(_), Some(_), _) => {
                problems.push(&path, "give `url` or `path`, not both");
                None
            }
            (Some(u), None, _) => absolute_url(u)
                .map_err(|e| problems.push(join(&path, "url"), e))
                .ok(),
            (None, p, Some(base)) => {
                let p = p.as_deref().unwrap_or("/");
                if !p.starts_with('/') {
                    problems.push(join(&path, "path"), format!("`{p}` must start with `/`"));
                    None
                } else {
                    let base = base.to_string();
                    absolute_url(&format!("{}{p}", base.trim_end_matches('/')))
                        .map_err(|e| problems.push(join(&path, "path"), e))
                        .ok()
                }
            }
            (None, _, None) => {
                if raw.target.is_none() {
                    problems.push(join(&path, "path"), "a `path` needs a `target`");
                }
                None
            }
        };
        let method = match &r.method {
            None => http::Method::GET,
            Some(m) => {
                http::Method::from_bytes(m.to_ascii_uppercase().as_bytes()).unwrap_or_else(|_| {
                    problems.push(join(&path, "method"), format!("`{m}` is not a method"));
                    http::Method::GET
                })
            }
        };
        let mut headers = Vec::new();
        for (k, v) in &r.headers {
            let hpath = join(&join(&path, "headers"), k);
            match (
                http::HeaderName::from_bytes(k.as_bytes()),
                http::HeaderValue::from_str(v),
            ) {
                (Ok(k), Ok(v)) => headers.push((k, v)),
                (Err(_), _) => problems.push(hpath, format!("`{k}` is not a header name")),
                (_, Err(_)) => problems.push(hpath, "not a valid header value"),
            }
        }
        if r.weight == Some(0) {
            problems.push(join(&path, "weight"), "must be >= 1");
        }
        if let Some(url) = url {
            let name = r.name.clone().unwrap_or_else(|| {
                let pq = url.path_and_query().map(|p| p.as_str()).unwrap_or("/");
                format!("{method} {pq}")
            });
            out.push(RequestTemplate {
                name,
                method,
                url,
                headers,
                body: r.body.clone().unwrap_or_default(),
                weight: r.weight.unwrap_or(1).max(1),
            });
        }
    }
    out
}

/// Parses an absolute `http`/`https` URL with a host.
pub fn absolute_url(text: &str) -> Result<http::Uri, String> {
    let uri: http::Uri = text
        .parse()
        .map_err(|e| format!("`{text}` is not a URL: {e}"))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        Some(other) => return Err(format!("`{text}`: scheme `{other}` is not http or https")),
        None => {
            return Err(format!(
                "`{text}` is not an absolute URL (http://host:port/…)"
            ));
        }
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(format!("`{text}` has no host"));
    }
    Ok(uri)
}

const EXECUTORS: &[&str] = &[
    "constant-arrival-rate",
    "ramping-arrival-rate",
    "constant-vus",
    "ramping-vus",
];

fn scenario(raw: &RawScenario, problems: &mut Problems) -> Option<Scenario> {
    let p = "scenario";
    let Some(executor) = EXECUTORS.iter().copied().find(|e| *e == raw.executor) else {
        problems.push(
            join(p, "executor"),
            format!(
                "unknown executor `{}` (use {})",
                raw.executor,
                EXECUTORS.join(", ")
            ),
        );
        return None;
    };
    let open = executor.ends_with("arrival-rate");
    let ramping = executor.starts_with("ramping");
    // Fields that belong to other executors are errors, not silently ignored.
    let present: [(&str, bool, bool); 10] = [
        (
            "rate",
            raw.rate.is_some(),
            executor == "constant-arrival-rate",
        ),
        ("time_unit", raw.time_unit.is_some(), open),
        ("duration", raw.duration.is_some(), !ramping),
        (
            "start_rate",
            raw.start_rate.is_some(),
            executor == "ramping-arrival-rate",
        ),
        (
            "start_vus",
            raw.start_vus.is_some(),
            executor == "ramping-vus",
        ),
        ("stages", !raw.stages.is_empty(), ramping),
        ("vus", raw.vus.is_some(), executor == "constant-vus"),
        ("think_time", raw.think_time.is_some(), !open),
        ("connections", raw.connections.is_some(), open),
        ("max_in_flight", raw.max_in_flight.is_some(), open),
    ];
    for (field, is_set, allowed) in present {
        if is_set && !allowed {
            problems.push(join(p, field), format!("does not apply to `{executor}`"));
        }
    }
    let dur = |field: &str, v: &Option<String>, problems: &mut Problems| -> Option<Duration> {
        v.as_deref()
            .map(|t| {
                parse_duration(t)
                    .map_err(|e| problems.push(join(p, field), e))
                    .ok()
            })
            .unwrap_or(None)
    };
    let time_unit = dur("time_unit", &raw.time_unit, problems).unwrap_or(Duration::from_secs(1));
    if time_unit.is_zero() {
        problems.push(join(p, "time_unit"), "must be > 0");
    }
    let per_second = |v: f64| v / time_unit.as_secs_f64().max(1e-9);
    let graceful_stop =
        dur("graceful_stop", &raw.graceful_stop, problems).unwrap_or(DEFAULT_GRACEFUL_STOP);
    let think_time = dur("think_time", &raw.think_time, problems).unwrap_or_default();
    let mut stages = Vec::new();
    for (i, s) in raw.stages.iter().enumerate() {
        let sp = index(&join(p, "stages"), i);
        let d = parse_duration(&s.duration)
            .map_err(|e| problems.push(join(&sp, "duration"), e))
            .unwrap_or_default();
        if !(s.target.is_finite() && s.target >= 0.0) {
            problems.push(join(&sp, "target"), "must be a number >= 0");
        }
        stages.push((
            d,
            if open {
                per_second(s.target)
            } else {
                s.target.floor()
            },
        ));
    }
    let profile = if ramping {
        if raw.stages.is_empty() {
            problems.push(
                join(p, "stages"),
                format!("`{executor}` needs at least one stage"),
            );
        }
        let start = if open {
            let r = raw.start_rate.unwrap_or(0.0);
            if !(r.is_finite() && r >= 0.0) {
                problems.push(join(p, "start_rate"), "must be a number >= 0");
            }
            per_second(r)
        } else {
            f64::from(raw.start_vus.unwrap_or(1))
        };
        Profile { start, stages }
    } else {
        let duration = match dur("duration", &raw.duration, problems) {
            Some(d) => d,
            None => {
                if raw.duration.is_none() {
                    problems.push(
                        join(p, "duration"),
                        format!("`{executor}` needs a duration"),
                    );
                }
                Duration::ZERO
            }
        };
        let value = if open {
            match raw.rate {
                Some(r) if r.is_finite() && r > 0.0 => per_second(r),
                Some(_) => {
                    problems.push(join(p, "rate"), "must be a number > 0");
                    0.0
                }
                None => {
                    problems.push(join(p, "rate"), format!("`{executor}` needs a rate"));
                    0.0
                }
            }
        } else {
            match raw.vus {
                Some(0) => {
                    problems.push(join(p, "vus"), "must be >= 1");
                    0.0
                }
                v => f64::from(v.unwrap_or(1)),
            }
        };
        Profile::constant(value, duration)
    };
    if profile.duration().is_zero() {
        problems.push(p, "the scenario lasts no time: give a duration > 0");
    }
    if open {
        let connections = raw.connections.unwrap_or(DEFAULT_CONNECTIONS as u32) as usize;
        if connections == 0 {
            problems.push(join(p, "connections"), "must be >= 1");
        }
        let max_in_flight = raw.max_in_flight.unwrap_or(DEFAULT_MAX_IN_FLIGHT as u32) as usize;
        if max_in_flight < connections {
            problems.push(
                join(p, "max_in_flight"),
                format!("must be >= connections ({connections})"),
            );
        }
        Some(Scenario::Open {
            rate: profile,
            connections,
            max_in_flight,
            graceful_stop,
            executor,
        })
    } else {
        Some(Scenario::Closed {
            vus: profile,
            think_time,
            graceful_stop,
            executor,
        })
    }
}

fn http_options(raw: &RawHttp, problems: &mut Problems) -> HttpOptions {
    let mut out = HttpOptions::default();
    match raw.version.as_deref() {
        None | Some("auto") => {}
        Some("http1") => out.version = HttpVersion::Http1,
        Some("http2") => out.version = HttpVersion::Http2,
        Some(v) => problems.push("http.version", format!("`{v}`: use auto, http1 or http2")),
    }
    if let Some(t) = &raw.timeout {
        match parse_duration(t) {
            Ok(d) if !d.is_zero() => out.timeout = d,
            Ok(_) => problems.push("http.timeout", "must be > 0"),
            Err(e) => problems.push("http.timeout", e),
        }
    }
    out.insecure = raw.insecure;
    out.ca_file = raw.ca_file.clone();
    if let Some(list) = &raw.expected_statuses {
        out.expected_statuses = list
            .iter()
            .map(|s| match *s {
                RawStatusRange::One(s) => (s, s),
                RawStatusRange::Range { min, max } => (min, max),
            })
            .collect();
        for (i, (lo, hi)) in out.expected_statuses.iter().enumerate() {
            if lo > hi || *lo < 100 || *hi > 999 {
                problems.push(
                    index("http.expected_statuses", i),
                    "statuses are 100..=999, min <= max",
                );
            }
        }
    }
    out
}

fn check(raw: &RawCheck, path: &str, problems: &mut Problems) -> Check {
    let statuses = match &raw.status {
        None => Vec::new(),
        Some(RawStatuses::One(s)) => vec![*s],
        Some(RawStatuses::Many(v)) => v.clone(),
    };
    if statuses.iter().any(|s| !(100..=999).contains(s)) {
        problems.push(join(path, "status"), "statuses are 100..=999");
    }
    if statuses.is_empty() && raw.body_contains.is_none() {
        problems.push(path, "a check needs `status` or `body_contains`");
    }
    Check {
        name: raw.name.clone(),
        statuses,
        body_contains: raw.body_contains.clone(),
    }
}

fn thresholds(
    raw: &BTreeMap<String, Vec<RawThreshold>>,
    problems: &mut Problems,
) -> Vec<Threshold> {
    let mut out = Vec::new();
    for (key, list) in raw {
        let kpath = join("thresholds", key);
        let (metric, kind) = match parse_metric(key) {
            Ok(m) => m,
            Err(e) => {
                problems.push(&kpath, e);
                continue;
            }
        };
        for (i, t) in list.iter().enumerate() {
            let tpath = index(&kpath, i);
            let (source, abort_on_fail, delay) = match t {
                RawThreshold::Short(s) => (s.clone(), false, None),
                RawThreshold::Long(l) => (
                    l.threshold.clone(),
                    l.abort_on_fail,
                    l.delay_abort_eval.as_deref(),
                ),
            };
            let delay_abort_eval = delay
                .map(|d| {
                    parse_duration(d).map_err(|e| problems.push(join(&tpath, "delayAbortEval"), e))
                })
                .transpose()
                .ok()
                .flatten()
                .unwrap_or_default();
            match parse_assertion(&source, kind) {
                Ok(assertion) => out.push(Threshold {
                    metric: metric.clone(),
                    kind,
                    source: source.trim().to_string(),
                    assertion,
                    abort_on_fail,
                    delay_abort_eval,
                }),
                Err(e) => problems.push(tpath, e),
            }
        }
    }
    out
}

/// Builds thresholds from CLI arguments of the form `metric=expression`
/// (`http_req_duration=p(95)<500`); a trailing `!` on the expression sets `abortOnFail`.
pub fn threshold_from_arg(arg: &str) -> Result<Threshold, String> {
    let (key, expr) = arg
        .split_once('=')
        .filter(|(k, _)| !k.contains(['<', '>', '!']))
        .ok_or_else(|| {
            format!("`{arg}`: expected metric=expression, e.g. http_req_duration=p(95)<500")
        })?;
    let (metric, kind) = parse_metric(key)?;
    let (expr, abort_on_fail) = match expr.trim().strip_suffix('!') {
        Some(e) => (e, true),
        None => (expr, false),
    };
    let assertion = parse_assertion(expr, kind)?;
    Ok(Threshold {
        metric,
        kind,
        source: expr.trim().to_string(),
        assertion,
        abort_on_fail,
        delay_abort_eval: Duration::ZERO,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::threshold::{Aggregation, Operator};

    const SEED_000: &str = "\
target: http://127.0.0.1:0
requests:
  - name: search
    path: /search?q=tekton
scenario:
  executor: constant-vus
  vus: 10
  duration: 30s
  think_time: 1s
checks:
  - name: status was 200
    status: 200
thresholds:
  http_req_failed: ['rate<0.01']
  http_req_duration: ['p(95)<500', {threshold: 'p(99)<1500', abortOnFail: true, delayAbortEval: 10s}]
";

    #[test]
    fn seed_000_k6_script_is_expressible() {
        let spec = LoadSpec::load("load.yaml", SEED_000).unwrap();
        assert_eq!(spec.requests.len(), 1);
        assert_eq!(spec.requests[0].url, "http://127.0.0.1:0/search?q=tekton");
        assert_eq!(spec.requests[0].name, "search");
        let Scenario::Closed {
            vus, think_time, ..
        } = &spec.scenario
        else {
            panic!()
        };
        assert_eq!(vus, &Profile::constant(10.0, Duration::from_secs(30)));
        assert_eq!(*think_time, Duration::from_secs(1));
        assert_eq!(spec.checks[0].statuses, vec![200]);
        assert_eq!(spec.thresholds.len(), 3);
        // Keys in sorted order, expressions in file order.
        let t = &spec.thresholds[0];
        assert_eq!(t.metric.name, "http_req_duration");
        assert_eq!(t.source, "p(95)<500");
        assert_eq!(spec.thresholds[2].source, "rate<0.01");
        let long = &spec.thresholds[1];
        assert!(long.abort_on_fail);
        assert_eq!(long.delay_abort_eval, Duration::from_secs(10));
        assert_eq!(long.assertion.aggregation, Aggregation::Percentile(99.0));
    }

    #[test]
    fn open_model_rates_are_per_second() {
        let text = "\
target: http://127.0.0.1:0
scenario:
  executor: ramping-arrival-rate
  start_rate: 60
  time_unit: 1m
  stages: [{duration: 10s, target: 600}, {duration: 5s, target: 0}]
  connections: 4
";
        let spec = LoadSpec::load("l.yaml", text).unwrap();
        let Scenario::Open {
            rate,
            connections,
            max_in_flight,
            ..
        } = &spec.scenario
        else {
            panic!()
        };
        assert_eq!(rate.start, 1.0);
        assert_eq!(
            rate.stages,
            vec![
                (Duration::from_secs(10), 10.0),
                (Duration::from_secs(5), 0.0)
            ]
        );
        assert_eq!((*connections, *max_in_flight), (4, DEFAULT_MAX_IN_FLIGHT));
        assert_eq!(rate.value_at(Duration::from_secs(5)), 5.5);
        assert_eq!(rate.value_at(Duration::from_millis(12_500)), 5.0);
        assert_eq!(rate.value_at(Duration::from_secs(99)), 0.0);
        assert_eq!(rate.peak(), 10.0);
    }

    #[test]
    fn every_problem_is_reported_with_its_line() {
        let text = "\
target: ftp://x
scenario:
  executor: constant-arrival-rate
  rate: -1
  duration: 10x
  vus: 3
http:
  version: http3
thresholds:
  http_req_duration: ['p(101)<5']
  http_req_failed: ['avg<1']
  bogus: ['count<1']
";
        let err = LoadSpec::load("l.yaml", text).unwrap_err().to_string();
        for needle in [
            "l.yaml:1:9: target: `ftp://x`: scheme `ftp`",
            "l.yaml:4:9: scenario.rate: must be a number > 0",
            "l.yaml:5:13: scenario.duration:",
            "l.yaml:6:8: scenario.vus: does not apply to `constant-arrival-rate`",
            "l.yaml:8:12: http.version:",
            "thresholds.http_req_duration[0]: `p(101)<5`: percentile 101 is outside 0..100",
            "thresholds.http_req_failed[0]: `avg<1`: `avg` does not apply to a Rate metric",
            "thresholds.bogus: unknown metric `bogus`",
        ] {
            assert!(err.contains(needle), "missing {needle:?} in\n{err}");
        }
    }

    #[test]
    fn unknown_fields_are_rejected() {
        let err = LoadSpec::load(
            "l.yaml",
            "target: http://a\nscenario: {executor: constant-vus, duration: 1s, vu: 3}\n",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("vu"), "{err}");
    }

    #[test]
    fn cli_thresholds() {
        let t = threshold_from_arg("http_req_duration{name:search}=p(99)<250!").unwrap();
        assert!(t.abort_on_fail);
        assert_eq!(t.metric.tags, vec![("name".into(), "search".into())]);
        assert_eq!(t.assertion.operator, Operator::Lt);
        assert!(threshold_from_arg("p(99)<250").is_err());
        assert!(threshold_from_arg("http_reqs=count>=10").is_ok());
    }
}
