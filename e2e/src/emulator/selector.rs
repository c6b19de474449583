//! Label selectors (equality- and set-based) and field selectors, parsed like the apiserver.

use serde_json::Value;

use super::error::{ApiError, ApiResult};

#[derive(Debug, Clone, PartialEq, Eq)]
enum Requirement {
    Exists(String),
    NotExists(String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelSelector(Vec<Requirement>);

/// Splits on commas that are not inside parentheses.
fn split_terms(s: &str) -> Vec<&str> {
    let mut terms = Vec::new();
    let mut depth = 0;
    let mut start = 0;
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                terms.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    terms.push(&s[start..]);
    terms
        .into_iter()
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .collect()
}

fn valid_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= 317
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'))
}

impl LabelSelector {
    pub fn parse(s: &str) -> ApiResult<Self> {
        let bad = |term: &str| {
            ApiError::bad_request(format!(
                "unable to parse requirement: invalid label selector term {term:?}"
            ))
        };
        let mut reqs = Vec::new();
        for term in split_terms(s) {
            let set_op = [" notin ", " in "]
                .iter()
                .find_map(|op| term.find(op).map(|i| (i, *op)));
            if let Some((i, op)) = set_op {
                let key = term[..i].trim();
                let rest = term[i + op.len()..].trim();
                let inner = rest
                    .strip_prefix('(')
                    .and_then(|r| r.strip_suffix(')'))
                    .ok_or_else(|| bad(term))?;
                let values: Vec<String> = inner
                    .split(',')
                    .map(|v| v.trim().to_string())
                    .filter(|v| !v.is_empty())
                    .collect();
                if !valid_key(key) {
                    return Err(bad(term));
                }
                reqs.push(if op == " in " {
                    Requirement::In(key.into(), values)
                } else {
                    Requirement::NotIn(key.into(), values)
                });
            } else if let Some((k, v)) = term.split_once("!=") {
                reqs.push(Requirement::NotIn(k.trim().into(), vec![v.trim().into()]));
            } else if let Some((k, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
                if !valid_key(k.trim()) {
                    return Err(bad(term));
                }
                reqs.push(Requirement::In(k.trim().into(), vec![v.trim().into()]));
            } else if let Some(k) = term.strip_prefix('!') {
                reqs.push(Requirement::NotExists(k.trim().into()));
            } else if valid_key(term) {
                reqs.push(Requirement::Exists(term.into()));
            } else {
                return Err(bad(term));
            }
        }
        Ok(Self(reqs))
    }

    pub fn matches(&self, object: &Value) -> bool {
        let labels = &object["metadata"]["labels"];
        let get = |k: &str| labels.get(k).and_then(Value::as_str);
        self.0.iter().all(|r| match r {
            Requirement::Exists(k) => get(k).is_some(),
            Requirement::NotExists(k) => get(k).is_none(),
            Requirement::In(k, vs) => get(k).is_some_and(|v| vs.iter().any(|x| x == v)),
            Requirement::NotIn(k, vs) => get(k).is_none_or(|v| vs.iter().all(|x| x != v)),
        })
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSelector(Vec<(String, bool, String)>);

impl FieldSelector {
    /// Parses `a=b,c!=d`; which fields a kind supports is checked by the caller.
    pub fn parse(s: &str) -> ApiResult<Self> {
        let mut terms = Vec::new();
        for term in split_terms(s) {
            let (field, equal, value) = if let Some((f, v)) = term.split_once("!=") {
                (f, false, v)
            } else if let Some((f, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
                (f, true, v)
            } else {
                return Err(ApiError::bad_request(format!(
                    "invalid field selector: {term:?}: missing operator"
                )));
            };
            terms.push((field.trim().to_string(), equal, value.trim().to_string()));
        }
        Ok(Self(terms))
    }

    /// The same selector with its field labels translated.
    pub fn map_fields(self, f: impl Fn(&str) -> String) -> Self {
        Self(
            self.0
                .into_iter()
                .map(|(field, eq, value)| (f(&field), eq, value))
                .collect(),
        )
    }

    /// The field labels the selector uses.
    pub fn fields(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|(field, _, _)| field.as_str())
    }

    pub fn matches(&self, object: &Value) -> bool {
        self.0.iter().all(|(field, equal, value)| {
            let mut cur = object;
            for part in field.split('.') {
                cur = &cur[part];
            }
            let actual = match cur {
                Value::String(s) => s.clone(),
                Value::Null => String::new(),
                other => other.to_string(),
            };
            (actual == *value) == *equal
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn set_based_selectors() {
        let obj = json!({"metadata": {"name": "a", "labels": {"app": "web", "tier": "front"}}});
        for (sel, want) in [
            ("app=web", true),
            ("app==web,tier", true),
            ("app in (db, web)", true),
            ("app notin (web)", false),
            ("!missing", true),
            ("tier!=front", false),
            ("app=web,tier in (back)", false),
        ] {
            assert_eq!(
                LabelSelector::parse(sel).unwrap().matches(&obj),
                want,
                "{sel}"
            );
        }
        assert!(LabelSelector::parse("a b c").is_err());
    }

    #[test]
    fn field_selectors() {
        let obj = json!({"metadata": {"name": "a", "namespace": "ns"}});
        assert!(
            FieldSelector::parse("metadata.name=a,metadata.namespace!=other")
                .unwrap()
                .matches(&obj)
        );
        assert!(!FieldSelector::parse("metadata.name==b")
            .unwrap()
            .matches(&obj));
    }
}
