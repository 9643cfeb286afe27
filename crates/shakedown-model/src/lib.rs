//! Shakedown's configuration model: what users write, and the validated types the rest of
//! Shakedown runs on.
//!
//! Two levels, as in vector's config compiler: plain serde structs with `deny_unknown_fields`
//! for what users write (`Raw*`), converted at the edge into validated domain types. Every error
//! of a document is reported at once, each with its `file:line:column` and field path
//! ([`source`]). This crate does no IO.

pub mod duration;
pub mod experiment;
pub mod fault;
pub mod header_match;
pub mod load;
pub mod percent;
pub mod proxy;
pub mod slo;
pub mod source;
pub mod threshold;
pub mod toxic;

pub use fault::{
    Abort, AbortSource, Delay, DelaySource, FaultForm, HttpFault, Lifetime, RateLimit,
    RateLimitSource,
};
pub use load::{LoadSpec, Profile, Scenario};
pub use percent::{Denominator, FractionalPercent};
pub use proxy::{Cluster, Listener, ProxyConfig, Route, UpstreamProtocol};
pub use source::{ConfigError, Diagnostic, Document, Problems};
pub use toxic::{RawToxic, Stream, TcpProxySpec, Toxic, ToxicKind};

/// The JSON Schema of the proxy config file, derived from the raw types (the file format is a
/// public API; `schema/proxy-config.schema.json` is this, committed).
pub fn proxy_config_schema() -> serde_json::Value {
    serde_json::to_value(schemars::schema_for!(proxy::RawProxyConfig)).unwrap_or_default()
}

/// The JSON Schema of a load file (`shakedown load --config`).
pub fn load_schema() -> serde_json::Value {
    serde_json::to_value(schemars::schema_for!(load::RawLoad)).unwrap_or_default()
}

/// The JSON Schema of an SLO file (`shakedown slo check --file`).
pub fn slo_schema() -> serde_json::Value {
    serde_json::to_value(schemars::schema_for!(slo::RawSloFile)).unwrap_or_default()
}

/// The JSON Schema of an experiment file (`shakedown run`).
pub fn experiment_schema() -> serde_json::Value {
    experiment::schema()
}

/// The JSON Schema of one fault (a control API body or a `faults:` entry).
pub fn fault_schema() -> serde_json::Value {
    serde_json::to_value(schemars::schema_for!(fault::raw::RawFault)).unwrap_or_default()
}

/// Parses one fault from an API body (JSON) or a YAML snippet; `name` comes from the URL.
pub fn parse_fault(origin: &str, text: &str, name: Option<&str>) -> Result<HttpFault, ConfigError> {
    let doc = Document::parse(origin, text)?;
    let raw: fault::raw::RawFault = doc.deserialize()?;
    let mut problems = Problems::default();
    match HttpFault::from_raw(&raw, "", name, &mut problems) {
        Some(f) if problems.is_empty() => Ok(f),
        _ => Err(doc.errors(problems.into_vec())),
    }
}

/// Parses one toxic from a Toxiproxy API body (JSON).
pub fn parse_toxic(origin: &str, text: &str) -> Result<Toxic, ConfigError> {
    let doc = Document::parse(origin, text)?;
    let raw: toxic::RawToxic = doc.deserialize()?;
    let mut problems = Problems::default();
    match Toxic::from_raw(&raw, "", &mut problems) {
        Some(t) if problems.is_empty() => Ok(t),
        _ => Err(doc.errors(problems.into_vec())),
    }
}
