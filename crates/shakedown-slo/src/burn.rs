//! Multi-window, multi-burn-rate alerting from Google's SRE workbook (chapter 5), for the
//! engine's guardrails.
//!
//! A burn rate is how fast the error budget is spent: an error ratio of `factor × (1 − objective)`
//! spends the budget `factor` times faster than allowed. Each alert pairs a long window (is it
//! significant?) with a short one, a twelfth of it (is it still happening?), and fires only when
//! both exceed the factor. The factor for a window follows from the share of the budget the alert
//! tolerates losing in it: `budget% × period / 100 / long window` (2 % of 30 days in 1 h → 14.4).

use std::time::Duration;

use shakedown_model::slo::prom_duration;

/// One window pair and its burn-rate factor.
#[derive(Clone, Debug, PartialEq)]
pub struct BurnWindow {
    /// `page` or `ticket`.
    pub severity: &'static str,
    /// Share of the period's error budget this alert tolerates losing, percent.
    pub budget_percent: f64,
    /// The long window.
    pub long: Duration,
    /// The short window (long / 12).
    pub short: Duration,
    /// Burn-rate factor.
    pub factor: f64,
}

const HOUR: u64 = 3600;

/// The workbook's four alerts for an SLO period (30 days gives 14.4, 6, 3 and 1).
pub fn workbook_windows(period: Duration) -> Vec<BurnWindow> {
    [
        ("page", 2.0, HOUR),
        ("page", 5.0, 6 * HOUR),
        ("ticket", 10.0, 24 * HOUR),
        ("ticket", 10.0, 72 * HOUR),
    ]
    .into_iter()
    .map(|(severity, budget_percent, long_s)| {
        let long = Duration::from_secs(long_s);
        BurnWindow {
            severity,
            budget_percent,
            long,
            short: long / 12,
            factor: budget_percent * period.as_secs_f64() / 100.0 / long.as_secs_f64(),
        }
    })
    .collect()
}

/// The error ratio a window pair alerts above: `factor × (1 − objective)`.
pub fn threshold(w: &BurnWindow, objective: f64) -> f64 {
    w.factor * (1.0 - objective)
}

/// Whether an alert fires for the measured error ratios over its long and short windows.
pub fn burning(w: &BurnWindow, objective: f64, long_ratio: f64, short_ratio: f64) -> bool {
    let t = threshold(w, objective);
    long_ratio > t && short_ratio > t
}

/// The PromQL alert expression for a window pair, from an error-ratio query with `{{window}}`
/// where the range goes.
pub fn alert_expr(w: &BurnWindow, objective: f64, error_ratio: &str) -> String {
    // Rounded to 12 significant digits: 14.4 × 0.001 prints as 0.0144, not 0.014400000000000013.
    let t = threshold(w, objective);
    let t = format!("{}", (t * 1e12).round() / 1e12);
    let at = |d: Duration| error_ratio.replace("{{window}}", &prom_duration(d));
    format!("({}) > {t} and ({}) > {t}", at(w.long), at(w.short))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_workbook_table_for_30_days() {
        let w = workbook_windows(Duration::from_secs(30 * 24 * HOUR));
        let factors: Vec<f64> = w
            .iter()
            .map(|w| (w.factor * 1000.0).round() / 1000.0)
            .collect();
        assert_eq!(factors, vec![14.4, 6.0, 3.0, 1.0]);
        let shorts: Vec<u64> = w.iter().map(|w| w.short.as_secs()).collect();
        assert_eq!(shorts, vec![300, 1800, 7200, 21600]);
        assert!((threshold(&w[0], 0.999) - 0.0144).abs() < 1e-12);
        assert!(burning(&w[0], 0.999, 0.02, 0.015));
        assert!(
            !burning(&w[0], 0.999, 0.02, 0.01),
            "the short window says it is over"
        );
        assert_eq!(
            alert_expr(
                &w[0],
                0.999,
                "sum(rate(errors[{{window}}])) / sum(rate(total[{{window}}]))"
            ),
            format!(
                "(sum(rate(errors[1h])) / sum(rate(total[1h]))) > {t} and (sum(rate(errors[5m])) / sum(rate(total[5m]))) > {t}",
                t = 0.0144
            )
        );
    }
}
