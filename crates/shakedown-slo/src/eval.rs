//! PromQL evaluated in-process over the [`Store`], for the subset SLO queries use: selectors with
//! label matchers, range vectors, `rate`/`irate`/`increase`, `sum`/`avg`/`min`/`max`/`count`
//! `by`/`without`, `histogram_quantile`, `vector`/`scalar`, arithmetic and comparisons between
//! vectors and scalars (one-to-one matching, `on`/`ignoring`, `bool`), and the set operators
//! `and`, `or`, `unless` between vectors.
//!
//! Parsed with `promql-parser`; evaluated with Prometheus's own rules (the 5-minute lookback of
//! instant selectors, `rate`'s extrapolation to the window's edges and its counter-reset
//! handling, `histogram_quantile`'s interpolation and edge cases). Anything outside the subset —
//! `offset`, `@`, subqueries, other functions and aggregations, group modifiers —
//! is rejected with a message naming it, never answered with a guess.

use std::collections::BTreeMap;

use promql_parser::label::Matchers;
use promql_parser::parser::{
    self, AggregateExpr, BinaryExpr, Call, Expr, LabelModifier, VectorSelector,
};

use crate::prom::{Labels, QueryResult};
use crate::store::Store;

/// Prometheus's default lookback for instant selectors.
const LOOKBACK_MS: i64 = 5 * 60 * 1000;

/// Why a query was not evaluated.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum EvalError {
    /// The query does not parse.
    #[error("parse error: {0}")]
    Parse(String),
    /// The query uses something the embedded evaluator does not implement.
    #[error("not supported by the embedded evaluator: {0}")]
    Unsupported(String),
}

#[derive(Clone, Debug)]
enum Value {
    Scalar(f64),
    Vector(Vec<(Labels, f64)>),
    Matrix(Vec<(Labels, Vec<(i64, f64)>)>),
}

/// Evaluates `query` at `t_ms` (milliseconds since the Unix epoch).
pub fn instant(store: &Store, query: &str, t_ms: i64) -> Result<QueryResult, EvalError> {
    let expr = parser::parse(query).map_err(EvalError::Parse)?;
    let t = t_ms as f64 / 1000.0;
    Ok(match eval(store, &expr, t_ms)? {
        Value::Scalar(v) => QueryResult::Scalar(t, v),
        Value::Vector(v) => QueryResult::Vector(v.into_iter().map(|(l, v)| (l, t, v)).collect()),
        Value::Matrix(m) => QueryResult::Matrix(
            m.into_iter()
                .map(|(l, p)| {
                    (
                        l,
                        p.into_iter().map(|(t, v)| (t as f64 / 1000.0, v)).collect(),
                    )
                })
                .collect(),
        ),
    })
}

fn unsupported(what: impl Into<String>) -> EvalError {
    EvalError::Unsupported(what.into())
}

fn eval(store: &Store, expr: &Expr, t: i64) -> Result<Value, EvalError> {
    match expr {
        Expr::NumberLiteral(n) => Ok(Value::Scalar(n.val)),
        Expr::Paren(p) => eval(store, &p.expr, t),
        Expr::Unary(u) => Ok(match eval(store, &u.expr, t)? {
            Value::Scalar(v) => Value::Scalar(-v),
            Value::Vector(v) => {
                Value::Vector(v.into_iter().map(|(l, v)| (drop_name(l), -v)).collect())
            }
            Value::Matrix(_) => return Err(unsupported("unary minus on a range vector")),
        }),
        Expr::VectorSelector(vs) => {
            check_selector(vs)?;
            let series = store.select(
                |l| matches(&vs.matchers, vs.name.as_deref(), l),
                t - LOOKBACK_MS,
                t,
            );
            Ok(Value::Vector(
                series
                    .into_iter()
                    .filter_map(|(l, p)| p.last().map(|(_, v)| (l, *v)))
                    .collect(),
            ))
        }
        Expr::MatrixSelector(ms) => {
            check_selector(&ms.vs)?;
            let range = i64::try_from(ms.range.as_millis()).unwrap_or(i64::MAX);
            let vs = &ms.vs;
            Ok(Value::Matrix(store.select(
                |l| matches(&vs.matchers, vs.name.as_deref(), l),
                t - range,
                t,
            )))
        }
        Expr::Call(call) => function(store, call, t),
        Expr::Aggregate(agg) => aggregate(store, agg, t),
        Expr::Binary(bin) => binary(store, bin, t),
        Expr::Subquery(_) => Err(unsupported("subqueries")),
        Expr::StringLiteral(_) => Err(unsupported("string values")),
        Expr::Extension(_) => Err(unsupported("extensions")),
    }
}

fn check_selector(vs: &VectorSelector) -> Result<(), EvalError> {
    if vs.offset.is_some() {
        return Err(unsupported("`offset`"));
    }
    if vs.at.is_some() {
        return Err(unsupported("the `@` modifier"));
    }
    if !vs.matchers.or_matchers.is_empty() {
        return Err(unsupported("`or` between label matchers"));
    }
    Ok(())
}

fn matches(m: &Matchers, name: Option<&str>, labels: &Labels) -> bool {
    let get = |k: &str| labels.get(k).map(String::as_str).unwrap_or("");
    name.is_none_or(|n| get("__name__") == n) && m.matchers.iter().all(|m| m.is_match(get(&m.name)))
}

fn drop_name(mut l: Labels) -> Labels {
    l.remove("__name__");
    l
}

fn vector_arg(
    store: &Store,
    call: &Call,
    i: usize,
    t: i64,
) -> Result<Vec<(Labels, f64)>, EvalError> {
    match call
        .args
        .args
        .get(i)
        .map(|a| eval(store, a, t))
        .transpose()?
    {
        Some(Value::Vector(v)) => Ok(v),
        _ => Err(unsupported(format!(
            "{}: argument {} must be an instant vector",
            call.func.name,
            i + 1
        ))),
    }
}

fn function(store: &Store, call: &Call, t: i64) -> Result<Value, EvalError> {
    let name = call.func.name;
    match name {
        "rate" | "increase" | "irate" => {
            let Some(Expr::MatrixSelector(ms)) = call.args.args.first().map(|a| a.as_ref()) else {
                return Err(unsupported(format!(
                    "{name} of anything but a range selector"
                )));
            };
            let range_ms = i64::try_from(ms.range.as_millis()).unwrap_or(i64::MAX);
            let Value::Matrix(series) = eval(store, &Expr::MatrixSelector(ms.clone()), t)? else {
                return Err(unsupported(format!("{name}: expected a range vector")));
            };
            Ok(Value::Vector(
                series
                    .into_iter()
                    .filter_map(|(l, p)| {
                        let v = if name == "irate" {
                            instant_rate(&p)
                        } else {
                            extrapolated_rate(&p, t - range_ms, t, name == "rate")
                        };
                        v.map(|v| (drop_name(l), v))
                    })
                    .collect(),
            ))
        }
        "histogram_quantile" => {
            let phi = match call
                .args
                .args
                .first()
                .map(|a| eval(store, a, t))
                .transpose()?
            {
                Some(Value::Scalar(p)) => p,
                _ => {
                    return Err(unsupported(
                        "histogram_quantile: the quantile must be a number",
                    ));
                }
            };
            Ok(Value::Vector(histogram_quantile(
                phi,
                vector_arg(store, call, 1, t)?,
            )))
        }
        "vector" => match call
            .args
            .args
            .first()
            .map(|a| eval(store, a, t))
            .transpose()?
        {
            Some(Value::Scalar(v)) => Ok(Value::Vector(vec![(Labels::new(), v)])),
            _ => Err(unsupported("vector() of anything but a scalar")),
        },
        "scalar" => {
            let v = vector_arg(store, call, 0, t)?;
            Ok(Value::Scalar(if v.len() == 1 { v[0].1 } else { f64::NAN }))
        }
        other => Err(unsupported(format!("function {other}()"))),
    }
}

/// `rate`/`increase` as Prometheus computes them (promql/functions.go `extrapolatedRate`).
fn extrapolated_rate(
    p: &[(i64, f64)],
    range_start: i64,
    range_end: i64,
    is_rate: bool,
) -> Option<f64> {
    if p.len() < 2 {
        return None;
    }
    let (first_t, first_v) = p[0];
    let (last_t, last_v) = p[p.len() - 1];
    let mut result = last_v - first_v;
    // Counter resets: add back what was there before each drop.
    for w in p.windows(2) {
        if w[1].1 < w[0].1 {
            result += w[0].1;
        }
    }
    let secs = |ms: i64| ms as f64 / 1000.0;
    let mut to_start = secs(first_t - range_start);
    let to_end = secs(range_end - last_t);
    let sampled = secs(last_t - first_t);
    let average_gap = sampled / (p.len() - 1) as f64;
    // A counter cannot go below zero: do not extrapolate to before it would have been zero.
    if result > 0.0 && first_v >= 0.0 {
        let to_zero = sampled * (first_v / result);
        if to_zero < to_start {
            to_start = to_zero;
        }
    }
    let threshold = average_gap * 1.1;
    let mut interval = sampled;
    interval += if to_start < threshold {
        to_start
    } else {
        average_gap / 2.0
    };
    interval += if to_end < threshold {
        to_end
    } else {
        average_gap / 2.0
    };
    result *= interval / sampled;
    if is_rate {
        result /= secs(range_end - range_start);
    }
    Some(result)
}

/// `irate`: from the last two samples.
fn instant_rate(p: &[(i64, f64)]) -> Option<f64> {
    if p.len() < 2 {
        return None;
    }
    let (t1, v1) = p[p.len() - 2];
    let (t2, v2) = p[p.len() - 1];
    let delta = if v2 < v1 { v2 } else { v2 - v1 };
    let secs = (t2 - t1) as f64 / 1000.0;
    (secs > 0.0).then(|| delta / secs)
}

/// `histogram_quantile` over classic buckets (promql/quantile.go `bucketQuantile`).
pub fn histogram_quantile(phi: f64, v: Vec<(Labels, f64)>) -> Vec<(Labels, f64)> {
    let mut groups: BTreeMap<Labels, Vec<(f64, f64)>> = BTreeMap::new();
    for (mut labels, count) in v {
        let Some(le) = labels.remove("le") else {
            continue;
        };
        let upper = match le.as_str() {
            "+Inf" | "Inf" => f64::INFINITY,
            s => match s.parse::<f64>() {
                Ok(u) => u,
                Err(_) => continue,
            },
        };
        labels.remove("__name__");
        groups.entry(labels).or_default().push((upper, count));
    }
    groups
        .into_iter()
        .map(|(labels, buckets)| (labels, bucket_quantile(phi, buckets)))
        .collect()
}

fn bucket_quantile(phi: f64, mut buckets: Vec<(f64, f64)>) -> f64 {
    if phi.is_nan() {
        return f64::NAN;
    }
    if phi < 0.0 {
        return f64::NEG_INFINITY;
    }
    if phi > 1.0 {
        return f64::INFINITY;
    }
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    if buckets.last().is_none_or(|b| b.0 != f64::INFINITY) {
        return f64::NAN;
    }
    // Series with the same bound add up; counts that fall are raised to the running maximum.
    let mut merged: Vec<(f64, f64)> = Vec::with_capacity(buckets.len());
    for (upper, count) in buckets {
        match merged.last_mut() {
            Some(last) if last.0 == upper => last.1 += count,
            _ => merged.push((upper, count)),
        }
    }
    let mut max = f64::NEG_INFINITY;
    for b in &mut merged {
        if b.1 < max {
            b.1 = max;
        }
        max = b.1;
    }
    if merged.len() < 2 {
        return f64::NAN;
    }
    let observations = merged[merged.len() - 1].1;
    if observations == 0.0 || observations.is_nan() {
        return f64::NAN;
    }
    let mut rank = phi * observations;
    let b = merged
        .iter()
        .position(|(_, c)| *c >= rank)
        .unwrap_or(merged.len() - 1);
    if b == merged.len() - 1 {
        return merged[merged.len() - 2].0;
    }
    if b == 0 && merged[0].0 <= 0.0 {
        return merged[0].0;
    }
    let (mut start, end, mut count) = (0.0, merged[b].0, merged[b].1);
    if b > 0 {
        start = merged[b - 1].0;
        count -= merged[b - 1].1;
        rank -= merged[b - 1].1;
    }
    start + (end - start) * (rank / count)
}

fn aggregate(store: &Store, agg: &AggregateExpr, t: i64) -> Result<Value, EvalError> {
    let op = agg.op.to_string();
    if !matches!(op.as_str(), "sum" | "avg" | "min" | "max" | "count") {
        return Err(unsupported(format!("the {op} aggregation")));
    }
    let Value::Vector(v) = eval(store, &agg.expr, t)? else {
        return Err(unsupported(format!(
            "{op} of anything but an instant vector"
        )));
    };
    let key = |l: &Labels| -> Labels {
        match &agg.modifier {
            None => Labels::new(),
            Some(LabelModifier::Include(by)) => by
                .labels
                .iter()
                .filter_map(|k| l.get(k).map(|v| (k.clone(), v.clone())))
                .collect(),
            Some(LabelModifier::Exclude(without)) => l
                .iter()
                .filter(|(k, _)| k.as_str() != "__name__" && !without.labels.contains(k))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        }
    };
    let mut groups: BTreeMap<Labels, Vec<f64>> = BTreeMap::new();
    for (l, value) in v {
        groups.entry(key(&l)).or_default().push(value);
    }
    Ok(Value::Vector(
        groups
            .into_iter()
            .map(|(l, values)| {
                let n = values.len() as f64;
                let v = match op.as_str() {
                    "sum" => values.iter().sum(),
                    "avg" => values.iter().sum::<f64>() / n,
                    "min" => values
                        .iter()
                        .copied()
                        .fold(f64::NAN, |m, x| if m.is_nan() || x < m { x } else { m }),
                    "max" => values
                        .iter()
                        .copied()
                        .fold(f64::NAN, |m, x| if m.is_nan() || x > m { x } else { m }),
                    _ => n,
                };
                (l, v)
            })
            .collect(),
    ))
}

/// The labels two series are matched on: those `on(…)` names, all but `ignoring(…)`'s, or all
/// (without the metric name).
fn signature(matching: Option<&LabelModifier>, l: &Labels) -> Labels {
    match matching {
        Some(LabelModifier::Include(on)) => on
            .labels
            .iter()
            .filter_map(|k| l.get(k).map(|v| (k.clone(), v.clone())))
            .collect(),
        Some(LabelModifier::Exclude(ign)) => l
            .iter()
            .filter(|(k, _)| k.as_str() != "__name__" && !ign.labels.contains(k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        None => drop_name(l.clone()),
    }
}

/// `and`, `or`, `unless` between instant vectors, matching label sets (without the metric
/// name, or as `on` / `ignoring` say) — e.g. `sum(rate(errors[5m])) or vector(0)`, which turns
/// "no error series yet" into 0.
fn set_operation(store: &Store, bin: &BinaryExpr, op: &str, t: i64) -> Result<Value, EvalError> {
    let (Value::Vector(lv), Value::Vector(rv)) =
        (eval(store, &bin.lhs, t)?, eval(store, &bin.rhs, t)?)
    else {
        return Err(unsupported(format!(
            "`{op}` between anything but two instant vectors"
        )));
    };
    let matching = bin.modifier.as_ref().and_then(|m| m.matching.as_ref());
    let signature = |l: &Labels| signature(matching, l);
    let right: std::collections::BTreeSet<Labels> = rv.iter().map(|(l, _)| signature(l)).collect();
    let out = match op {
        "and" => lv
            .into_iter()
            .filter(|(l, _)| right.contains(&signature(l)))
            .collect(),
        "unless" => lv
            .into_iter()
            .filter(|(l, _)| !right.contains(&signature(l)))
            .collect(),
        _ => {
            let left: std::collections::BTreeSet<Labels> =
                lv.iter().map(|(l, _)| signature(l)).collect();
            let mut out = lv;
            out.extend(
                rv.into_iter()
                    .filter(|(l, _)| !left.contains(&signature(l))),
            );
            out
        }
    };
    Ok(Value::Vector(out))
}

fn binary(store: &Store, bin: &BinaryExpr, t: i64) -> Result<Value, EvalError> {
    let op = bin.op.to_string();
    if bin.op.is_set_operator() {
        return set_operation(store, bin, &op, t);
    }
    let comparison = bin.op.is_comparison_operator();
    let return_bool = bin.modifier.as_ref().is_some_and(|m| m.return_bool);
    let apply = |a: f64, b: f64| -> Option<f64> {
        let cmp = |holds: bool| {
            if return_bool {
                Some(if holds { 1.0 } else { 0.0 })
            } else {
                holds.then_some(a)
            }
        };
        match op.as_str() {
            "+" => Some(a + b),
            "-" => Some(a - b),
            "*" => Some(a * b),
            "/" => Some(a / b),
            "%" => Some(a % b),
            "^" => Some(a.powf(b)),
            "==" => cmp(a == b),
            "!=" => cmp(a != b),
            ">" => cmp(a > b),
            "<" => cmp(a < b),
            ">=" => cmp(a >= b),
            "<=" => cmp(a <= b),
            _ => None,
        }
    };
    if !comparison && !matches!(op.as_str(), "+" | "-" | "*" | "/" | "%" | "^") {
        return Err(unsupported(format!("the `{op}` operator")));
    }
    let lhs = eval(store, &bin.lhs, t)?;
    let rhs = eval(store, &bin.rhs, t)?;
    // Arithmetic drops the metric name; a filtering comparison keeps the series as it was.
    let out_labels = |l: Labels| {
        if comparison && !return_bool {
            l
        } else {
            drop_name(l)
        }
    };
    match (lhs, rhs) {
        (Value::Scalar(a), Value::Scalar(b)) => {
            if comparison && !return_bool {
                return Err(unsupported("comparison between two scalars without `bool`"));
            }
            Ok(Value::Scalar(apply(a, b).unwrap_or(f64::NAN)))
        }
        (Value::Vector(v), Value::Scalar(b)) => Ok(Value::Vector(
            v.into_iter()
                .filter_map(|(l, a)| apply(a, b).map(|r| (out_labels(l), r)))
                .collect(),
        )),
        (Value::Scalar(a), Value::Vector(v)) => Ok(Value::Vector(
            v.into_iter()
                .filter_map(|(l, b)| {
                    // A filtering comparison keeps the vector's own value.
                    let r = apply(a, b)?;
                    Some((
                        out_labels(l),
                        if comparison && !return_bool { b } else { r },
                    ))
                })
                .collect(),
        )),
        (Value::Vector(lv), Value::Vector(rv)) => {
            let modifier = bin.modifier.as_ref();
            if modifier.is_some_and(|m| !matches!(m.card, parser::VectorMatchCardinality::OneToOne))
            {
                return Err(unsupported("group_left / group_right"));
            }
            let matching = modifier.and_then(|m| m.matching.as_ref());
            let signature = |l: &Labels| signature(matching, l);
            let mut right: BTreeMap<Labels, f64> = BTreeMap::new();
            for (l, v) in rv {
                if right.insert(signature(&l), v).is_some() {
                    return Err(unsupported(
                        "many-to-many matching (duplicate series on the right side)",
                    ));
                }
            }
            let mut out = Vec::new();
            let mut seen = std::collections::BTreeSet::new();
            for (l, a) in lv {
                let sig = signature(&l);
                let Some(b) = right.get(&sig) else { continue };
                if !seen.insert(sig.clone()) {
                    return Err(unsupported(
                        "many-to-many matching (duplicate series on the left side)",
                    ));
                }
                if let Some(r) = apply(a, *b) {
                    let labels = match matching {
                        Some(LabelModifier::Include(_)) if !comparison || return_bool => sig,
                        _ => out_labels(l),
                    };
                    out.push((labels, r));
                }
            }
            Ok(Value::Vector(out))
        }
        _ => Err(unsupported("binary operations on range vectors")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn store_with(lines: &[(i64, &str)]) -> Store {
        let s = Store::new(Duration::from_secs(3600));
        for (t, text) in lines {
            s.ingest(*t, text);
        }
        s
    }

    fn one(store: &Store, q: &str, t: i64) -> f64 {
        match instant(store, q, t).unwrap() {
            QueryResult::Vector(v) if v.len() == 1 => v[0].2,
            QueryResult::Scalar(_, v) => v,
            other => panic!("{q}: {other:?}"),
        }
    }

    #[test]
    fn rate_extrapolates_like_prometheus() {
        // A counter growing 10/s, scraped every 10 s from t=5 s to t=55 s; window [0, 60].
        let lines: Vec<(i64, String)> = (0..6)
            .map(|i| (5_000 + i * 10_000, format!("c_total {}", 100 + i * 100)))
            .collect();
        let refs: Vec<(i64, &str)> = lines.iter().map(|(t, s)| (*t, s.as_str())).collect();
        let s = store_with(&refs);
        // 500 over 50 s sampled; 5 s to each edge (< 1.1 × 10 s) → extrapolated to 60 s: 600.
        assert!((one(&s, "increase(c_total[1m])", 60_000) - 600.0).abs() < 1e-9);
        assert!((one(&s, "rate(c_total[1m])", 60_000) - 10.0).abs() < 1e-9);
        assert!((one(&s, "irate(c_total[1m])", 60_000) - 10.0).abs() < 1e-9);
    }

    #[test]
    fn set_operators_match_label_sets() {
        let s = store_with(&[(
            10_000,
            "a{x=\"1\"} 1\na{x=\"2\"} 2\nb{x=\"2\"} 20\nb{x=\"3\"} 30",
        )]);
        let values = |q: &str| -> Vec<f64> {
            match instant(&s, q, 10_000).unwrap() {
                QueryResult::Vector(v) => v.into_iter().map(|x| x.2).collect(),
                other => panic!("{other:?}"),
            }
        };
        assert_eq!(values("a or b"), [1.0, 2.0, 30.0]);
        assert_eq!(values("a and b"), [2.0]);
        assert_eq!(values("a unless b"), [1.0]);
        assert_eq!(values("a or on() b"), [1.0, 2.0]);
        // The idiom for counters created on first use: no error series yet is 0, not "no data".
        assert_eq!(
            one(&s, "sum(rate(missing_total[1m])) or vector(0)", 10_000),
            0.0
        );
        assert!(instant(&s, "a or 1", 10_000).is_err());
    }

    #[test]
    fn counter_resets_and_the_zero_bound() {
        let s = store_with(&[(10_000, "c 50"), (20_000, "c 10"), (30_000, "c 30")]);
        // Increase 50→(reset)→10→30 = 10 + 50 + 20... as Prometheus: last − first + 50 = 30.
        // Sampled 20 s; start 10 s away (< 11 s threshold), end 0 → 30 × 30/20 = 45.
        assert!((one(&s, "increase(c[30s])", 30_000) - 45.0).abs() < 1e-9);
        // Starting near zero: no extrapolation to before the counter was zero.
        let s = store_with(&[(10_000, "c 1"), (20_000, "c 11"), (30_000, "c 21")]);
        // to_start = 10 s but to_zero = 20 × 1/20 = 1 s → interval 21 s → 20 × 21/20 = 21.
        assert!((one(&s, "increase(c[30s])", 30_000) - 21.0).abs() < 1e-9);
        assert!(
            matches!(instant(&s, "rate(c[5s])", 30_000).unwrap(), QueryResult::Vector(v) if v.is_empty()),
            "one sample: no rate"
        );
    }

    fn buckets(counts: &[(&str, f64)]) -> Vec<(Labels, f64)> {
        counts
            .iter()
            .map(|(le, c)| (Labels::from([("le".to_string(), le.to_string())]), *c))
            .collect()
    }

    #[test]
    fn histogram_quantile_edges() {
        // 50 % ≤ 0.1, 40 % ≤ 0.25, 9 % ≤ 0.5, 1 % ≤ 1 (the reference's observed figures).
        let b = buckets(&[
            ("0.1", 50.0),
            ("0.25", 90.0),
            ("0.5", 99.0),
            ("1", 100.0),
            ("+Inf", 100.0),
        ]);
        let q = |phi| histogram_quantile(phi, b.clone())[0].1;
        assert_eq!(q(0.99), 0.5);
        assert!((q(0.95) - 0.3888888888888889).abs() < 1e-12);
        assert_eq!(q(0.5), 0.1);
        assert!((q(0.999) - 0.95).abs() < 1e-9);
        assert_eq!(q(1.5), f64::INFINITY);
        assert_eq!(q(-0.1), f64::NEG_INFINITY);
        // In the +Inf bucket → the highest finite bound.
        let top = buckets(&[("1", 90.0), ("+Inf", 100.0)]);
        assert_eq!(histogram_quantile(0.99, top)[0].1, 1.0);
        // No observations, no +Inf bucket, a single bucket → NaN.
        assert!(
            histogram_quantile(0.9, buckets(&[("1", 0.0), ("+Inf", 0.0)]))[0]
                .1
                .is_nan()
        );
        assert!(
            histogram_quantile(0.9, buckets(&[("1", 5.0), ("2", 9.0)]))[0]
                .1
                .is_nan()
        );
        assert!(
            histogram_quantile(0.9, buckets(&[("+Inf", 9.0)]))[0]
                .1
                .is_nan()
        );
        // Non-monotonic counts are raised to the running maximum.
        let odd = buckets(&[("1", 10.0), ("2", 8.0), ("+Inf", 10.0)]);
        assert_eq!(histogram_quantile(0.5, odd)[0].1, 0.5);
    }

    #[test]
    fn aggregation_matching_and_empty_ratios() {
        let s = store_with(&[(
            1_000,
            "x{code=\"200\",route=\"a\"} 90\nx{code=\"500\",route=\"a\"} 10\nx{code=\"200\",route=\"b\"} 50\n",
        )]);
        assert_eq!(one(&s, "sum(x)", 2_000), 150.0);
        assert_eq!(
            one(&s, "sum(x{code=~\"5..\"}) / sum(x)", 2_000),
            10.0 / 150.0
        );
        match instant(&s, "sum by (route) (x)", 2_000).unwrap() {
            QueryResult::Vector(v) => {
                assert_eq!(v.iter().map(|r| r.2).collect::<Vec<_>>(), vec![100.0, 50.0])
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(one(&s, "count without (code) (x{route=\"a\"})", 2_000), 2.0);
        assert_eq!(one(&s, "max(x) - min(x)", 2_000), 80.0);
        assert_eq!(one(&s, "sum(x) > bool 100", 2_000), 1.0);
        // A ratio for a code that never occurs: empty, not 0 (as Prometheus answers).
        assert_eq!(
            instant(&s, "sum(x{code=\"503\"}) / sum(x)", 2_000).unwrap(),
            QueryResult::Vector(vec![])
        );
        // 0/0 is NaN.
        assert!(one(&s, "vector(0) / vector(0)", 2_000).is_nan());
        // Outside the lookback nothing is selected.
        assert_eq!(
            instant(&s, "x", 400_000).unwrap(),
            QueryResult::Vector(vec![])
        );
    }

    #[test]
    fn outside_the_subset_is_rejected_not_guessed() {
        let s = store_with(&[]);
        for (q, what) in [
            ("x offset 5m", "offset"),
            ("rate(x[5m])[10m:1m]", "subqueries"),
            ("topk(3, x)", "topk"),
            (
                "label_replace(x, \"a\", \"b\", \"c\", \"d\")",
                "label_replace",
            ),
            ("x / on(a) group_left y", "group_left"),
        ] {
            let e = instant(&s, q, 0).unwrap_err();
            assert!(
                matches!(&e, EvalError::Unsupported(m) if m.contains(what)),
                "{q}: {e}"
            );
        }
        assert!(matches!(
            instant(&s, "sum(rate(x[1m])", 0).unwrap_err(),
            EvalError::Parse(_)
        ));
    }
}
