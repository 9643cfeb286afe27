//! The three ways a user can write an HTTP fault, as plain serde structs.
//!
//! * Shakedown's own form: Envoy's field names, friendlier values (`percentage: 10`, `200ms`) and a
//!   default percentage of 100 when none is written.
//! * `envoy:` an Envoy `HTTPFault` `typed_config` body, pasted as is (snake_case or protobuf JSON's
//!   lowerCamelCase, `@type` included, or the whole `{name, typed_config}` filter entry). An unset
//!   percentage means 0, as in Envoy.
//! * `istio:` a VirtualService `fault` block (`delay.fixedDelay`, `abort.httpStatus`,
//!   `percentage.value`). An unset percentage means no fault, as in Istio.

use serde::{Deserialize, Serialize};

use crate::header_match::RawHeaderMatcher;
use crate::percent::FractionalPercent;

/// `{}`: a oneof case with no fields (`header_delay: {}`).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Empty {}

/// A percentage: a number in 0–100, or Envoy's `{numerator, denominator}`.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(
    untagged,
    expecting = "a percentage: a number in 0-100, or {numerator, denominator}"
)]
pub enum RawPercentage {
    /// Percent, 0–100.
    Percent(f64),
    /// Envoy's `FractionalPercent`.
    Fraction(FractionalPercent),
}

/// A fault as written in a config file or an API body.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawFault {
    /// Unique name; faults are added, replaced and removed by name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Listeners (by name) whose traffic this fault applies to; empty means all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub listeners: Vec<String>,
    /// Remove the fault this long after it is applied, whoever else forgets to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<String>,
    /// Remove the fault at this RFC 3339 time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    /// Only requests routed to this cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_cluster: Option<String>,
    /// Only requests whose headers all match.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<RawHeaderMatcher>,
    /// Only requests whose `x-envoy-downstream-service-node` is one of these.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub downstream_nodes: Vec<String>,
    /// At most this many requests faulted at once; the rest pass untouched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_active_faults: Option<u32>,
    /// Delay before forwarding.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay: Option<RawDelay>,
    /// Answer locally instead of forwarding.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abort: Option<RawAbort>,
    /// Throttle the response body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_rate_limit: Option<RawRateLimit>,
    /// The fault as an Envoy `HTTPFault` body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub envoy: Option<RawEnvoyFault>,
    /// The fault as an Istio VirtualService `fault` block.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub istio: Option<RawIstioFault>,
}

/// Envoy's `FaultDelay`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawDelay {
    /// Fixed delay (`2s`, `200ms`).
    #[serde(default, alias = "fixedDelay", skip_serializing_if = "Option::is_none")]
    pub fixed_delay: Option<String>,
    /// Delay taken from the `x-envoy-fault-delay-request` header.
    #[serde(
        default,
        alias = "headerDelay",
        skip_serializing_if = "Option::is_none"
    )]
    pub header_delay: Option<Empty>,
    /// How many requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percentage: Option<RawPercentage>,
    /// Envoy's unused `FaultDelayType` (only `FIXED`); accepted and ignored.
    #[serde(default, rename = "type", skip_serializing)]
    pub delay_type: Option<serde_json::Value>,
}

/// Envoy's `FaultAbort`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawAbort {
    /// HTTP status, 200 ≤ x < 600.
    #[serde(default, alias = "httpStatus", skip_serializing_if = "Option::is_none")]
    pub http_status: Option<u32>,
    /// gRPC status code.
    #[serde(default, alias = "grpcStatus", skip_serializing_if = "Option::is_none")]
    pub grpc_status: Option<u32>,
    /// Status taken from the `x-envoy-fault-abort-*` headers.
    #[serde(
        default,
        alias = "headerAbort",
        skip_serializing_if = "Option::is_none"
    )]
    pub header_abort: Option<Empty>,
    /// How many requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percentage: Option<RawPercentage>,
}

/// Envoy's `FaultRateLimit`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawRateLimit {
    /// A fixed limit.
    #[serde(default, alias = "fixedLimit", skip_serializing_if = "Option::is_none")]
    pub fixed_limit: Option<RawFixedLimit>,
    /// Limit taken from the `x-envoy-fault-throughput-response` header.
    #[serde(
        default,
        alias = "headerLimit",
        skip_serializing_if = "Option::is_none"
    )]
    pub header_limit: Option<Empty>,
    /// How many requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percentage: Option<RawPercentage>,
}

/// Envoy's `FaultRateLimit.FixedLimit`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawFixedLimit {
    /// KiB per second, ≥ 1.
    #[serde(alias = "limitKbps")]
    pub limit_kbps: u64,
}

/// An Envoy `envoy.extensions.filters.http.fault.v3.HTTPFault`, as JSON/YAML.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawEnvoyFault {
    /// `type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault`.
    #[serde(default, rename = "@type", skip_serializing_if = "Option::is_none")]
    pub type_url: Option<String>,
    /// Filter name, when a whole `{name, typed_config}` filter entry is pasted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The body of a pasted filter entry.
    #[serde(
        default,
        alias = "typedConfig",
        skip_serializing_if = "Option::is_none"
    )]
    pub typed_config: Option<Box<RawEnvoyFault>>,
    /// `delay`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay: Option<RawDelay>,
    /// `abort`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abort: Option<RawAbort>,
    /// `upstream_cluster`.
    #[serde(
        default,
        alias = "upstreamCluster",
        skip_serializing_if = "Option::is_none"
    )]
    pub upstream_cluster: Option<String>,
    /// `headers`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<RawHeaderMatcher>,
    /// `downstream_nodes`.
    #[serde(
        default,
        alias = "downstreamNodes",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub downstream_nodes: Vec<String>,
    /// `max_active_faults`.
    #[serde(
        default,
        alias = "maxActiveFaults",
        skip_serializing_if = "Option::is_none"
    )]
    pub max_active_faults: Option<u32>,
    /// `response_rate_limit`.
    #[serde(
        default,
        alias = "responseRateLimit",
        skip_serializing_if = "Option::is_none"
    )]
    pub response_rate_limit: Option<RawRateLimit>,
    /// `disable_downstream_cluster_stats`.
    #[serde(
        default,
        alias = "disableDownstreamClusterStats",
        skip_serializing_if = "std::ops::Not::not"
    )]
    pub disable_downstream_cluster_stats: bool,
    /// Runtime key overrides. Shakedown has no runtime layer; see [`RawEnvoyFault::runtime_keys`].
    #[serde(
        default,
        alias = "delayPercentRuntime",
        skip_serializing_if = "Option::is_none"
    )]
    pub delay_percent_runtime: Option<String>,
    /// Runtime key override (ignored).
    #[serde(
        default,
        alias = "abortPercentRuntime",
        skip_serializing_if = "Option::is_none"
    )]
    pub abort_percent_runtime: Option<String>,
    /// Runtime key override (ignored).
    #[serde(
        default,
        alias = "delayDurationRuntime",
        skip_serializing_if = "Option::is_none"
    )]
    pub delay_duration_runtime: Option<String>,
    /// Runtime key override (ignored).
    #[serde(
        default,
        alias = "abortHttpStatusRuntime",
        skip_serializing_if = "Option::is_none"
    )]
    pub abort_http_status_runtime: Option<String>,
    /// Runtime key override (ignored).
    #[serde(
        default,
        alias = "maxActiveFaultsRuntime",
        skip_serializing_if = "Option::is_none"
    )]
    pub max_active_faults_runtime: Option<String>,
    /// Runtime key override (ignored).
    #[serde(
        default,
        alias = "responseRateLimitPercentRuntime",
        skip_serializing_if = "Option::is_none"
    )]
    pub response_rate_limit_percent_runtime: Option<String>,
    /// Runtime key override (ignored).
    #[serde(
        default,
        alias = "abortGrpcStatusRuntime",
        skip_serializing_if = "Option::is_none"
    )]
    pub abort_grpc_status_runtime: Option<String>,
}

impl RawEnvoyFault {
    /// The runtime-key fields that were set. Envoy reads them from its runtime layer, which
    /// Shakedown does not have: with no runtime override present Envoy uses the configured
    /// values, which is exactly what Shakedown does, so they are accepted and reported.
    pub fn runtime_keys(&self) -> Vec<&'static str> {
        [
            ("delay_percent_runtime", &self.delay_percent_runtime),
            ("abort_percent_runtime", &self.abort_percent_runtime),
            ("delay_duration_runtime", &self.delay_duration_runtime),
            ("abort_http_status_runtime", &self.abort_http_status_runtime),
            ("max_active_faults_runtime", &self.max_active_faults_runtime),
            (
                "response_rate_limit_percent_runtime",
                &self.response_rate_limit_percent_runtime,
            ),
            ("abort_grpc_status_runtime", &self.abort_grpc_status_runtime),
        ]
        .into_iter()
        .filter(|(_, v)| v.is_some())
        .map(|(k, _)| k)
        .collect()
    }
}

/// Istio's `HTTPFaultInjection`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawIstioFault {
    /// `delay`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay: Option<RawIstioDelay>,
    /// `abort`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abort: Option<RawIstioAbort>,
}

/// Istio's `HTTPFaultInjection.Delay`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawIstioDelay {
    /// `fixedDelay`, ≥ 1ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fixed_delay: Option<String>,
    /// Hidden in Istio and never translated by istiod; rejected with a reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exponential_delay: Option<String>,
    /// `percentage.value`, 0–100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percentage: Option<RawIstioPercent>,
    /// Deprecated integer percent, used when `percentage` is absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percent: Option<i32>,
}

/// Istio's `HTTPFaultInjection.Abort`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawIstioAbort {
    /// `httpStatus`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_status: Option<i64>,
    /// `grpcStatus`, by name (`UNAVAILABLE`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grpc_status: Option<String>,
    /// Hidden in Istio, not translated by istiod; rejected with a reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http2_error: Option<String>,
    /// `percentage.value`, 0–100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percentage: Option<RawIstioPercent>,
}

/// Istio's `Percent`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawIstioPercent {
    /// 0–100.
    #[serde(default)]
    pub value: f64,
}
