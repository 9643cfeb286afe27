//! Envoy's `config.route.v3.HeaderMatcher`, used by routes and by fault scoping.
//!
//! The raw form accepts both the current `string_match` and the older `exact_match` /
//! `prefix_match` / … fields, in snake_case or protobuf JSON's lowerCamelCase. Semantics follow
//! Envoy: several values of one header are joined with `,` before matching; a missing header
//! matches nothing except an absent-presence check, unless `treat_missing_header_as_empty`;
//! `invert_match` flips the result of a header that is present.

use http::HeaderMap;
use http::header::HeaderName;
use regex::Regex;
use serde::{Deserialize, Serialize};

use crate::source::{Problems, join};

/// A header matcher as written in config.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawHeaderMatcher {
    /// Header name (case-insensitive).
    pub name: String,
    /// Envoy's `StringMatcher`.
    #[serde(
        default,
        alias = "stringMatch",
        skip_serializing_if = "Option::is_none"
    )]
    pub string_match: Option<RawStringMatcher>,
    /// Deprecated Envoy form of `string_match.exact`.
    #[serde(default, alias = "exactMatch", skip_serializing_if = "Option::is_none")]
    pub exact_match: Option<String>,
    /// Deprecated Envoy form of `string_match.prefix`.
    #[serde(
        default,
        alias = "prefixMatch",
        skip_serializing_if = "Option::is_none"
    )]
    pub prefix_match: Option<String>,
    /// Deprecated Envoy form of `string_match.suffix`.
    #[serde(
        default,
        alias = "suffixMatch",
        skip_serializing_if = "Option::is_none"
    )]
    pub suffix_match: Option<String>,
    /// Deprecated Envoy form of `string_match.contains`.
    #[serde(
        default,
        alias = "containsMatch",
        skip_serializing_if = "Option::is_none"
    )]
    pub contains_match: Option<String>,
    /// Deprecated Envoy form of `string_match.safe_regex`.
    #[serde(
        default,
        alias = "safeRegexMatch",
        skip_serializing_if = "Option::is_none"
    )]
    pub safe_regex_match: Option<RawRegex>,
    /// `true`: the header must be present; `false`: it must be absent.
    #[serde(
        default,
        alias = "presentMatch",
        skip_serializing_if = "Option::is_none"
    )]
    pub present_match: Option<bool>,
    /// Invert the result for a present header.
    #[serde(
        default,
        alias = "invertMatch",
        skip_serializing_if = "std::ops::Not::not"
    )]
    pub invert_match: bool,
    /// Match a missing header as if it were the empty string.
    #[serde(
        default,
        alias = "treatMissingHeaderAsEmpty",
        skip_serializing_if = "std::ops::Not::not"
    )]
    pub treat_missing_header_as_empty: bool,
}

/// Envoy's `type.matcher.v3.StringMatcher`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawStringMatcher {
    /// Whole value equals.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exact: Option<String>,
    /// Value starts with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// Value ends with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suffix: Option<String>,
    /// Value contains.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contains: Option<String>,
    /// Whole value matches an RE2-syntax regex.
    #[serde(default, alias = "safeRegex", skip_serializing_if = "Option::is_none")]
    pub safe_regex: Option<RawRegex>,
    /// Compare ASCII case-insensitively (not for regexes).
    #[serde(
        default,
        alias = "ignoreCase",
        skip_serializing_if = "std::ops::Not::not"
    )]
    pub ignore_case: bool,
}

/// Envoy's `RegexMatcher` (`google_re2` is accepted and ignored: the `regex` crate is RE2-like).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawRegex {
    /// The pattern; it must match the whole value.
    pub regex: String,
    /// Accepted for compatibility.
    #[serde(default, alias = "googleRe2", skip_serializing)]
    pub google_re2: Option<serde_json::Value>,
}

/// How a header value is compared.
#[derive(Debug, Clone)]
pub enum ValueMatch {
    /// Equal.
    Exact(String),
    /// Starts with.
    Prefix(String),
    /// Ends with.
    Suffix(String),
    /// Contains.
    Contains(String),
    /// Whole-value regex.
    Regex(Regex),
    /// Presence (`true`) or absence (`false`).
    Present(bool),
}

/// A validated header matcher.
#[derive(Debug, Clone)]
pub struct HeaderMatcher {
    /// Header name.
    pub name: HeaderName,
    /// The comparison.
    pub value: ValueMatch,
    /// ASCII case-insensitive comparison.
    pub ignore_case: bool,
    /// Invert the result for a present header.
    pub invert: bool,
    /// Treat a missing header as empty.
    pub treat_missing_as_empty: bool,
    raw: RawHeaderMatcher,
}

impl PartialEq for HeaderMatcher {
    fn eq(&self, other: &Self) -> bool {
        self.raw == other.raw
    }
}

impl HeaderMatcher {
    /// Validates a raw matcher, recording problems under `path`.
    pub fn from_raw(raw: &RawHeaderMatcher, path: &str, problems: &mut Problems) -> Option<Self> {
        let name = match HeaderName::from_bytes(raw.name.as_bytes()) {
            Ok(n) => n,
            Err(_) => {
                problems.push(
                    join(path, "name"),
                    format!("`{}` is not a valid header name", raw.name),
                );
                return None;
            }
        };
        let mut forms: Vec<(&str, ValueMatch)> = Vec::new();
        let mut ignore_case = false;
        let regex = |r: &RawRegex, field: &str, problems: &mut Problems| -> Option<ValueMatch> {
            match Regex::new(&format!("^(?:{})$", r.regex)) {
                Ok(re) => Some(ValueMatch::Regex(re)),
                Err(e) => {
                    problems.push(join(path, field), format!("bad regex: {e}"));
                    None
                }
            }
        };
        if let Some(sm) = &raw.string_match {
            ignore_case = sm.ignore_case;
            let sub = join(path, "string_match");
            let mut n = 0;
            for (v, make) in [
                (&sm.exact, ValueMatch::Exact as fn(String) -> ValueMatch),
                (&sm.prefix, ValueMatch::Prefix),
                (&sm.suffix, ValueMatch::Suffix),
                (&sm.contains, ValueMatch::Contains),
            ] {
                if let Some(v) = v {
                    n += 1;
                    forms.push(("string_match", make(v.clone())));
                }
            }
            if let Some(r) = &sm.safe_regex {
                n += 1;
                if let Some(m) = regex(r, "string_match.safe_regex", problems) {
                    forms.push(("string_match", m));
                }
            }
            if n != 1 {
                problems.push(
                    sub,
                    "set exactly one of exact, prefix, suffix, contains, safe_regex",
                );
                return None;
            }
        }
        for (v, field, make) in [
            (
                &raw.exact_match,
                "exact_match",
                ValueMatch::Exact as fn(String) -> ValueMatch,
            ),
            (&raw.prefix_match, "prefix_match", ValueMatch::Prefix),
            (&raw.suffix_match, "suffix_match", ValueMatch::Suffix),
            (&raw.contains_match, "contains_match", ValueMatch::Contains),
        ] {
            if let Some(v) = v {
                forms.push((field, make(v.clone())));
            }
        }
        if let Some(r) = &raw.safe_regex_match
            && let Some(m) = regex(r, "safe_regex_match", problems)
        {
            forms.push(("safe_regex_match", m));
        }
        if let Some(p) = raw.present_match {
            forms.push(("present_match", ValueMatch::Present(p)));
        }
        let value = match forms.len() {
            // Envoy: no match specifier means "the header is present".
            0 => ValueMatch::Present(true),
            1 => forms.pop().map(|(_, m)| m)?,
            _ => {
                let names: Vec<&str> = forms.iter().map(|(f, _)| *f).collect();
                problems.push(
                    path,
                    format!("set only one way to match, not {}", names.join(" and ")),
                );
                return None;
            }
        };
        Some(Self {
            name,
            value,
            ignore_case,
            invert: raw.invert_match,
            treat_missing_as_empty: raw.treat_missing_header_as_empty,
            raw: raw.clone(),
        })
    }

    /// The matcher as written.
    pub fn raw(&self) -> &RawHeaderMatcher {
        &self.raw
    }

    /// Whether the request headers satisfy this matcher.
    pub fn matches(&self, headers: &HeaderMap) -> bool {
        let mut values = headers.get_all(&self.name).iter().peekable();
        if values.peek().is_none() {
            if self.treat_missing_as_empty {
                return self.compare("") != self.invert;
            }
            return match self.value {
                ValueMatch::Present(want) => want == self.invert,
                _ => false,
            };
        }
        let mut joined = String::new();
        for (i, v) in values.enumerate() {
            if i > 0 {
                joined.push(',');
            }
            joined.push_str(&String::from_utf8_lossy(v.as_bytes()));
        }
        self.compare(&joined) != self.invert
    }

    fn compare(&self, value: &str) -> bool {
        let eq = |a: &str, b: &str| {
            if self.ignore_case {
                a.eq_ignore_ascii_case(b)
            } else {
                a == b
            }
        };
        match &self.value {
            ValueMatch::Exact(want) => eq(value, want),
            ValueMatch::Prefix(p) => value.len() >= p.len() && eq(&value[..p.len()], p),
            ValueMatch::Suffix(s) => {
                value.len() >= s.len()
                    && value.is_char_boundary(value.len() - s.len())
                    && eq(&value[value.len() - s.len()..], s)
            }
            ValueMatch::Contains(c) => {
                if self.ignore_case {
                    value.to_ascii_lowercase().contains(&c.to_ascii_lowercase())
                } else {
                    value.contains(c.as_str())
                }
            }
            ValueMatch::Regex(re) => re.is_match(value),
            ValueMatch::Present(want) => *want,
        }
    }
}

/// Validates a list of raw matchers found at `path`.
pub fn header_matchers(
    raw: &[RawHeaderMatcher],
    path: &str,
    problems: &mut Problems,
) -> Vec<HeaderMatcher> {
    raw.iter()
        .enumerate()
        .filter_map(|(i, m)| HeaderMatcher::from_raw(m, &crate::source::index(path, i), problems))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matcher(yaml: &str) -> HeaderMatcher {
        let raw: RawHeaderMatcher = serde_json::from_str(yaml).unwrap();
        let mut p = Problems::default();
        let m = HeaderMatcher::from_raw(&raw, "h", &mut p).unwrap();
        assert!(p.is_empty());
        m
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    #[test]
    fn exact_prefix_regex_and_presence() {
        let m = matcher(r#"{"name":"x-inject-fault","string_match":{"exact":"yes"}}"#);
        assert!(m.matches(&headers(&[("x-inject-fault", "yes")])));
        assert!(!m.matches(&headers(&[("x-inject-fault", "no")])));
        assert!(!m.matches(&headers(&[])));
        let m = matcher(r#"{"name":"x-v","prefixMatch":"v1"}"#);
        assert!(m.matches(&headers(&[("x-v", "v1.2")])));
        let m = matcher(r#"{"name":"x-v","safe_regex_match":{"regex":"v[0-9]+"}}"#);
        assert!(m.matches(&headers(&[("x-v", "v12")])));
        assert!(
            !m.matches(&headers(&[("x-v", "v12x")])),
            "regex must match the whole value"
        );
        let m = matcher(r#"{"name":"x-v"}"#);
        assert!(m.matches(&headers(&[("x-v", "")])));
        assert!(!m.matches(&headers(&[])));
        let m = matcher(r#"{"name":"x-v","present_match":false}"#);
        assert!(m.matches(&headers(&[])));
    }

    #[test]
    fn invert_and_missing() {
        let m = matcher(r#"{"name":"x-v","exact_match":"a","invert_match":true}"#);
        assert!(m.matches(&headers(&[("x-v", "b")])));
        assert!(!m.matches(&headers(&[("x-v", "a")])));
        assert!(
            !m.matches(&headers(&[])),
            "a missing header does not match an inverted exact"
        );
        let m = matcher(r#"{"name":"x-v","exact_match":"","treat_missing_header_as_empty":true}"#);
        assert!(m.matches(&headers(&[])));
    }

    #[test]
    fn multiple_values_are_joined() {
        let m = matcher(r#"{"name":"x-v","exact_match":"a,b"}"#);
        assert!(m.matches(&headers(&[("x-v", "a"), ("x-v", "b")])));
    }

    #[test]
    fn two_forms_are_rejected() {
        let raw: RawHeaderMatcher =
            serde_json::from_str(r#"{"name":"x","exact_match":"a","prefix_match":"b"}"#).unwrap();
        let mut p = Problems::default();
        assert!(HeaderMatcher::from_raw(&raw, "h", &mut p).is_none());
        assert!(p.into_vec()[0].message.contains("only one way"));
    }
}
