//! An in-process time-series store for embedded SLO evaluation: samples of Prometheus text
//! exposition taken at a fixed interval (as a scrape would), kept for a bounded retention.
//!
//! Sources are the same exposition a real Prometheus scrapes (the proxy's `/stats/prometheus`,
//! the load generator's metrics), so a query means the same thing here and there.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use crate::prom::Labels;

/// Samples of one series: (milliseconds since the Unix epoch, value), oldest first.
pub type Points = VecDeque<(i64, f64)>;

/// The store.
#[derive(Debug)]
pub struct Store {
    retention_ms: i64,
    series: Mutex<HashMap<Labels, Points>>,
}

impl Store {
    /// A store that keeps `retention` of samples.
    pub fn new(retention: Duration) -> Self {
        Self {
            retention_ms: i64::try_from(retention.as_millis()).unwrap_or(i64::MAX),
            series: Mutex::new(HashMap::new()),
        }
    }

    /// Ingests one scrape of text exposition taken at `t_ms`; returns the samples read.
    pub fn ingest(&self, t_ms: i64, text: &str) -> usize {
        let mut series = self.series.lock().unwrap_or_else(|e| e.into_inner());
        let mut n = 0;
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            if let Some((labels, value)) = parse_line(line) {
                series.entry(labels).or_default().push_back((t_ms, value));
                n += 1;
            }
        }
        let oldest = t_ms.saturating_sub(self.retention_ms);
        series.retain(|_, points| {
            while points.front().is_some_and(|(t, _)| *t < oldest) {
                points.pop_front();
            }
            !points.is_empty()
        });
        n
    }

    /// Series whose labels satisfy `keep`, with their points in `(start_ms, end_ms]`.
    pub fn select(
        &self,
        keep: impl Fn(&Labels) -> bool,
        start_ms: i64,
        end_ms: i64,
    ) -> Vec<(Labels, Vec<(i64, f64)>)> {
        let series = self.series.lock().unwrap_or_else(|e| e.into_inner());
        let mut out: Vec<(Labels, Vec<(i64, f64)>)> = series
            .iter()
            .filter(|(labels, _)| keep(labels))
            .map(|(labels, points)| {
                let points = points
                    .iter()
                    .copied()
                    .filter(|(t, _)| *t > start_ms && *t <= end_ms)
                    .collect();
                (labels.clone(), points)
            })
            .filter(|(_, p): &(Labels, Vec<(i64, f64)>)| !p.is_empty())
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// Samples `source` (text exposition) every `interval` from now on, stamped with the wall
    /// clock in ms, until the returned task is aborted or dropped with the runtime — the
    /// embedded equivalent of a Prometheus scrape job.
    pub fn scrape_every(
        self: &std::sync::Arc<Self>,
        interval: Duration,
        source: impl Fn() -> String + Send + 'static,
    ) -> tokio::task::JoinHandle<()> {
        let store = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                store.ingest(now_ms(), &source());
            }
        })
    }

    /// How many series are held.
    pub fn series_count(&self) -> usize {
        self.series.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Parses `name{a="b",c="d"} value [timestamp]` into labels (with `__name__`) and the value.
fn parse_line(line: &str) -> Option<(Labels, f64)> {
    let mut labels = BTreeMap::new();
    let (name, rest) = match line.find(['{', ' ']) {
        Some(i) => (&line[..i], &line[i..]),
        None => return None,
    };
    labels.insert("__name__".to_string(), name.to_string());
    let rest = if let Some(body) = rest.strip_prefix('{') {
        let mut chars = body.char_indices().peekable();
        let mut end = None;
        loop {
            // Skip separators.
            while chars
                .peek()
                .is_some_and(|(_, c)| *c == ',' || c.is_whitespace())
            {
                chars.next();
            }
            match chars.peek() {
                Some((i, '}')) => {
                    end = Some(*i);
                    break;
                }
                None => break,
                _ => {}
            }
            let mut key = String::new();
            while let Some((_, c)) = chars.peek().copied() {
                if c == '=' {
                    break;
                }
                key.push(c);
                chars.next();
            }
            chars.next(); // '='
            if chars.next().map(|(_, c)| c) != Some('"') {
                return None;
            }
            let mut value = String::new();
            loop {
                match chars.next()?.1 {
                    '\\' => match chars.next()?.1 {
                        'n' => value.push('\n'),
                        other => value.push(other),
                    },
                    '"' => break,
                    c => value.push(c),
                }
            }
            labels.insert(key.trim().to_string(), value);
        }
        &body[end? + 1..]
    } else {
        rest
    };
    let value = rest.split_whitespace().next()?;
    let value = match value {
        "+Inf" | "Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        v => v.parse().ok()?,
    };
    Some((labels, value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_exposition_and_keeps_retention() {
        let store = Store::new(Duration::from_secs(10));
        let text = "# HELP x a counter\n# TYPE x counter\nx{a=\"1\",b=\"q\\\"uote\"} 5\nx_bucket{le=\"+Inf\"} 7\ny 2.5\n";
        assert_eq!(store.ingest(1_000, text), 3);
        assert_eq!(store.ingest(6_000, "y 3\n"), 1);
        let all = store.select(|_| true, 0, 10_000);
        let y: Vec<_> = all.iter().filter(|(l, _)| l["__name__"] == "y").collect();
        assert_eq!(y[0].1, vec![(1_000, 2.5), (6_000, 3.0)]);
        let x = all.iter().find(|(l, _)| l.get("b").is_some()).unwrap();
        assert_eq!(x.0["b"], "q\"uote");
        assert_eq!(
            all.iter().find(|(l, _)| l.get("le").is_some()).unwrap().0["le"],
            "+Inf"
        );
        // Past the retention the old points go, and series without points with them.
        store.ingest(12_000, "y 4\n");
        assert_eq!(store.series_count(), 1);
        assert_eq!(
            store.select(|_| true, 0, 20_000)[0].1,
            vec![(6_000, 3.0), (12_000, 4.0)]
        );
    }
}
