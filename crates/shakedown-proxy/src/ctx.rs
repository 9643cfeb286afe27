//! What one request carries through the stack: when it started and Envoy-style response flags.
//!
//! Layers record what happened (`DI` a fault delayed it, `UF` the upstream refused the
//! connection, …) so the access log can say whether a failure was *injected*, came from the
//! *upstream*, or was *local* — the distinction SLO accounting depends on.

use std::fmt;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Instant;

/// Envoy `%RESPONSE_FLAGS%` values Shakedown can set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u16)]
pub enum Flag {
    /// No healthy upstream (cluster has no endpoint to try).
    UH = 1 << 0,
    /// Upstream connection failure.
    UF = 1 << 1,
    /// No route configured.
    NR = 1 << 2,
    /// Upstream retry limit exceeded.
    URX = 1 << 3,
    /// Upstream request timeout.
    UT = 1 << 4,
    /// Upstream connection termination.
    UC = 1 << 5,
    /// Delay injected by a fault.
    DI = 1 << 6,
    /// Abort injected by a fault.
    FI = 1 << 7,
}

/// Envoy's rendering order.
const ORDER: [(Flag, &str); 8] = [
    (Flag::UH, "UH"),
    (Flag::UF, "UF"),
    (Flag::NR, "NR"),
    (Flag::URX, "URX"),
    (Flag::UT, "UT"),
    (Flag::UC, "UC"),
    (Flag::DI, "DI"),
    (Flag::FI, "FI"),
];

/// Where a failed response came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FailureSource {
    /// Nothing failed.
    None,
    /// A fault injected it.
    Injected,
    /// The upstream failed (connect, reset, timeout, or a 5xx it sent).
    Upstream,
    /// The proxy itself (no route, internal error).
    Local,
}

/// Per-request facts shared by the layers and the access log.
#[derive(Debug)]
pub struct RequestInfo {
    /// When the request arrived.
    pub start: Instant,
    flags: AtomicU16,
    upstream_host: OnceLock<String>,
    /// Route name, once matched.
    pub route: OnceLock<String>,
    /// Cluster name, once routed.
    pub cluster: OnceLock<String>,
}

impl RequestInfo {
    /// A request that starts now.
    pub fn new() -> Self {
        Self {
            start: Instant::now(),
            flags: AtomicU16::new(0),
            upstream_host: OnceLock::new(),
            route: OnceLock::new(),
            cluster: OnceLock::new(),
        }
    }

    /// Records a flag.
    pub fn set(&self, flag: Flag) {
        self.flags.fetch_or(flag as u16, Ordering::Relaxed);
    }

    /// Whether a flag is set.
    pub fn has(&self, flag: Flag) -> bool {
        self.flags.load(Ordering::Relaxed) & flag as u16 != 0
    }

    /// Records the endpoint that served (or failed) the request.
    pub fn set_upstream_host(&self, host: &str) {
        let _ = self.upstream_host.set(host.to_owned());
    }

    /// The endpoint, if one was chosen.
    pub fn upstream_host(&self) -> Option<&str> {
        self.upstream_host.get().map(String::as_str)
    }

    /// The flags, Envoy-style (`DI,FI`; `-` when none).
    pub fn flags(&self) -> Flags {
        Flags(self.flags.load(Ordering::Relaxed))
    }

    /// Classifies a response with this request's flags.
    pub fn failure_source(&self, status: u16) -> FailureSource {
        let f = self.flags();
        if f.0 & Flag::FI as u16 != 0 {
            FailureSource::Injected
        } else if f.0 & Flag::NR as u16 != 0 {
            FailureSource::Local
        } else if f.0
            & (Flag::UF as u16
                | Flag::UT as u16
                | Flag::UC as u16
                | Flag::URX as u16
                | Flag::UH as u16)
            != 0
            || status >= 500
        {
            FailureSource::Upstream
        } else {
            FailureSource::None
        }
    }
}

impl Default for RequestInfo {
    fn default() -> Self {
        Self::new()
    }
}

/// A set of flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flags(u16);

impl fmt::Display for Flags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for (flag, name) in ORDER {
            if self.0 & flag as u16 != 0 {
                if !first {
                    f.write_str(",")?;
                }
                f.write_str(name)?;
                first = false;
            }
        }
        if first {
            f.write_str("-")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_render_like_envoy() {
        let info = RequestInfo::new();
        assert_eq!(info.flags().to_string(), "-");
        info.set(Flag::FI);
        info.set(Flag::DI);
        assert_eq!(info.flags().to_string(), "DI,FI");
        assert_eq!(info.failure_source(503), FailureSource::Injected);
        let info = RequestInfo::new();
        info.set(Flag::UF);
        info.set(Flag::URX);
        assert_eq!(info.flags().to_string(), "UF,URX");
        assert_eq!(info.failure_source(503), FailureSource::Upstream);
    }
}
