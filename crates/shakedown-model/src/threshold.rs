//! k6's threshold language: `p(95)<500`, `rate<0.01`, `count>=100`, on a metric or a sub-metric
//! (`http_req_duration{name:search}`).
//!
//! The grammar is k6's (`metrics/thresholds_parser.go`): an aggregation, an operator, a number,
//! whitespace allowed between them. What k6 checks only when the run starts (a percentile outside
//! 0..=100, an aggregation the metric's type does not have) is checked here, at parse time, so a
//! CI job fails before any load is sent. Trend values are milliseconds, as in k6.

use std::fmt;
use std::time::Duration;

/// The four kinds of k6 metric; each allows its own aggregations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetricKind {
    /// Sums (`http_reqs`, `data_sent`): `count`, `rate` (per second).
    Counter,
    /// Last value with min and max (`vus`): `value`.
    Gauge,
    /// Fraction of non-zero samples (`http_req_failed`, `checks`): `rate`.
    Rate,
    /// Distribution of durations in ms (`http_req_duration`): `avg`, `min`, `max`, `med`, `p(N)`.
    Trend,
}

/// The built-in metrics Shakedown's load generator records, with k6's names and types.
/// `http_req_duration_uncorrected` is Shakedown's: the open model's latency measured from the
/// actual send instead of the intended one (what a closed-loop tool would report).
pub const BUILTIN_METRICS: &[(&str, MetricKind)] = &[
    ("http_reqs", MetricKind::Counter),
    ("iterations", MetricKind::Counter),
    ("dropped_iterations", MetricKind::Counter),
    ("data_sent", MetricKind::Counter),
    ("data_received", MetricKind::Counter),
    ("http_req_failed", MetricKind::Rate),
    ("checks", MetricKind::Rate),
    ("http_req_duration", MetricKind::Trend),
    ("http_req_duration_uncorrected", MetricKind::Trend),
    ("vus", MetricKind::Gauge),
    ("vus_max", MetricKind::Gauge),
];

/// The tags a sub-metric may select on.
pub const SUBMETRIC_TAGS: &[&str] = &["name", "method", "status", "expected_response", "check"];

/// The metrics whose samples carry tags, so that sub-metrics of them can be selected.
pub const SUBMETRIC_METRICS: &[&str] = &[
    "http_reqs",
    "http_req_failed",
    "http_req_duration",
    "http_req_duration_uncorrected",
    "checks",
];

/// What a threshold computes from a metric's samples.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Aggregation {
    /// Mean of a trend.
    Avg,
    /// Smallest value of a trend.
    Min,
    /// Largest value of a trend.
    Max,
    /// Median of a trend (= `p(50)`).
    Med,
    /// A percentile of a trend, 0..=100.
    Percentile(f64),
    /// Total of a counter.
    Count,
    /// Per second for a counter; fraction of non-zero samples for a rate metric.
    Rate,
    /// Last value of a gauge.
    Value,
}

impl fmt::Display for Aggregation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Avg => f.write_str("avg"),
            Self::Min => f.write_str("min"),
            Self::Max => f.write_str("max"),
            Self::Med => f.write_str("med"),
            Self::Percentile(p) => write!(f, "p({p})"),
            Self::Count => f.write_str("count"),
            Self::Rate => f.write_str("rate"),
            Self::Value => f.write_str("value"),
        }
    }
}

/// k6's comparison operators (`===` is accepted as a synonym of `==`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operator {
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
    /// `==` or `===`
    Eq,
    /// `!=`
    Ne,
}

impl Operator {
    /// The operator as written (`==` for both `==` and `===`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Lt => "<",
            Self::Le => "<=",
            Self::Gt => ">",
            Self::Ge => ">=",
            Self::Eq => "==",
            Self::Ne => "!=",
        }
    }

    /// Whether `left op right` holds (never for NaN, except `!=`).
    pub fn holds(self, left: f64, right: f64) -> bool {
        match self {
            Self::Lt => left < right,
            Self::Le => left <= right,
            Self::Gt => left > right,
            Self::Ge => left >= right,
            Self::Eq => left == right,
            Self::Ne => left != right,
        }
    }
}

/// One parsed assertion, such as `p(99.9) <= 2000`.
#[derive(Clone, Debug, PartialEq)]
pub struct Assertion {
    /// What is computed.
    pub aggregation: Aggregation,
    /// How it is compared.
    pub operator: Operator,
    /// The bound.
    pub value: f64,
}

/// A metric, or a sub-metric selected by tags: `http_req_duration{name:search,status:200}`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MetricRef {
    /// The metric's name.
    pub name: String,
    /// `(tag, value)` pairs, sorted by tag; empty for the whole metric.
    pub tags: Vec<(String, String)>,
}

impl fmt::Display for MetricRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)?;
        if !self.tags.is_empty() {
            let tags: Vec<String> = self.tags.iter().map(|(k, v)| format!("{k}:{v}")).collect();
            write!(f, "{{{}}}", tags.join(","))?;
        }
        Ok(())
    }
}

/// One threshold of a load run: a metric, an assertion, and what to do when it is crossed.
#[derive(Clone, Debug, PartialEq)]
pub struct Threshold {
    /// The metric (or sub-metric) it is about.
    pub metric: MetricRef,
    /// The kind of that metric.
    pub kind: MetricKind,
    /// The expression as written (`p(95)<500`), used as its name in summaries.
    pub source: String,
    /// The parsed expression.
    pub assertion: Assertion,
    /// Stop the run as soon as this threshold is crossed (k6's `abortOnFail`).
    pub abort_on_fail: bool,
    /// Do not abort before this much of the run has passed (k6's `delayAbortEval`).
    pub delay_abort_eval: Duration,
}

/// Parses a metric key such as `http_req_duration{name:search}` and returns the metric's kind.
pub fn parse_metric(key: &str) -> Result<(MetricRef, MetricKind), String> {
    let key = key.trim();
    let (name, tags) = match key.find('{') {
        None => (key, Vec::new()),
        Some(open) => {
            let inner = key[open + 1..]
                .strip_suffix('}')
                .ok_or_else(|| format!("`{key}`: a sub-metric's tags end with `}}`"))?;
            let mut tags = Vec::new();
            for pair in inner.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                let (tag, value) = pair
                    .split_once(':')
                    .ok_or_else(|| format!("`{key}`: `{pair}` is not `tag:value`"))?;
                let tag = tag.trim();
                if !SUBMETRIC_TAGS.contains(&tag) {
                    return Err(format!(
                        "`{key}`: unknown tag `{tag}` (known: {})",
                        SUBMETRIC_TAGS.join(", ")
                    ));
                }
                tags.push((tag.to_string(), value.trim().to_string()));
            }
            if tags.is_empty() {
                return Err(format!("`{key}`: empty tag list"));
            }
            tags.sort();
            let name = key[..open].trim();
            if !SUBMETRIC_METRICS.contains(&name) {
                return Err(format!(
                    "`{key}`: sub-metrics are kept for {} only",
                    SUBMETRIC_METRICS.join(", ")
                ));
            }
            (name, tags)
        }
    };
    let kind = BUILTIN_METRICS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, k)| *k)
        .ok_or_else(|| {
            let known: Vec<&str> = BUILTIN_METRICS.iter().map(|(n, _)| *n).collect();
            format!("unknown metric `{name}` (known: {})", known.join(", "))
        })?;
    let metric = MetricRef {
        name: name.to_string(),
        tags,
    };
    Ok((metric, kind))
}

/// Parses one k6 assertion and checks that the aggregation exists for `kind`.
pub fn parse_assertion(text: &str, kind: MetricKind) -> Result<Assertion, String> {
    let s = text.trim();
    let (aggregation, rest) = parse_aggregation(s)?;
    let rest = rest.trim_start();
    let (operator, rest) = [
        ("===", Operator::Eq),
        ("==", Operator::Eq),
        ("!=", Operator::Ne),
        ("<=", Operator::Le),
        (">=", Operator::Ge),
        ("<", Operator::Lt),
        (">", Operator::Gt),
    ]
    .iter()
    .find_map(|(token, op)| rest.strip_prefix(token).map(|r| (*op, r)))
    .ok_or_else(|| {
        format!("`{text}`: expected an operator (<, <=, >, >=, ==, !=) after `{aggregation}`")
    })?;
    let number = rest.trim();
    let value: f64 = number
        .parse()
        .ok()
        .filter(|v: &f64| v.is_finite())
        .ok_or_else(|| format!("`{text}`: `{number}` is not a number"))?;
    let allowed = match kind {
        MetricKind::Counter => matches!(aggregation, Aggregation::Count | Aggregation::Rate),
        MetricKind::Gauge => matches!(aggregation, Aggregation::Value),
        MetricKind::Rate => matches!(aggregation, Aggregation::Rate),
        MetricKind::Trend => matches!(
            aggregation,
            Aggregation::Avg
                | Aggregation::Min
                | Aggregation::Max
                | Aggregation::Med
                | Aggregation::Percentile(_)
        ),
    };
    if !allowed {
        let hint = match kind {
            MetricKind::Counter => "count, rate",
            MetricKind::Gauge => "value",
            MetricKind::Rate => "rate",
            MetricKind::Trend => "avg, min, max, med, p(N)",
        };
        return Err(format!(
            "`{text}`: `{aggregation}` does not apply to a {kind:?} metric (use {hint})"
        ));
    }
    Ok(Assertion {
        aggregation,
        operator,
        value,
    })
}

fn parse_aggregation(s: &str) -> Result<(Aggregation, &str), String> {
    if let Some(rest) = s.strip_prefix("p(") {
        let close = rest
            .find(')')
            .ok_or_else(|| format!("`{s}`: `p(` without `)`"))?;
        let p: f64 = rest[..close]
            .trim()
            .parse()
            .map_err(|_| format!("`{s}`: `{}` is not a percentile", &rest[..close]))?;
        if !(0.0..=100.0).contains(&p) {
            return Err(format!("`{s}`: percentile {p} is outside 0..100"));
        }
        return Ok((Aggregation::Percentile(p), &rest[close + 1..]));
    }
    let end = s
        .find(|c: char| !c.is_ascii_alphabetic())
        .unwrap_or(s.len());
    let aggregation = match &s[..end] {
        "avg" => Aggregation::Avg,
        "min" => Aggregation::Min,
        "max" => Aggregation::Max,
        "med" => Aggregation::Med,
        "count" => Aggregation::Count,
        "rate" => Aggregation::Rate,
        "value" => Aggregation::Value,
        other => {
            return Err(format!(
                "`{s}`: unknown aggregation `{other}` (avg, min, max, med, p(N), count, rate, value)"
            ));
        }
    };
    Ok((aggregation, &s[end..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trend(text: &str) -> Result<Assertion, String> {
        parse_assertion(text, MetricKind::Trend)
    }

    #[test]
    fn parses_k6_forms() {
        let a = trend("p(95)<500").unwrap();
        assert_eq!(a.aggregation, Aggregation::Percentile(95.0));
        assert_eq!(a.operator, Operator::Lt);
        assert_eq!(a.value, 500.0);
        let a = trend("p(99.9) <= 2000").unwrap();
        assert_eq!(a.aggregation, Aggregation::Percentile(99.9));
        assert_eq!(a.operator, Operator::Le);
        assert_eq!(trend("avg<200").unwrap().aggregation, Aggregation::Avg);
        assert_eq!(trend("med < 1.5").unwrap().value, 1.5);
        assert_eq!(trend("max===3").unwrap().operator, Operator::Eq);
        let r = parse_assertion("rate<0.01", MetricKind::Rate).unwrap();
        assert_eq!((r.aggregation, r.value), (Aggregation::Rate, 0.01));
        let c = parse_assertion("count >= 100", MetricKind::Counter).unwrap();
        assert_eq!(
            (c.aggregation, c.operator),
            (Aggregation::Count, Operator::Ge)
        );
        assert_eq!(
            parse_assertion("value!=0", MetricKind::Gauge)
                .unwrap()
                .operator,
            Operator::Ne
        );
    }

    #[test]
    fn rejects_what_k6_rejects_before_the_run() {
        for bad in [
            "p(101)<5",
            "p(-1)<5",
            "p(x)<5",
            "p(95<5",
            "p(95)",
            "p(95)<",
            "p(95)<abc",
            "p(95)~5",
            "mean<5",
            "rate<0.1",
            "count<3",
            "p(95)<inf",
        ] {
            assert!(trend(bad).is_err(), "{bad} should be rejected");
        }
        assert!(parse_assertion("avg<1", MetricKind::Rate).is_err());
        assert!(parse_assertion("p(90)<1", MetricKind::Counter).is_err());
    }

    #[test]
    fn metric_keys_and_submetrics() {
        let (m, k) = parse_metric("http_req_duration").unwrap();
        assert_eq!(
            (m.name.as_str(), k),
            ("http_req_duration", MetricKind::Trend)
        );
        let (m, _) = parse_metric("http_req_duration{status:200, name:search}").unwrap();
        assert_eq!(
            m.tags,
            vec![
                ("name".into(), "search".into()),
                ("status".into(), "200".into())
            ]
        );
        assert_eq!(m.to_string(), "http_req_duration{name:search,status:200}");
        assert!(
            parse_metric("http_req_durations")
                .unwrap_err()
                .contains("unknown metric")
        );
        assert!(
            parse_metric("http_reqs{colour:red}")
                .unwrap_err()
                .contains("unknown tag")
        );
        assert!(parse_metric("http_reqs{name:x").is_err());
        assert!(parse_metric("http_reqs{}").is_err());
        assert!(
            parse_metric("vus{name:x}")
                .unwrap_err()
                .contains("sub-metrics")
        );
    }

    #[test]
    fn operators_compare() {
        assert!(Operator::Lt.holds(1.0, 2.0) && !Operator::Lt.holds(2.0, 2.0));
        assert!(Operator::Le.holds(2.0, 2.0) && Operator::Ge.holds(2.0, 2.0));
        assert!(Operator::Ne.holds(1.0, 2.0) && Operator::Eq.holds(2.0, 2.0));
        assert!(!Operator::Lt.holds(f64::NAN, 2.0) && !Operator::Gt.holds(f64::NAN, 2.0));
    }
}
