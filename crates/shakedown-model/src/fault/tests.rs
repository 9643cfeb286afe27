use std::time::Duration;

use super::*;
use crate::percent::Denominator;
use crate::{Document, parse_fault};

/// Seed 000's EnvoyFilter `patch.value`, verbatim (camelCase fields, `@type`).
const SEED_000_ENVOY: &str = r#"
name: seed-000
envoy:
  name: envoy.filters.http.fault
  typed_config:
    "@type": type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault
    abort:
      httpStatus: 503
      percentage:
        numerator: 10
        denominator: HUNDRED
    delay:
      fixedDelay: 2s
      percentage:
        numerator: 70
        denominator: HUNDRED
"#;

const SEED_000_ISTIO: &str = r#"
name: seed-000
istio:
  delay:
    fixedDelay: 2s
    percentage: {value: 70}
  abort:
    httpStatus: 503
    percentage: {value: 10}
"#;

const SEED_000_NATIVE: &str = r#"
name: seed-000
delay: {fixed_delay: 2s, percentage: 70}
abort: {http_status: 503, percentage: 10}
"#;

fn fault(text: &str) -> HttpFault {
    parse_fault("t.yaml", text, None).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn the_three_forms_of_seed_000_mean_the_same_fault() {
    let envoy = fault(SEED_000_ENVOY);
    let istio = fault(SEED_000_ISTIO);
    let native = fault(SEED_000_NATIVE);
    for f in [&envoy, &istio, &native] {
        assert_eq!(
            f.delay.unwrap().source,
            DelaySource::Fixed(Duration::from_secs(2))
        );
        assert!((f.delay.unwrap().percentage.fraction() - 0.70).abs() < 1e-9);
        assert_eq!(f.abort.unwrap().source, AbortSource::Http(503));
        assert!((f.abort.unwrap().percentage.fraction() - 0.10).abs() < 1e-9);
    }
    assert_eq!(envoy.form, FaultForm::Envoy);
    assert_eq!(
        istio.abort.unwrap().percentage.denominator,
        Denominator::Million
    );
    assert!(envoy.same_behaviour(&native));
}

#[test]
fn unset_percentages_follow_each_form() {
    let native = fault("name: a\nabort: {http_status: 503}\n");
    assert_eq!(native.abort.unwrap().percentage, FractionalPercent::ALWAYS);
    let envoy = fault("name: a\nenvoy: {abort: {http_status: 503}}\n");
    assert_eq!(
        envoy.abort.unwrap().percentage.numerator,
        0,
        "Envoy: unset FractionalPercent is 0"
    );
    let istio = fault("name: a\nistio: {abort: {httpStatus: 503}}\n");
    assert_eq!(
        istio.abort.unwrap().percentage.numerator,
        0,
        "Istio: unset percentage aborts nothing"
    );
    let legacy = fault("name: a\nistio: {delay: {fixedDelay: 1s, percent: 25}}\n");
    assert_eq!(legacy.delay.unwrap().percentage.numerator, 25);
}

#[test]
fn header_controlled_and_rate_limit_forms() {
    let f = fault(
        "name: h\nenvoy:\n  abort: {header_abort: {}, percentage: {numerator: 100}}\n  delay: {header_delay: {}, percentage: {numerator: 100}}\n  response_rate_limit: {header_limit: {}, percentage: {numerator: 100}}\n  max_active_faults: 2\n",
    );
    assert_eq!(f.abort.unwrap().source, AbortSource::Header);
    assert_eq!(f.delay.unwrap().source, DelaySource::Header);
    assert_eq!(
        f.response_rate_limit.unwrap().source,
        RateLimitSource::Header
    );
    assert_eq!(f.max_active_faults, Some(2));
    let f = fault("name: r\nresponse_rate_limit: {fixed_limit: {limit_kbps: 16}}\n");
    assert_eq!(
        f.response_rate_limit.unwrap().source,
        RateLimitSource::Fixed(16)
    );
}

#[test]
fn grpc_status_forms() {
    assert_eq!(
        fault("name: g\nabort: {grpc_status: 14}\n")
            .abort
            .unwrap()
            .source,
        AbortSource::Grpc(14)
    );
    let istio =
        fault("name: g\nistio: {abort: {grpcStatus: UNAVAILABLE, percentage: {value: 100}}}\n");
    assert_eq!(istio.abort.unwrap().source, AbortSource::Grpc(14));
}

#[test]
fn bad_values_are_rejected_with_paths() {
    let cases = [
        (
            "name: a\nabort: {http_status: 199}\n",
            "abort.http_status: 199 is not in [200, 600)",
        ),
        (
            "name: a\ndelay: {fixed_delay: -1s}\n",
            "delay.fixed_delay: `-1s` is negative",
        ),
        (
            "name: a\ndelay: {fixed_delay: 1s, percentage: 101}\n",
            "delay.percentage: percentage 101 is outside 0-100",
        ),
        (
            "name: a\nabort: {http_status: 503, grpc_status: 14}\n",
            "set exactly one of `http_status`",
        ),
        ("name: a\n", "a fault needs `delay`, `abort`"),
        (
            "name: a\nabort: {http_status: 503}\nistio: {abort: {httpStatus: 503}}\n",
            "in one form",
        ),
        (
            "name: a\nistio: {delay: {fixedDelay: five seconds}}\n",
            "istio.delay.fixedDelay",
        ),
        (
            "name: a\nistio: {abort: {grpcStatus: NOPE}}\n",
            "not a gRPC status name",
        ),
        (
            "name: a\nenvoy: {\"@type\": type.googleapis.com/x.Y, abort: {http_status: 503}}\n",
            "expected type.googleapis.com/envoy",
        ),
        (
            "name: a\nabort: {http_status: 503, colour: red}\n",
            "unknown field `colour`",
        ),
        ("name: a b\nabort: {http_status: 503}\n", "not a valid name"),
        (
            "name: a\nttl: 0s\nabort: {http_status: 503}\n",
            "ttl must be greater than 0",
        ),
        (
            "name: a\nresponse_rate_limit: {fixed_limit: {limit_kbps: 0}}\n",
            "limit_kbps must be at least 1",
        ),
    ];
    for (text, want) in cases {
        let err = parse_fault("t.yaml", text, None).unwrap_err().to_string();
        assert!(
            err.contains(want),
            "input {text:?}\n got: {err}\nwant: {want}"
        );
        assert!(err.starts_with("t.yaml:"), "{err}");
    }
}

#[test]
fn the_url_name_wins_and_must_agree() {
    let f = parse_fault(
        "<api>",
        r#"{"abort": {"http_status": 503}}"#,
        Some("from-url"),
    )
    .unwrap();
    assert_eq!(f.name, "from-url");
    let err = parse_fault(
        "<api>",
        r#"{"name": "x", "abort": {"http_status": 503}}"#,
        Some("y"),
    )
    .unwrap_err();
    assert!(err.to_string().contains("URL names `y`"));
}

#[test]
fn lifetimes() {
    assert_eq!(
        fault("name: a\nttl: 30s\nabort: {http_status: 503}\n").lifetime,
        Lifetime::Ttl(Duration::from_secs(30))
    );
    let until =
        fault("name: a\nexpires_at: 2030-01-01T00:00:00Z\nabort: {http_status: 503}\n").lifetime;
    assert!(matches!(until, Lifetime::Until(_)));
}

#[test]
fn envoy_json_round_trips() {
    let f = fault(SEED_000_NATIVE);
    let body = serde_json::json!({"name": "again", "envoy": f.to_envoy_json()});
    let doc = Document::from_value("<test>", body);
    let raw: raw::RawFault = doc.deserialize().unwrap();
    let mut p = Problems::default();
    let back = HttpFault::from_raw(&raw, "", None, &mut p).unwrap();
    assert!(back.same_behaviour(&f), "{:?}", p.into_vec());
}
