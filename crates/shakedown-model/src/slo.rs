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
use crate::threshold::Operator;

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
    /// PEM file of CA certificates to trust for https, besides Mozilla's roots.
    pub ca_file: Option<String>,
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
    #[serde(default)]
    pub query: String,
    /// A built-in SLI instead of a query.
    pub sli: Option<RawSli>,
    /// `<`, `<=`, `>` or `>=`: how the value must compare to the threshold to be met.
    pub op: String,
    /// The bound.
    pub threshold: f64,
    /// Substituted for `{{window}}` in the query (`2m`).
    pub window: Option<String>,
}

/// A built-in SLI, for users who do not write PromQL.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawSli {
    /// `load` (the load generator's own HDR histograms, exact) or `cluster` (the proxy's
    /// Envoy metrics for one cluster, as PromQL).
    pub source: String,
    /// `latency` (ms) or `error_ratio` (0..1).
    pub kind: String,
    /// Percentile of a latency SLI (default 99).
    pub percentile: Option<f64>,
    /// The cluster's `envoy_cluster_name` (its stat name), for `source: cluster`.
    pub cluster: Option<String>,
}

/// What an SLO measures.
#[derive(Clone, Debug, PartialEq)]
pub enum Sli {
    /// A PromQL query.
    Query(String),
    /// The load run's own latency percentile, ms, from its HDR histogram.
    LoadLatency(f64),
    /// The load run's failed-request ratio (`http_req_failed`).
    LoadErrorRatio,
}

/// Parses an SLO's comparison: k6's operators (the same type, so both judge alike), but only
/// `<`, `<=`, `>`, `>=` — equality against a measured ratio or latency is never what is meant.
pub fn comparison(text: &str) -> Result<Operator, String> {
    match text.trim() {
        "<" => Ok(Operator::Lt),
        "<=" => Ok(Operator::Le),
        ">" => Ok(Operator::Gt),
        ">=" => Ok(Operator::Ge),
        other => Err(format!("`{other}`: use <, <=, > or >=")),
    }
}

/// A validated SLO.
#[derive(Clone, Debug, PartialEq)]
pub struct Slo {
    /// Name.
    pub name: String,
    /// What is measured (a query has `{{window}}` substituted).
    pub sli: Sli,
    /// The comparison.
    pub op: Operator,
    /// The bound.
    pub threshold: f64,
}

impl Slo {
    /// The PromQL query, for a query SLI.
    pub fn query(&self) -> Option<&str> {
        match &self.sli {
            Sli::Query(q) => Some(q),
            _ => None,
        }
    }
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
    /// Extra CA certificates (PEM file) for https.
    pub ca_file: Option<String>,
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
    let op = comparison(&raw.op)
        .map_err(|e| problems.push(join(path, "op"), e))
        .ok();
    if !raw.threshold.is_finite() {
        problems.push(join(path, "threshold"), "must be a finite number");
    }
    let mut query = match (&raw.sli, raw.query.trim().is_empty()) {
        (Some(_), false) => {
            problems.push(path, "give `query` or `sli`, not both");
            String::new()
        }
        (None, true) => {
            problems.push(join(path, "query"), "give a query (or a built-in `sli`)");
            String::new()
        }
        (None, false) => raw.query.clone(),
        (Some(sli), true) => match builtin(sli, &join(path, "sli"), problems) {
            Some(Sli::Query(q)) => q,
            Some(other) => {
                if raw.window.is_some() {
                    problems.push(join(path, "window"), "a load SLI covers the whole run");
                }
                return (problems.len() == before).then(|| Slo {
                    name: raw.name.clone(),
                    sli: other,
                    op: op.unwrap_or(Operator::Lt),
                    threshold: raw.threshold,
                });
            }
            None => String::new(),
        },
    };
    if raw.sli.is_some() && raw.window.is_none() && query.contains("{{window}}") {
        // Built-in cluster SLIs default to seed 000's window.
        query = query.replace("{{window}}", "2m");
    }
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
        sli: Sli::Query(query),
        op: op.unwrap_or(Operator::Lt),
        threshold: raw.threshold,
    })
}

/// A built-in SLI: the load's exact figures, or a cluster's as the PromQL an Envoy user writes
/// (seed 000's two queries), with `{{window}}` left for the SLO's window.
fn builtin(raw: &RawSli, path: &str, problems: &mut Problems) -> Option<Sli> {
    let percentile = raw.percentile.unwrap_or(99.0);
    if !(percentile > 0.0 && percentile < 100.0) {
        problems.push(join(path, "percentile"), "must be between 0 and 100");
        return None;
    }
    match (raw.source.as_str(), raw.kind.as_str()) {
        ("load", _) if raw.cluster.is_some() => {
            problems.push(join(path, "cluster"), "only for `source: cluster`");
            None
        }
        ("load", "latency") => Some(Sli::LoadLatency(percentile)),
        ("load", "error_ratio") => Some(Sli::LoadErrorRatio),
        ("cluster", kind @ ("latency" | "error_ratio")) => {
            let Some(cluster) = &raw.cluster else {
                problems.push(
                    join(path, "cluster"),
                    "`source: cluster` needs the cluster's stat name",
                );
                return None;
            };
            let c = cluster.replace('\\', "\\\\").replace('"', "\\\"");
            Some(Sli::Query(if kind == "latency" {
                format!(
                    "histogram_quantile({}, sum(rate(envoy_cluster_upstream_rq_time_bucket{{envoy_cluster_name=\"{c}\"}}[{{{{window}}}}])) by (le))",
                    percentile / 100.0
                )
            } else {
                format!(
                    "sum(rate(envoy_cluster_upstream_rq_xx{{envoy_cluster_name=\"{c}\", envoy_response_code_class=\"5\"}}[{{{{window}}}}])) / sum(rate(envoy_cluster_upstream_rq_total{{envoy_cluster_name=\"{c}\"}}[{{{{window}}}}]))"
                )
            }))
        }
        ("load" | "cluster", other) => {
            problems.push(
                join(path, "kind"),
                format!("`{other}`: use latency or error_ratio"),
            );
            None
        }
        (other, _) => {
            problems.push(
                join(path, "source"),
                format!("`{other}`: use load or cluster"),
            );
            None
        }
    }
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
        ca_file: raw.ca_file.clone(),
        basic_auth,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEED_000: &str = r#"
prometheus: {url: "http://127.0.0.1:0", timeout: 5s}
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
        assert!(
            f.slos[0].query().unwrap().contains("[2m]"),
            "{:?}",
            f.slos[0].sli
        );
        assert_eq!((f.slos[0].op, f.slos[0].threshold), (Operator::Lt, 2500.0));
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
    fn built_in_slis() {
        let text = r#"
slos:
  - {name: a, sli: {source: load, kind: latency, percentile: 95}, op: "<", threshold: 500}
  - {name: b, sli: {source: load, kind: error_ratio}, op: "<", threshold: 0.01}
  - {name: c, sli: {source: cluster, cluster: "outbound|80||search", kind: error_ratio}, op: "<", threshold: 0.15}
  - {name: d, sli: {source: cluster, cluster: "outbound|80||search", kind: latency}, op: "<", threshold: 2500, window: 5m}
"#;
        let f = SloFile::load("s.yaml", text).unwrap();
        assert_eq!(f.slos[0].sli, Sli::LoadLatency(95.0));
        assert_eq!(f.slos[1].sli, Sli::LoadErrorRatio);
        assert_eq!(
            f.slos[2].query().unwrap(),
            r#"sum(rate(envoy_cluster_upstream_rq_xx{envoy_cluster_name="outbound|80||search", envoy_response_code_class="5"}[2m])) / sum(rate(envoy_cluster_upstream_rq_total{envoy_cluster_name="outbound|80||search"}[2m]))"#
        );
        assert_eq!(
            f.slos[3].query().unwrap(),
            r#"histogram_quantile(0.99, sum(rate(envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name="outbound|80||search"}[5m])) by (le))"#
        );
        let bad = "slos:\n  - {name: a, sli: {source: db, kind: latency}, op: '<', threshold: 1}\n  - {name: b, query: up, sli: {source: load, kind: latency}, op: '<', threshold: 1}\n  - {name: c, sli: {source: cluster, kind: latency}, op: '<', threshold: 1}\n";
        let err = SloFile::load("s.yaml", bad).unwrap_err().to_string();
        for needle in [
            "slos[0].sli.source: `db`",
            "slos[1]: give `query` or `sli`",
            "slos[2].sli.cluster:",
        ] {
            assert!(err.contains(needle), "{needle}: {err}");
        }
    }

    #[test]
    fn comparisons_never_hold_for_nan() {
        for op in ["<", "<=", ">", ">="] {
            assert!(!comparison(op).unwrap().holds(f64::NAN, 1.0));
        }
        assert!(comparison("==").is_err() && comparison("!=").is_err());
        assert!(Operator::Le.holds(1.0, 1.0) && !Operator::Lt.holds(1.0, 1.0));
        assert_eq!(prom_duration(Duration::from_secs(120)), "2m");
        assert_eq!(prom_duration(Duration::from_millis(1500)), "1500ms");
    }
}
