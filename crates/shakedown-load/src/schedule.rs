//! The open model's timetable: when the i-th request is meant to start.
//!
//! The arrival rate r(t) is piecewise linear (k6's stages), so the number of arrivals due by t,
//! N(t) = ∫r, is piecewise quadratic, and arrival i is due at the t where N(t) = i. Solving that
//! exactly, instead of accumulating 1/r steps, keeps a long run from drifting: a 10-minute run at
//! 333.3 req/s plans 199 980 requests whatever the float rounding. Arrival 0 is due at t = 0, as
//! k6 starts its first iteration immediately.

use std::time::Duration;

use shakedown_model::Profile;

/// Iterates over the intended start offsets of a rate profile (arrivals per second).
#[derive(Clone, Debug)]
pub struct Arrivals {
    segments: Vec<Segment>,
    current: usize,
    next_index: u64,
}

#[derive(Clone, Copy, Debug)]
struct Segment {
    /// Offset of the segment's start, seconds.
    start: f64,
    /// Length, seconds.
    length: f64,
    /// Rates at both ends, per second.
    from: f64,
    to: f64,
    /// Arrivals due before the segment starts.
    before: f64,
}

impl Segment {
    fn arrivals(&self) -> f64 {
        (self.from + self.to) / 2.0 * self.length
    }

    /// Offset into the segment at which `k` more arrivals (after `before`) are due.
    fn solve(&self, k: f64) -> f64 {
        let a = (self.to - self.from) / (2.0 * self.length);
        let b = self.from;
        // a·s² + b·s = k, in the form that stays accurate when a is tiny or negative.
        let disc = (b * b + 4.0 * a * k).max(0.0);
        let denom = b + disc.sqrt();
        if denom <= 0.0 { 0.0 } else { 2.0 * k / denom }
    }
}

impl Arrivals {
    /// The timetable of `profile`.
    pub fn new(profile: &Profile) -> Self {
        let mut segments = Vec::new();
        let (mut start, mut before, mut from) = (0.0, 0.0, profile.start);
        for &(d, to) in &profile.stages {
            let length = d.as_secs_f64();
            if length > 0.0 {
                let s = Segment {
                    start,
                    length,
                    from,
                    to,
                    before,
                };
                before += s.arrivals();
                start += length;
                segments.push(s);
            }
            from = to;
        }
        Self {
            segments,
            current: 0,
            next_index: 0,
        }
    }

    /// How many arrivals the whole profile plans.
    pub fn total(&self) -> u64 {
        self.segments
            .last()
            .map(|s| planned_count(s.before + s.arrivals()))
            .unwrap_or(0)
    }
}

/// Arrival i is planned when N(t) = i for some t < end, i.e. for i < N(end); tiny float error
/// at an exact integer end (500/s × 10 s) must not add or lose one.
fn planned_count(n: f64) -> u64 {
    let rounded = n.round();
    if (n - rounded).abs() < 1e-6 {
        rounded as u64
    } else {
        n.ceil() as u64
    }
}

impl Iterator for Arrivals {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let i = self.next_index as f64;
        while let Some(seg) = self.segments.get(self.current) {
            let end = planned_count(seg.before + seg.arrivals());
            if self.next_index < end {
                let offset = seg.start + seg.solve(i - seg.before).min(seg.length);
                self.next_index += 1;
                return Some(Duration::from_secs_f64(offset));
            }
            self.current += 1;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(v: &[Duration]) -> Vec<f64> {
        v.iter()
            .map(|d| (d.as_secs_f64() * 1e6).round() / 1e6)
            .collect()
    }

    #[test]
    fn constant_rate_is_evenly_spaced_and_exact() {
        let p = Profile::constant(500.0, Duration::from_secs(10));
        let a: Vec<Duration> = Arrivals::new(&p).collect();
        assert_eq!(a.len(), 5000);
        assert_eq!(Arrivals::new(&p).total(), 5000);
        assert_eq!(secs(&a[..3]), vec![0.0, 0.002, 0.004]);
        assert_eq!(secs(&a[4999..]), vec![9.998]);
        let odd = Profile::constant(333.3, Duration::from_secs(600));
        assert_eq!(Arrivals::new(&odd).count(), 199_980);
    }

    #[test]
    fn ramps_follow_the_integral() {
        // 0 → 10/s over 10 s: N(t) = t²/2, so arrival i is at √(2i); 50 arrivals in all.
        let p = Profile {
            start: 0.0,
            stages: vec![(Duration::from_secs(10), 10.0)],
        };
        let a: Vec<Duration> = Arrivals::new(&p).collect();
        assert_eq!(a.len(), 50);
        for (i, t) in a.iter().enumerate() {
            assert!(
                (t.as_secs_f64() - (2.0 * i as f64).sqrt()).abs() < 1e-9,
                "{i}: {t:?}"
            );
        }
        // Down again, then up to 20/s: 50 + 50 + 50.
        let p = Profile {
            start: 0.0,
            stages: vec![
                (Duration::from_secs(10), 10.0),
                (Duration::from_secs(10), 0.0),
                (Duration::from_secs(5), 20.0),
            ],
        };
        let a: Vec<Duration> = Arrivals::new(&p).collect();
        assert_eq!(a.len(), 150);
        assert!(a.windows(2).all(|w| w[0] <= w[1]));
        let in_first = a.iter().filter(|t| t.as_secs_f64() < 10.0).count();
        assert_eq!(in_first, 50);
        assert!(a.last().unwrap().as_secs_f64() < 25.0);
    }

    #[test]
    fn zero_rate_plans_nothing() {
        let p = Profile::constant(0.0, Duration::from_secs(10));
        assert_eq!(Arrivals::new(&p).count(), 0);
    }
}
