//! Durations as users write them.
//!
//! Three spellings meet here: Shakedown's own (`200ms`, `2s`, `1m30s`, `1.5s`), protobuf JSON's
//! (`0.200s`, used by Envoy and Istio configs) and Istio's Go-style (`100ms`). One parser accepts
//! all of them; negative values and unknown units are errors.

use std::time::Duration;

/// Parses `1.5s`, `200ms`, `250us`, `1m30s`, `2h`, `0.200s`. A bare number is rejected: the unit
/// is the part users get wrong most often, so it must be written.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let s = text.trim();
    if s.is_empty() {
        return Err("empty duration".into());
    }
    if s.starts_with('-') {
        return Err(format!("`{text}` is negative; durations must be >= 0"));
    }
    let mut total = 0f64;
    let mut rest = s;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if num_len == 0 {
            return Err(format!(
                "`{text}` is not a duration (expected e.g. `200ms`, `2s`, `1m30s`)"
            ));
        }
        let number: f64 = rest[..num_len]
            .parse()
            .map_err(|_| format!("`{text}` is not a duration (bad number)"))?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let seconds_per_unit = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            "" => {
                return Err(format!(
                    "`{text}` has no unit (write e.g. `{number}s` or `{number}ms`)"
                ));
            }
            unit => {
                return Err(format!(
                    "`{text}` has unknown unit `{unit}` (use ns, us, ms, s, m, h)"
                ));
            }
        };
        total += number * seconds_per_unit;
        rest = &rest[unit_len..];
    }
    if !total.is_finite() || total > 1e12 {
        return Err(format!("`{text}` is too large"));
    }
    Ok(Duration::from_secs_f64(total))
}

/// Formats a duration the way protobuf JSON does (`2s`, `0.200s`), which every parser here reads.
pub fn format_duration(d: Duration) -> String {
    let nanos = d.subsec_nanos();
    if nanos == 0 {
        format!("{}s", d.as_secs())
    } else if nanos.is_multiple_of(1_000_000) {
        format!("{}.{:03}s", d.as_secs(), nanos / 1_000_000)
    } else if nanos.is_multiple_of(1_000) {
        format!("{}.{:06}s", d.as_secs(), nanos / 1_000)
    } else {
        format!("{}.{:09}s", d.as_secs(), nanos)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_every_spelling() {
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("0.200s"), Ok(Duration::from_millis(200)));
        assert_eq!(parse_duration("200ms"), Ok(Duration::from_millis(200)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("250us"), Ok(Duration::from_micros(250)));
    }

    #[test]
    fn rejects_nonsense() {
        assert!(parse_duration("five seconds").is_err());
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("10").unwrap_err().contains("no unit"));
        assert!(parse_duration("3d").unwrap_err().contains("unknown unit"));
    }

    #[test]
    fn round_trips_through_the_proto_form() {
        for ms in [0u64, 1, 200, 1500, 2000, 60_000] {
            let d = Duration::from_millis(ms);
            assert_eq!(parse_duration(&format_duration(d)), Ok(d));
        }
    }
}
