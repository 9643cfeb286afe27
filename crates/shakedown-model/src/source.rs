//! Reading a config document while remembering where every value came from.
//!
//! Users write YAML (or JSON, which YAML 1.2 contains). We parse it once into a tree with source
//! positions, convert that tree into a `serde_json::Value` for serde, and keep a map from each
//! value's *path* (`faults[0].abort.http_status`) to its line and column. Serde errors (via
//! `serde_path_to_error`) and our own validation errors both carry such a path, so every error can
//! name `file:line:column` without the raw types knowing anything about positions.

use std::collections::HashMap;
use std::fmt;

use saphyr::{LoadableYamlNode, MarkedYaml, Scalar, YamlData};
use serde::de::DeserializeOwned;
use serde_json::{Map, Number, Value};

/// A 1-based line and column in a source file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Location {
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
}

/// One problem found in a config document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// Where the document came from (a file path, `<api>`, …).
    pub origin: String,
    /// Position of the offending value, when the document had positions.
    pub location: Option<Location>,
    /// Path of the offending field, e.g. `faults[0].abort.http_status`.
    pub path: String,
    /// What is wrong, in words.
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.origin)?;
        if let Some(loc) = self.location {
            write!(f, ":{}:{}", loc.line, loc.column)?;
        }
        if self.path.is_empty() {
            write!(f, ": {}", self.message)
        } else {
            write!(f, ": {}: {}", self.path, self.message)
        }
    }
}

/// Every problem found in one document; the document is rejected as a whole.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    /// The problems, in document order where known.
    pub diagnostics: Vec<Diagnostic>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.diagnostics.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

/// A parsed document: its value and where each path sits in the text.
#[derive(Debug, Clone)]
pub struct Document {
    origin: String,
    value: Value,
    spans: HashMap<String, Location>,
}

impl Document {
    /// Parses YAML (or JSON) text. `origin` names the source in error messages.
    pub fn parse(origin: &str, text: &str) -> Result<Self, ConfigError> {
        let docs = MarkedYaml::load_from_str(text).map_err(|e| {
            let m = e.marker();
            single(
                origin,
                Some(location(m.line(), m.col())),
                "",
                e.info().to_string(),
            )
        })?;
        let mut spans = HashMap::new();
        let value = match docs.into_iter().next() {
            None => Value::Object(Map::new()),
            Some(root) => {
                let mut errors = Vec::new();
                let v = convert(&root, String::new(), &mut spans, &mut errors, origin);
                if !errors.is_empty() {
                    return Err(ConfigError {
                        diagnostics: errors,
                    });
                }
                v
            }
        };
        Ok(Self {
            origin: origin.to_owned(),
            value,
            spans,
        })
    }

    /// Wraps an already-parsed JSON value (e.g. an API body); errors then name paths only.
    pub fn from_value(origin: &str, value: Value) -> Self {
        Self {
            origin: origin.to_owned(),
            value,
            spans: HashMap::new(),
        }
    }

    /// The same positions over a transformed value whose paths did not move (templates
    /// rendered in place).
    pub fn with_value(&self, value: Value) -> Document {
        Document {
            origin: self.origin.clone(),
            value,
            spans: self.spans.clone(),
        }
    }

    /// The document as a JSON value.
    pub fn value(&self) -> &Value {
        &self.value
    }

    /// The origin given at parse time.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// Deserializes the whole document into a raw config type, with a located error on failure.
    pub fn deserialize<T: DeserializeOwned>(&self) -> Result<T, ConfigError> {
        let de = self.value.clone();
        serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            let path = if path == "." { String::new() } else { path };
            let message = e.into_inner().to_string();
            ConfigError {
                diagnostics: vec![self.diagnostic(&path, message)],
            }
        })
    }

    /// Like [`Document::deserialize`], but an unknown field does not hide the rest: each one
    /// is recorded as a problem and left out, and deserializing goes on, so a file with a typo
    /// and a bad value gets both reported at once. Any other serde error stops it.
    pub fn deserialize_reporting_unknown<T: DeserializeOwned>(
        &self,
    ) -> Result<(T, Vec<Problem>), ConfigError> {
        let mut value = self.value.clone();
        let mut unknown: Vec<Problem> = Vec::new();
        for _ in 0..64 {
            match serde_path_to_error::deserialize::<_, T>(value.clone()) {
                Ok(t) => return Ok((t, unknown)),
                Err(e) => {
                    let path = e.path().to_string();
                    let path = if path == "." { String::new() } else { path };
                    let message = e.into_inner().to_string();
                    let field = message
                        .strip_prefix("unknown field `")
                        .and_then(|r| r.split('`').next())
                        .map(str::to_owned);
                    let Some(field) = field else {
                        unknown.push(Problem { path, message });
                        return Err(self.errors(unknown));
                    };
                    // The path may end at the unknown key itself or at its object.
                    let parent = match path.strip_suffix(&field) {
                        Some(p) => p.strip_suffix('.').unwrap_or(p).to_owned(),
                        None => path.clone(),
                    };
                    let removed = value_at_mut(&mut value, &parent)
                        .and_then(Value::as_object_mut)
                        .and_then(|o| o.remove(&field))
                        .is_some();
                    unknown.push(Problem {
                        path: join(&parent, &field),
                        message,
                    });
                    if !removed {
                        return Err(self.errors(unknown));
                    }
                }
            }
        }
        Err(self.errors(unknown))
    }

    /// A diagnostic at `path`, located at the nearest enclosing value that has a position.
    pub fn diagnostic(&self, path: &str, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            origin: self.origin.clone(),
            location: self.locate(path),
            path: path.to_owned(),
            message: message.into(),
        }
    }

    /// Turns validation problems (path + message) into a located error, in document order.
    pub fn errors(&self, problems: Vec<Problem>) -> ConfigError {
        let mut diagnostics: Vec<Diagnostic> = problems
            .into_iter()
            .map(|p| self.diagnostic(&p.path, p.message))
            .collect();
        diagnostics.sort_by_key(|d| d.location.map(|l| (l.line, l.column)));
        ConfigError { diagnostics }
    }

    fn locate(&self, path: &str) -> Option<Location> {
        let mut p = path;
        loop {
            if let Some(loc) = self.spans.get(p) {
                return Some(*loc);
            }
            if p.is_empty() {
                return None;
            }
            // Walk up one segment: `a.b[2].c` -> `a.b[2]` -> `a.b` -> `a` -> ``.
            let cut = p.rfind(['.', '[']).unwrap_or(0);
            p = &p[..cut];
        }
    }
}

/// A validation problem before it is located: the path of the field and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Path of the field, in the `a.b[0].c` form.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

/// Collects validation problems while walking a raw config.
#[derive(Debug, Default)]
pub struct Problems {
    list: Vec<Problem>,
}

impl Problems {
    /// Records a problem at `path`.
    pub fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.list.push(Problem {
            path: path.into(),
            message: message.into(),
        });
    }

    /// How many problems were recorded.
    pub fn len(&self) -> usize {
        self.list.len()
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// The recorded problems.
    pub fn into_vec(self) -> Vec<Problem> {
        self.list
    }
}

/// The value at a `a.b[2].c` path.
fn value_at_mut<'a>(root: &'a mut Value, path: &str) -> Option<&'a mut Value> {
    let mut v = root;
    if path.is_empty() {
        return Some(v);
    }
    for part in path.split('.') {
        let (key, indices) = match part.find('[') {
            Some(i) => (&part[..i], &part[i..]),
            None => (part, ""),
        };
        if !key.is_empty() {
            v = v.get_mut(key)?;
        }
        for idx in indices.split('[').filter(|s| !s.is_empty()) {
            let i: usize = idx.trim_end_matches(']').parse().ok()?;
            v = v.get_mut(i)?;
        }
    }
    Some(v)
}

/// Joins a parent path and a field name the way `serde_path_to_error` prints paths.
pub fn join(parent: &str, field: &str) -> String {
    if parent.is_empty() {
        field.to_owned()
    } else {
        format!("{parent}.{field}")
    }
}

/// Joins a parent path and a sequence index.
pub fn index(parent: &str, i: usize) -> String {
    format!("{parent}[{i}]")
}

fn location(line: usize, col0: usize) -> Location {
    Location {
        line,
        column: col0 + 1,
    }
}

fn single(origin: &str, location: Option<Location>, path: &str, message: String) -> ConfigError {
    ConfigError {
        diagnostics: vec![Diagnostic {
            origin: origin.to_owned(),
            location,
            path: path.to_owned(),
            message,
        }],
    }
}

fn convert(
    node: &MarkedYaml<'_>,
    path: String,
    spans: &mut HashMap<String, Location>,
    errors: &mut Vec<Diagnostic>,
    origin: &str,
) -> Value {
    let here = location(node.span.start.line(), node.span.start.col());
    spans.insert(path.clone(), here);
    match &node.data {
        YamlData::Value(s) => match scalar(s) {
            Some(v) => v,
            None => {
                errors.push(Diagnostic {
                    origin: origin.to_owned(),
                    location: Some(here),
                    path,
                    message: "numbers must be finite".into(),
                });
                Value::Null
            }
        },
        YamlData::Sequence(items) => Value::Array(
            items
                .iter()
                .enumerate()
                .map(|(i, item)| convert(item, index(&path, i), spans, errors, origin))
                .collect(),
        ),
        YamlData::Mapping(map) => {
            let mut out = Map::new();
            for (k, v) in map {
                let key = match &k.data {
                    YamlData::Value(s) => scalar_key(s),
                    _ => {
                        errors.push(Diagnostic {
                            origin: origin.to_owned(),
                            location: Some(location(k.span.start.line(), k.span.start.col())),
                            path: path.clone(),
                            message: "mapping keys must be plain scalars".into(),
                        });
                        continue;
                    }
                };
                let child = join(&path, &key);
                let value = convert(v, child, spans, errors, origin);
                if out.insert(key.clone(), value).is_some() {
                    errors.push(Diagnostic {
                        origin: origin.to_owned(),
                        location: Some(location(k.span.start.line(), k.span.start.col())),
                        path: join(&path, &key),
                        message: "duplicate key".into(),
                    });
                }
            }
            Value::Object(out)
        }
        YamlData::Tagged(_, inner) => convert(inner, path, spans, errors, origin),
        YamlData::Alias(_) | YamlData::Representation(..) | YamlData::BadValue => {
            errors.push(Diagnostic {
                origin: origin.to_owned(),
                location: Some(here),
                path,
                message: "unsupported YAML construct (aliases and bad scalars are not accepted)"
                    .into(),
            });
            Value::Null
        }
    }
}

fn scalar(s: &Scalar<'_>) -> Option<Value> {
    Some(match s {
        Scalar::Null => Value::Null,
        Scalar::Boolean(b) => Value::Bool(*b),
        Scalar::Integer(i) => Value::Number((*i).into()),
        Scalar::FloatingPoint(f) => Value::Number(Number::from_f64(f.into_inner())?),
        Scalar::String(s) => Value::String(s.to_string()),
    })
}

fn scalar_key(s: &Scalar<'_>) -> String {
    match s {
        Scalar::Null => "null".into(),
        Scalar::Boolean(b) => b.to_string(),
        Scalar::Integer(i) => i.to_string(),
        Scalar::FloatingPoint(f) => f.to_string(),
        Scalar::String(s) => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Inner {
        code: u16,
    }

    #[derive(serde::Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Outer {
        items: Vec<Inner>,
    }

    #[test]
    fn serde_errors_name_line_and_column() {
        let doc = Document::parse("f.yaml", "items:\n  - code: 200\n  - code: nope\n").unwrap();
        let err = doc.deserialize::<Outer>().unwrap_err();
        let d = &err.diagnostics[0];
        assert_eq!(d.path, "items[1].code");
        assert_eq!(
            d.location,
            Some(Location {
                line: 3,
                column: 11
            })
        );
        assert!(
            err.to_string()
                .starts_with("f.yaml:3:11: items[1].code: invalid type"),
            "{err}"
        );
    }

    #[test]
    fn unknown_fields_are_located() {
        let doc = Document::parse("f.yaml", "items:\n  - code: 200\n    colour: red\n").unwrap();
        let err = doc.deserialize::<Outer>().unwrap_err();
        assert!(err.to_string().contains("unknown field `colour`"), "{err}");
        assert_eq!(
            err.diagnostics[0].location.map(|l| l.line),
            Some(3),
            "points at the unknown key"
        );
    }

    #[test]
    fn syntax_errors_have_positions() {
        let err = Document::parse("f.yaml", "a: [1, 2\nb: 3\n").unwrap_err();
        assert!(err.diagnostics[0].location.is_some(), "{err}");
    }

    #[test]
    fn duplicate_keys_are_rejected() {
        let err = Document::parse("f.yaml", "a: 1\na: 2\n").unwrap_err();
        assert!(err.to_string().contains("duplicated key"), "{err}");
        assert!(err.to_string().starts_with("f.yaml:2:"), "{err}");
    }

    #[test]
    fn quoted_numbers_stay_strings() {
        let doc = Document::parse("f.yaml", "a: \"503\"\nb: 503\n").unwrap();
        assert_eq!(doc.value()["a"], Value::String("503".into()));
        assert_eq!(doc.value()["b"], Value::from(503));
    }
}
