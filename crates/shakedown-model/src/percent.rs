//! Envoy's `FractionalPercent`: a numerator over a fixed denominator, decided per request.
//!
//! Envoy draws a random integer and injects when `random % denominator < numerator`; a numerator
//! above the denominator therefore means "always". Istio's `percentage.value` (a double in 0–100)
//! maps to a numerator over MILLION, as istiod does when it writes Envoy config.
//!
//! Shakedown draws over one million for every denominator (`10/HUNDRED` hits when the draw is
//! below 100 000): the probability is Envoy's, and the same fault written as `10/HUNDRED`,
//! `100000/MILLION` or Istio's `value: 10` makes the same decisions for the same seed.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The denominator of a [`FractionalPercent`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Denominator {
    /// 100.
    #[default]
    Hundred,
    /// 10 000.
    TenThousand,
    /// 1 000 000.
    Million,
}

impl Denominator {
    /// The denominator as a number.
    pub fn value(self) -> u32 {
        match self {
            Denominator::Hundred => 100,
            Denominator::TenThousand => 10_000,
            Denominator::Million => 1_000_000,
        }
    }

    /// The protobuf enum name.
    pub fn name(self) -> &'static str {
        match self {
            Denominator::Hundred => "HUNDRED",
            Denominator::TenThousand => "TEN_THOUSAND",
            Denominator::Million => "MILLION",
        }
    }
}

impl Serialize for Denominator {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl schemars::JsonSchema for Denominator {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Denominator".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "HUNDRED (default), TEN_THOUSAND or MILLION, or the protobuf enum number 0, 1, 2",
            "oneOf": [
                {"type": "string", "enum": ["HUNDRED", "TEN_THOUSAND", "MILLION"]},
                {"type": "integer", "minimum": 0, "maximum": 2}
            ]
        })
    }
}

impl<'de> Deserialize<'de> for Denominator {
    /// Accepts the enum name (`HUNDRED`) or its number (`0`), as protobuf JSON does.
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = serde_json::Value::deserialize(d)?;
        match &v {
            serde_json::Value::String(s) => match s.as_str() {
                "HUNDRED" => Ok(Denominator::Hundred),
                "TEN_THOUSAND" => Ok(Denominator::TenThousand),
                "MILLION" => Ok(Denominator::Million),
                other => Err(serde::de::Error::custom(format!(
                    "unknown denominator `{other}` (expected HUNDRED, TEN_THOUSAND or MILLION)"
                ))),
            },
            serde_json::Value::Number(n) => match n.as_u64() {
                Some(0) => Ok(Denominator::Hundred),
                Some(1) => Ok(Denominator::TenThousand),
                Some(2) => Ok(Denominator::Million),
                _ => Err(serde::de::Error::custom(format!("unknown denominator {n}"))),
            },
            _ => Err(serde::de::Error::custom(
                "denominator must be HUNDRED, TEN_THOUSAND or MILLION",
            )),
        }
    }
}

/// A probability written as `numerator / denominator`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct FractionalPercent {
    /// How many out of `denominator`.
    pub numerator: u32,
    /// The denominator.
    #[serde(default)]
    pub denominator: Denominator,
}

impl FractionalPercent {
    /// Always (100/100).
    pub const ALWAYS: Self = Self {
        numerator: 100,
        denominator: Denominator::Hundred,
    };
    /// Never (0/100).
    pub const NEVER: Self = Self {
        numerator: 0,
        denominator: Denominator::Hundred,
    };

    /// A percentage in 0–100 as a double, mapped onto a MILLION denominator like istiod does.
    pub fn from_percent(value: f64) -> Result<Self, String> {
        if !(0.0..=100.0).contains(&value) {
            return Err(format!("percentage {value} is outside 0-100"));
        }
        Ok(Self {
            numerator: (value * 10_000.0).round() as u32,
            denominator: Denominator::Million,
        })
    }

    /// Whether a random draw hits: `random % 1_000_000 < numerator` scaled to millionths.
    pub fn hits(self, random: u64) -> bool {
        random % 1_000_000 < self.millionths()
    }

    /// The probability in millionths, capped at one million.
    pub fn millionths(self) -> u64 {
        let scale = u64::from(1_000_000 / self.denominator.value());
        (u64::from(self.numerator) * scale).min(1_000_000)
    }

    /// The same denominator with the numerator capped by `cap` (how Envoy treats the
    /// `x-envoy-fault-*-percentage` headers: a caller can lower the configured percentage, never
    /// raise it).
    pub fn capped(self, numerator: u32) -> Self {
        Self {
            numerator: numerator.min(self.numerator),
            denominator: self.denominator,
        }
    }

    /// The probability as a fraction in [0, 1].
    pub fn fraction(self) -> f64 {
        (f64::from(self.numerator) / f64::from(self.denominator.value())).min(1.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envoy_rule() {
        let p = FractionalPercent {
            numerator: 10,
            denominator: Denominator::Hundred,
        };
        assert!(p.hits(99_999));
        assert!(!p.hits(100_000));
        assert!(p.hits(1_099_999));
        let over = FractionalPercent {
            numerator: 150,
            denominator: Denominator::Hundred,
        };
        assert!((0..1000).all(|r| over.hits(r)));
    }

    #[test]
    fn istio_percent_maps_to_million() {
        let p = FractionalPercent::from_percent(0.1).unwrap();
        assert_eq!((p.numerator, p.denominator), (1000, Denominator::Million));
        assert!(FractionalPercent::from_percent(100.5).is_err());
    }

    #[test]
    fn header_can_only_lower() {
        let p = FractionalPercent {
            numerator: 50,
            denominator: Denominator::TenThousand,
        };
        assert_eq!(p.capped(80).numerator, 50);
        assert_eq!(p.capped(20).numerator, 20);
    }

    #[test]
    fn denominator_accepts_names_and_numbers() {
        let p: FractionalPercent =
            serde_json::from_str(r#"{"numerator": 1, "denominator": "TEN_THOUSAND"}"#).unwrap();
        assert_eq!(p.denominator, Denominator::TenThousand);
        let p: FractionalPercent =
            serde_json::from_str(r#"{"numerator": 1, "denominator": 2}"#).unwrap();
        assert_eq!(p.denominator, Denominator::Million);
        let p: FractionalPercent = serde_json::from_str(r#"{"numerator": 1}"#).unwrap();
        assert_eq!(p.denominator, Denominator::Hundred);
    }
}
