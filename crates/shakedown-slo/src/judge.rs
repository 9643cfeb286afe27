//! Verdicts: an SLO's query result compared with its threshold.
//!
//! Three outcomes, never two: met, violated, or could not judge. An empty vector (no series
//! matched — seed 000's "no data"), a NaN (a ratio of zero requests, a quantile of no
//! observations), a range vector or a string, a rejected query and an unreachable server are all
//! "could not judge", each with its own reason; none of them is ever a pass. A vector of several
//! series is met only if every series is.

use shakedown_load::Report;
use shakedown_model::slo::{Sli, Slo};

use crate::prom::{Labels, PromError, Prometheus, QueryResult};
use crate::store::Store;

/// How one SLO came out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The value satisfies the comparison.
    Met,
    /// It does not.
    Violated,
    /// No usable value.
    Unjudged,
}

/// One SLO's verdict, with what it was based on.
#[derive(Clone, Debug, PartialEq)]
pub struct Judgement {
    /// The SLO's name.
    pub name: String,
    /// The outcome.
    pub outcome: Outcome,
    /// The value compared (the worst series' for a vector of several).
    pub value: Option<f64>,
    /// `245 < 2500`, or why it could not be judged.
    pub detail: String,
}

/// Judges `slo` on a query result.
pub fn judge(slo: &Slo, result: Result<QueryResult, PromError>) -> Judgement {
    let unjudged = |detail: String| Judgement {
        name: slo.name.clone(),
        outcome: Outcome::Unjudged,
        value: None,
        detail,
    };
    let values: Vec<(Labels, f64)> = match result {
        Err(e) => return unjudged(e.to_string()),
        Ok(QueryResult::Scalar(_, v)) => vec![(Labels::new(), v)],
        Ok(QueryResult::Vector(v)) if v.is_empty() => {
            return unjudged("no data: the query returned an empty vector".into());
        }
        Ok(QueryResult::Vector(v)) => v.into_iter().map(|(l, _, v)| (l, v)).collect(),
        Ok(QueryResult::Matrix(_)) => {
            return unjudged(
                "the query returned a range vector; an SLO needs an instant value".into(),
            );
        }
        Ok(QueryResult::String(_, s)) => {
            return unjudged(format!("the query returned a string (`{s}`)"));
        }
    };
    if let Some((labels, _)) = values.iter().find(|(_, v)| v.is_nan()) {
        return unjudged(format!(
            "NaN{} (no samples to compute it from)",
            series(labels)
        ));
    }
    let op = slo.op;
    // The worst series: the one farthest on the wrong side of the threshold.
    let worst = values
        .iter()
        .max_by(|a, b| {
            let key = |v: f64| {
                if matches!(op.as_str(), "<" | "<=") {
                    v
                } else {
                    -v
                }
            };
            key(a.1).total_cmp(&key(b.1))
        })
        .cloned();
    let Some((labels, value)) = worst else {
        return unjudged("no data".into());
    };
    let met = values.iter().all(|(_, v)| op.holds(*v, slo.threshold));
    Judgement {
        name: slo.name.clone(),
        outcome: if met { Outcome::Met } else { Outcome::Violated },
        value: Some(value),
        detail: format!(
            "{value}{} {} {}",
            series(&labels),
            if met {
                op.as_str()
            } else {
                negate(op.as_str())
            },
            slo.threshold
        ),
    }
}

/// The operator that holds when `op` does not (for the comparisons an SLO allows).
fn negate(op: &str) -> &'static str {
    match op {
        "<" => ">=",
        "<=" => ">",
        ">" => "<=",
        ">=" => "<",
        "==" => "!=",
        _ => "==",
    }
}

fn series(labels: &Labels) -> String {
    if labels.is_empty() {
        return String::new();
    }
    let inner: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
    format!(" for {{{}}}", inner.join(","))
}

/// Judges a load SLI on a load run's report, exactly: the percentile from its HDR histogram
/// (of latency timed from the intended start), the ratio from its `http_req_failed` counts.
pub fn judge_load(slo: &Slo, report: &Report) -> Judgement {
    let s = &report.samples;
    let value = match slo.sli {
        Sli::LoadLatency(p) => (s.duration.count() > 0).then(|| s.duration.percentile_ms(p)),
        Sli::LoadErrorRatio => s.failed.value(),
        Sli::Query(_) => None,
    };
    let result = match value {
        Some(v) => Ok(QueryResult::Scalar(0.0, v)),
        None => Ok(QueryResult::Vector(Vec::new())),
    };
    judge(slo, result)
}

/// Judges a PromQL SLO on the embedded store at `t_ms`; a query outside the evaluator's subset
/// could not be judged, and says what it used.
pub fn judge_embedded(slo: &Slo, store: &Store, t_ms: i64) -> Judgement {
    match &slo.sli {
        Sli::Query(q) => match crate::eval::instant(store, q, t_ms) {
            Ok(result) => judge(slo, Ok(result)),
            Err(e) => Judgement {
                name: slo.name.clone(),
                outcome: Outcome::Unjudged,
                value: None,
                detail: e.to_string(),
            },
        },
        _ => Judgement {
            name: slo.name.clone(),
            outcome: Outcome::Unjudged,
            value: None,
            detail: "a load SLI is judged on the load run, not the store".into(),
        },
    }
}

/// Judges every SLO, in order: queries against `prom`, load SLIs on `load`; an SLO whose
/// source is missing could not be judged, and says which source it needed.
pub async fn check_all(
    prom: Option<&Prometheus>,
    load: Option<&Report>,
    slos: &[Slo],
) -> Vec<Judgement> {
    let mut out = Vec::new();
    for slo in slos {
        out.push(match (&slo.sli, prom, load) {
            (Sli::Query(q), Some(prom), _) => judge(slo, prom.query(q, None).await),
            (Sli::Query(_), None, _) => Judgement {
                name: slo.name.clone(),
                outcome: Outcome::Unjudged,
                value: None,
                detail: "a PromQL SLI needs a Prometheus (--prometheus)".into(),
            },
            (_, _, Some(report)) => judge_load(slo, report),
            (_, _, None) => Judgement {
                name: slo.name.clone(),
                outcome: Outcome::Unjudged,
                value: None,
                detail: "a load SLI needs the load run (--load-summary FILE)".into(),
            },
        });
    }
    out
}

/// The exit code of a set of verdicts: 0 all met, 1 one violated (a definite failure wins),
/// 2 none violated but one could not be judged.
pub fn exit_code(judgements: &[Judgement]) -> u8 {
    if judgements.iter().any(|j| j.outcome == Outcome::Violated) {
        1
    } else if judgements.iter().any(|j| j.outcome == Outcome::Unjudged) || judgements.is_empty() {
        2
    } else {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shakedown_model::threshold::Operator;

    fn slo(op: Operator, threshold: f64) -> Slo {
        Slo {
            name: "p99".into(),
            sli: Sli::Query("q".into()),
            op,
            threshold,
        }
    }

    fn vector(values: &[f64]) -> Result<QueryResult, PromError> {
        Ok(QueryResult::Vector(
            values
                .iter()
                .enumerate()
                .map(|(i, v)| {
                    (
                        Labels::from([("route".to_string(), i.to_string())]),
                        0.0,
                        *v,
                    )
                })
                .collect(),
        ))
    }

    #[test]
    fn met_violated_and_the_worst_series() {
        let j = judge(&slo(Operator::Lt, 2500.0), vector(&[245.0]));
        assert_eq!((j.outcome, j.value), (Outcome::Met, Some(245.0)));
        let j = judge(&slo(Operator::Lt, 2500.0), vector(&[245.0, 3000.0, 10.0]));
        assert_eq!((j.outcome, j.value), (Outcome::Violated, Some(3000.0)));
        assert_eq!(j.detail, "3000 for {route=\"1\"} >= 2500");
        let j = judge(
            &slo(Operator::Ge, 0.99),
            Ok(QueryResult::Scalar(0.0, 0.995)),
        );
        assert_eq!(j.outcome, Outcome::Met);
        let j = judge(&slo(Operator::Lt, 2500.0), vector(&[f64::INFINITY]));
        assert_eq!(j.outcome, Outcome::Violated);
    }

    #[test]
    fn nothing_to_judge_is_never_a_pass() {
        let cases = [
            (vector(&[]), "no data"),
            (vector(&[1.0, f64::NAN]), "NaN for {route=\"1\"}"),
            (Ok(QueryResult::Matrix(vec![])), "range vector"),
            (
                Err(PromError::BadData("parse error".into())),
                "query rejected (bad_data): parse error",
            ),
        ];
        for (result, needle) in cases {
            let j = judge(&slo(Operator::Lt, 1.0), result);
            assert_eq!(j.outcome, Outcome::Unjudged);
            assert!(j.detail.contains(needle), "{}", j.detail);
        }
    }

    #[test]
    fn embedded_queries_outside_the_subset_are_not_judged() {
        let store = Store::new(std::time::Duration::from_secs(60));
        store.ingest(1_000, "x 1\n");
        let mut s = slo(Operator::Lt, 5.0);
        s.sli = Sli::Query("x".into());
        assert_eq!(judge_embedded(&s, &store, 2_000).outcome, Outcome::Met);
        s.sli = Sli::Query("topk(1, x)".into());
        let j = judge_embedded(&s, &store, 2_000);
        assert_eq!(j.outcome, Outcome::Unjudged);
        assert!(
            j.detail.contains("not supported by the embedded evaluator"),
            "{}",
            j.detail
        );
    }

    #[test]
    fn exit_codes() {
        let j = |outcome| Judgement {
            name: String::new(),
            outcome,
            value: None,
            detail: String::new(),
        };
        assert_eq!(exit_code(&[j(Outcome::Met), j(Outcome::Met)]), 0);
        assert_eq!(exit_code(&[j(Outcome::Met), j(Outcome::Unjudged)]), 2);
        assert_eq!(exit_code(&[j(Outcome::Unjudged), j(Outcome::Violated)]), 1);
        assert_eq!(exit_code(&[]), 2);
    }
}
