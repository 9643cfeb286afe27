//! Shakedown's load generator.
//!
//! Open model (constant or ramping arrival rate) timed from each request's *intended* start, so
//! a stalled server cannot hide behind coordinated omission; closed model (constant or ramping
//! virtual users with think time) for the k6 scripts teams already have. Latencies go into HDR
//! histograms of bounded size; a per-interval series, k6's metrics and thresholds, and a summary
//! export whose histograms merge exactly across machines. The binary's `shakedown load` and the
//! experiment engine both call [`run()`].
//!
//! Modules: [`schedule`] (arrival times), [`client`] (connections, wire byte counts), [`h1`] (the HTTP/1.1 connection), [`mod@run`]
//! (models and collector), [`samples`] (what is recorded), [`series`], [`thresholds`],
//! [`summary`] (text, export, merge), [`metrics`] (Prometheus exposition during
//! a run), [`tls`].

pub mod client;
pub mod h1;
pub mod metrics;
pub mod run;
pub mod samples;
pub mod schedule;
pub mod series;
pub mod summary;
pub mod thresholds;
pub mod tls;

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use run::{Progress, RunOptions, run};
pub use samples::{Samples, Tags};
pub use series::Series;
pub use thresholds::Verdict;

/// Why a run could not start.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// A host name did not resolve.
    #[error("cannot resolve `{0}`: {1}")]
    Resolve(String, #[source] std::io::Error),
    /// TLS could not be set up (e.g. an unreadable CA file).
    #[error("{0}")]
    Tls(String),
}

/// How a run ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// The schedule ran to its end.
    Completed,
    /// A threshold with `abortOnFail` was crossed: (metric, expression).
    Threshold(String, String),
    /// Stopped from outside (Ctrl-C).
    Interrupted,
}

impl fmt::Display for StopReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Completed => f.write_str("completed"),
            Self::Threshold(m, s) => {
                write!(f, "aborted: threshold {m} '{s}' crossed (abortOnFail)")
            }
            Self::Interrupted => f.write_str("interrupted"),
        }
    }
}

/// The result of a run (or of a merge of runs).
#[derive(Clone, Debug)]
pub struct Report {
    /// Everything recorded.
    pub samples: Samples,
    /// Names behind the samples' checks and sub-metrics.
    pub tags: Tags,
    /// Per-interval series.
    pub series: Series,
    /// How long it ran.
    pub elapsed: Duration,
    /// How long it was planned to run.
    pub planned: Duration,
    /// How it ended.
    pub stop: StopReason,
    /// Each threshold's verdict, in spec order.
    pub verdicts: Vec<Verdict>,
    /// The scenario in one line.
    pub scenario: String,
}

impl Report {
    /// Whether every threshold held.
    pub fn thresholds_ok(&self) -> bool {
        self.verdicts.iter().all(|v| v.ok)
    }
}
