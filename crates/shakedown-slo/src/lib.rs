//! Shakedown's SLO judge: SLOs (PromQL, comparison, threshold) judged against a Prometheus through
//! its HTTP API ([`prom`]), with three outcomes — met, violated, could not judge ([`mod@judge`]) —
//! the same queries evaluated in-process over scraped samples ([`store`], [`eval`]) when there
//! is no Prometheus, and the SRE workbook's multi-window burn-rate alerts for guardrails
//! ([`burn`]).

pub mod burn;
pub mod eval;
pub mod judge;
pub mod prom;
pub mod store;

pub use judge::{Judgement, Outcome, check_all, exit_code, judge, judge_embedded, judge_load};
pub use prom::{PromError, Prometheus, QueryResult};
