//! SLOs as users write them: a PromQL query (or, later, a built-in SLI), a comparison and a
//! threshold, judged against a Prometheus (`shakedown slo check`), and the validated [`Slo`].
//!
//! ```yaml
//! prometheus: {url: http://127.0.0.1:9090, timeout: 10s, retries: 3}
//! slos:
//!   - name: p99-latency-ms
//!     query: histogram_quantile(0.99, sum(rate(envoy_cluster_upstream_rq_time_bucket{…}[{{window}}])) by (le))
//!     op: "<"
//!     threshold: 2500
//!     window: 2m          # replaces {{window}} in the query
//! ```
//!
//! No data, NaN, a rejected query or an unreachable server is never a pass: the verdict is
//! "could not judge", which a pipeline must treat as failure (seed 000: "no data counts as
//! failure").

use std::time::Duration;

use schemars::JsonSchema;
use serde::Deserialize;

use crate::duration::parse_duration;
use crate::source::{ConfigError, Document, Problems, index, join};

/// A file of SLOs as written.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawSloFile {
    /// The Prometheus to ask.
    pub prometheus: Option<RawPrometheus>,
    /// The SLOs.
    #[serde(default)]
    pub slos: Vec<RawSlo>,
}

/// Where and how to reach Prometheus.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawPrometheus {
    /// Base URL (`http://127.0.0.1:9090`, or with a path prefix).
    pub url: String,
    /// Per-attempt timeout (default `10s`).
    pub timeout: Option<String>,
    /// Attempts after the first on connection errors, timeouts and 5xx (default 2).
    pub retries: Option<u32>,
    /// File holding a bearer token.
    pub bearer_token_file: Option<String>,
    /// Basic auth user name.
    pub username: Option<String>,
    /// File holding the basic auth password.
    pub password_file: Option<String>,
}

/// One SLO as written.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawSlo {
    /// Name, in verdicts.
    pub name: String,
    /// PromQL returning one number (an instant vector of one series, or a scalar).
    pub query: String,
    /// `<`, `<=`, `>` or `>=`: how the value must compare to the threshold to be met.
    pub op: String,
    /// The bound.
    pub threshold: f64,
    /// Substituted for `{{window}}` in the query (`2m`).
    pub window: Option<String>,
}

/// A comparison an SLO value must satisfy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Comparison {
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
}

impl Comparison {
    /// Parses `<`, `<=`, `>`, `>=`.
    pub fn parse(text: &str) -> Result<Self, String> {
        match text.trim() {
            "<" => Ok(Self::Lt),
            "<=" => Ok(Self::Le),
            ">" => Ok(Self::Gt),
            ">=" => Ok(Self::Ge),
            other => Err(format!("`{other}`: use <, <=, > or >=")),
        }
    }

    /// Whether `value op threshold` holds (never for NaN).
    pub fn holds(self, value: f64, threshold: f64) -> bool {
        match self {
            Self::Lt => value < threshold,
            Self::Le => value <= threshold,
            Self::Gt => value > threshold,
            Self::Ge => value >= threshold,
        }
    }

    /// The operator as written.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Lt => "<",
            Self::Le => "<=",
            Self::Gt => ">",
            Self::Ge => ">=",
        }
    }
}

/// A validated SLO.
#[derive(Clone, Debug, PartialEq)]
pub struct Slo {
    /// Name.
    pub name: String,
    /// The query, with `{{window}}` substituted.
    pub query: String,
    /// The comparison.
    pub op: Comparison,
    /// The bound.
    pub threshold: f64,
}

/// Validated Prometheus settings.
#[derive(Clone, Debug, PartialEq)]
pub struct PrometheusTarget {
    /// Base URL.
    pub url: http::Uri,
    /// Per-attempt timeout.
    pub timeout: Duration,
    /// Retries after the first attempt.
    pub retries: u32,
    /// Bearer token file.
    pub bearer_token_file: Option<String>,
    /// Basic auth: user and password file.
    pub basic_auth: Option<(String, String)>,
}

/// A validated SLO file.
#[derive(Clone, Debug, PartialEq)]
pub struct SloFile {
    /// Prometheus settings, when the file gives them.
    pub prometheus: Option<PrometheusTarget>,
    /// The SLOs, in order.
    pub slos: Vec<Slo>,
}

impl SloFile {
    /// Parses and validates an SLO file; `origin` appears in errors.
    pub fn load(origin: &str, text: &str) -> Result<Self, ConfigError> {
        let doc = Document::parse(origin, text)?;
        let raw: RawSloFile = doc.deserialize()?;
        let mut problems = Problems::default();
        let prometheus = raw
            .prometheus
            .as_ref()
            .and_then(|p| prometheus(p, &mut problems));
        let slos = raw
            .slos
            .iter()
            .enumerate()
            .filter_map(|(i, s)| slo(s, &index("slos", i), &mut problems))
            .collect::<Vec<_>>();
        if raw.slos.is_empty() {
            problems.push("slos", "no SLO to judge");
        }
        if problems.is_empty() {
            Ok(Self { prometheus, slos })
        } else {
            Err(doc.errors(problems.into_vec()))
        }
    }
}

/// Validates one SLO; `path` names it in problems.
pub fn slo(raw: &RawSlo, path: &str, problems: &mut Problems) -> Option<Slo> {
    let before = problems.len();
    let op = Comparison::parse(&raw.op)
        .map_err(|e| problems.push(join(path, "op"), e))
        .ok();
    if !raw.threshold.is_finite() {
        problems.push(join(path, "threshold"), "must be a finite number");
    }
    if raw.query.trim().is_empty() {
        problems.push(join(path, "query"), "empty query");
    }
    let mut query = raw.query.clone();
    match &raw.window {
        Some(w) => match parse_duration(w) {
            Ok(d) if !d.is_zero() => query = query.replace("{{window}}", &prom_duration(d)),
            Ok(_) => problems.push(join(path, "window"), "must be > 0"),
            Err(e) => problems.push(join(path, "window"), e),
        },
        None if query.contains("{{window}}") => problems.push(
            join(path, "window"),
            "the query uses {{window}}: give a window",
        ),
        None => {}
    }
    (problems.len() == before).then(|| Slo {
        name: raw.name.clone(),
        query,
        op: op.unwrap_or(Comparison::Lt),
        threshold: raw.threshold,
    })
}

/// A duration in PromQL's syntax (`3d`, `6h`, `2m`, `90s`, `1500ms`).
pub fn prom_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms == 0 {
        "0s".into()
    } else if ms.is_multiple_of(86_400_000) {
        format!("{}d", ms / 86_400_000)
    } else if ms.is_multiple_of(3_600_000) {
        format!("{}h", ms / 3_600_000)
    } else if ms.is_multiple_of(60_000) {
        format!("{}m", ms / 60_000)
    } else if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

fn prometheus(raw: &RawPrometheus, problems: &mut Problems) -> Option<PrometheusTarget> {
    let url = match raw.url.parse::<http::Uri>() {
        Ok(u) if matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some() => Some(u),
        _ => {
            problems.push(
                "prometheus.url",
                format!("`{}` is not an http(s) URL", raw.url),
            );
            None
        }
    };
    let timeout = match &raw.timeout {
        None => Duration::from_secs(10),
        Some(t) => match parse_duration(t) {
            Ok(d) if !d.is_zero() => d,
            Ok(_) => {
                problems.push("prometheus.timeout", "must be > 0");
                Duration::ZERO
            }
            Err(e) => {
                problems.push("prometheus.timeout", e);
                Duration::ZERO
            }
        },
    };
    let basic_auth = match (&raw.username, &raw.password_file) {
        (Some(u), Some(p)) => Some((u.clone(), p.clone())),
        (None, None) => None,
        _ => {
            problems.push(
                "prometheus",
                "basic auth needs both `username` and `password_file`",
            );
            None
        }
    };
    if basic_auth.is_some() && raw.bearer_token_file.is_some() {
        problems.push("prometheus", "give a bearer token or basic auth, not both");
    }
    Some(PrometheusTarget {
        url: url?,
        timeout,
        retries: raw.retries.unwrap_or(2),
        bearer_token_file: raw.bearer_token_file.clone(),
        basic_auth,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEED_000: &str = r#"
prometheus: {url: "http://127.0.0.1:9090", timeout: 5s}
slos:
  - name: p99-latency-ms
    query: 'histogram_quantile(0.99, sum(rate(envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name="search"}[{{window}}])) by (le))'
    op: "<"
    threshold: 2500
    window: 2m
  - name: error-ratio
    query: 'sum(rate(envoy_cluster_upstream_rq_xx{envoy_response_code_class="5"}[2m])) / sum(rate(envoy_cluster_upstream_rq_total[2m]))'
    op: "<"
    threshold: 0.15
"#;

    #[test]
    fn seed_000s_slos() {
        let f = SloFile::load("slo.yaml", SEED_000).unwrap();
        assert_eq!(f.slos.len(), 2);
        assert!(f.slos[0].query.contains("[2m]"), "{}", f.slos[0].query);
        assert_eq!(
            (f.slos[0].op, f.slos[0].threshold),
            (Comparison::Lt, 2500.0)
        );
        assert_eq!(f.prometheus.unwrap().timeout, Duration::from_secs(5));
    }

    #[test]
    fn problems_are_located() {
        let bad = SEED_000
            .replace(
                "op: \"<\"\n    threshold: 2500",
                "op: \"=<\"\n    threshold: 2500",
            )
            .replace("window: 2m", "window: soon");
        let err = SloFile::load("slo.yaml", &bad).unwrap_err().to_string();
        assert!(err.contains("slo.yaml:6:9: slos[0].op: `=<`"), "{err}");
        assert!(err.contains("slos[0].window:"), "{err}");
        assert!(SloFile::load("s.yaml", "slos: []").is_err());
    }

    #[test]
    fn comparisons_never_hold_for_nan() {
        for op in [
            Comparison::Lt,
            Comparison::Le,
            Comparison::Gt,
            Comparison::Ge,
        ] {
            assert!(!op.holds(f64::NAN, 1.0));
        }
        assert!(Comparison::Le.holds(1.0, 1.0) && !Comparison::Lt.holds(1.0, 1.0));
        assert_eq!(prom_duration(Duration::from_secs(120)), "2m");
        assert_eq!(prom_duration(Duration::from_millis(1500)), "1500ms");
    }
}
