//! Per-interval time series of a run, for plots: requests, errors by status class, latency
//! percentiles, dropped requests.
//!
//! Bounded for any duration: at most [`MAX_POINTS`] points; when full, neighbouring points merge
//! pairwise and the interval doubles (1 s, 2 s, 4 s, …). Counts of merged points add exactly;
//! their percentiles are the larger of the two (an upper bound: the histograms behind them are
//! gone by then). Points recorded after a doubling are exact again, over the longer interval.

use serde::{Deserialize, Serialize};

use crate::samples::Samples;

/// Points kept at most (one hour at one-second resolution).
pub const MAX_POINTS: usize = 3600;

/// One interval of a run.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Point {
    /// Seconds from the start of the run to the end of the interval.
    pub t: f64,
    /// Requests finished.
    pub reqs: u64,
    /// Requests failed (`http_req_failed`).
    pub failed: u64,
    /// Requests per status class: 1xx, 2xx, 3xx, 4xx, 5xx, no response.
    pub classes: [u64; 6],
    /// Planned requests dropped.
    pub dropped: u64,
    /// Latency percentiles of the interval, ms: p50, p90, p99, max.
    pub p50: f64,
    /// 90th percentile, ms.
    pub p90: f64,
    /// 99th percentile, ms.
    pub p99: f64,
    /// Largest, ms.
    pub max: f64,
    /// 99th percentile of the uncorrected latency, ms.
    pub p99_uncorrected: f64,
    /// Requests in flight (open model) or active VUs (closed) at the end of the interval.
    pub in_flight: u64,
}

impl Point {
    /// The point for an interval's samples.
    pub fn from_samples(t: f64, s: &Samples, in_flight: u64) -> Self {
        Self {
            t,
            reqs: s.http_reqs,
            failed: s.failed.trues,
            classes: s.classes,
            dropped: s.dropped,
            p50: s.duration.percentile_ms(50.0),
            p90: s.duration.percentile_ms(90.0),
            p99: s.duration.percentile_ms(99.0),
            max: s.duration.max_ms(),
            p99_uncorrected: s.uncorrected.percentile_ms(99.0),
            in_flight,
        }
    }

    fn absorb(&mut self, later: &Point) {
        self.t = later.t;
        self.reqs += later.reqs;
        self.failed += later.failed;
        for (a, b) in self.classes.iter_mut().zip(later.classes) {
            *a += b;
        }
        self.dropped += later.dropped;
        self.p50 = self.p50.max(later.p50);
        self.p90 = self.p90.max(later.p90);
        self.p99 = self.p99.max(later.p99);
        self.max = self.max.max(later.max);
        self.p99_uncorrected = self.p99_uncorrected.max(later.p99_uncorrected);
        self.in_flight = later.in_flight;
    }
}

/// The series: points at a common interval.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Series {
    /// Seconds per point.
    pub interval: f64,
    /// Points in time order.
    pub points: Vec<Point>,
}

impl Series {
    /// An empty series at `interval` seconds.
    pub fn new(interval: f64) -> Self {
        Self {
            interval,
            points: Vec::new(),
        }
    }

    /// How many base ticks make one point now.
    pub fn ticks_per_point(&self, base: f64) -> u64 {
        (self.interval / base).round().max(1.0) as u64
    }

    /// Appends a point, halving the resolution first when full.
    pub fn push(&mut self, p: Point) {
        if self.points.len() >= MAX_POINTS {
            let old = std::mem::take(&mut self.points);
            for pair in old.chunks(2) {
                let mut merged = pair[0].clone();
                if let Some(second) = pair.get(1) {
                    merged.absorb(second);
                }
                self.points.push(merged);
            }
            self.interval *= 2.0;
        }
        self.points.push(p);
    }

    /// Merges the series of runs that ran side by side: points at the same index add.
    pub fn merge(&mut self, other: &Series) {
        if other.interval != self.interval {
            // Different resolutions cannot be aligned point by point: the first run's series
            // stands (the totals, which do add, are in the samples).
            return;
        }
        for (i, p) in other.points.iter().enumerate() {
            match self.points.get_mut(i) {
                Some(mine) => {
                    let t = mine.t.max(p.t);
                    let in_flight = mine.in_flight + p.in_flight;
                    mine.absorb(p);
                    mine.t = t;
                    mine.in_flight = in_flight;
                }
                None => self.points.push(p.clone()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stays_bounded_and_keeps_counts() {
        let mut s = Series::new(1.0);
        let n = MAX_POINTS * 5 + 7;
        // As the collector does: gather one-second ticks until a point's worth is there.
        let mut pending: Option<Point> = None;
        let mut ticks = 0;
        for i in 0..n {
            let tick = Point {
                t: i as f64 + 1.0,
                reqs: 10,
                p99: i as f64,
                ..Point::default()
            };
            match pending.as_mut() {
                Some(p) => p.absorb(&tick),
                None => pending = Some(tick),
            }
            ticks += 1;
            if ticks >= s.ticks_per_point(1.0) || i == n - 1 {
                s.push(pending.take().unwrap());
                ticks = 0;
            }
            assert!(s.points.len() <= MAX_POINTS);
        }
        let total: u64 = s.points.iter().map(|p| p.reqs).sum();
        assert_eq!(total, 10 * n as u64);
        assert_eq!(s.interval, 8.0);
        assert_eq!(s.ticks_per_point(1.0), 8);
        assert_eq!(s.points.last().unwrap().t, n as f64);
    }
}
