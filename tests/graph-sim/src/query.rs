//! OData query options as Graph parses them: option names are case-insensitive (`$deltaToken`
//! and `$deltatoken` are the same), `$select` names must exist on the type, and `$filter`
//! supports the small subset the project uses.

use std::collections::HashMap;

use serde_json::{Map, Value};

use crate::error::{GraphError, GraphResult};
use crate::state::USER_ALL_PROPERTIES;

/// Query options keyed by lower-cased name.
#[derive(Debug, Default, Clone)]
pub struct QueryOptions(pub HashMap<String, String>);

impl QueryOptions {
    pub fn from_raw(raw: Option<&str>) -> Self {
        let mut map = HashMap::new();
        if let Some(q) = raw {
            for (k, v) in url::form_urlencoded::parse(q.as_bytes()) {
                map.insert(k.to_ascii_lowercase(), v.into_owned());
            }
        }
        QueryOptions(map)
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(&name.to_ascii_lowercase()).map(String::as_str)
    }

    /// `$select` for users, validated: an unknown property is a 400 like in Graph.
    pub fn user_select(&self) -> GraphResult<Option<Vec<String>>> {
        let Some(raw) = self.get("$select") else {
            return Ok(None);
        };
        let mut fields = Vec::new();
        for f in raw.split(',').map(str::trim).filter(|f| !f.is_empty()) {
            let known = USER_ALL_PROPERTIES
                .iter()
                .find(|p| p.eq_ignore_ascii_case(f))
                .ok_or_else(|| {
                    GraphError::bad_request(format!(
                        "Could not find a property named '{f}' on type 'Microsoft.DirectoryServices.User'."
                    ))
                })?;
            if !fields.iter().any(|x: &String| x == known) {
                fields.push((*known).to_string());
            }
        }
        Ok(Some(fields))
    }
}

/// One `property eq 'value'` clause (or `eq true/false/null`).
#[derive(Debug, Clone)]
pub struct EqClause {
    pub property: String,
    pub value: Value,
}

/// Parses `$filter` expressions of the form `a eq 'x' and b eq true`, plus
/// `startswith(prop,'x')`. Anything else is rejected the way Graph rejects unsupported queries.
pub fn parse_filter(filter: &str) -> GraphResult<Vec<Filter>> {
    let mut clauses = Vec::new();
    for part in split_and(filter) {
        let part = part.trim();
        if let Some(inner) = part
            .strip_prefix("startswith(")
            .or_else(|| part.strip_prefix("startsWith("))
            .and_then(|p| p.strip_suffix(')'))
        {
            let (prop, val) = inner.split_once(',').ok_or_else(|| unsupported(filter))?;
            let val = parse_literal(val.trim()).ok_or_else(|| unsupported(filter))?;
            clauses.push(Filter::StartsWith(EqClause {
                property: canonical_property(prop.trim())?,
                value: val,
            }));
            continue;
        }
        let mut it = part.splitn(3, ' ');
        let (Some(prop), Some(op), Some(val)) = (it.next(), it.next(), it.next()) else {
            return Err(unsupported(filter));
        };
        if !op.eq_ignore_ascii_case("eq") {
            return Err(unsupported(filter));
        }
        let value = parse_literal(val.trim()).ok_or_else(|| unsupported(filter))?;
        clauses.push(Filter::Eq(EqClause {
            property: canonical_property(prop)?,
            value,
        }));
    }
    Ok(clauses)
}

#[derive(Debug, Clone)]
pub enum Filter {
    Eq(EqClause),
    StartsWith(EqClause),
}

impl Filter {
    pub fn matches(&self, props: &Map<String, Value>) -> bool {
        match self {
            Filter::Eq(c) => {
                let actual = props.get(&c.property).unwrap_or(&Value::Null);
                match (actual, &c.value) {
                    (Value::String(a), Value::String(b)) => a.eq_ignore_ascii_case(b),
                    (a, b) => a == b,
                }
            }
            Filter::StartsWith(c) => match (props.get(&c.property), &c.value) {
                (Some(Value::String(a)), Value::String(b)) => {
                    a.to_ascii_lowercase().starts_with(&b.to_ascii_lowercase())
                }
                _ => false,
            },
        }
    }
}

fn split_and(filter: &str) -> Vec<String> {
    // Split on " and " outside quotes.
    let mut parts = Vec::new();
    let mut current = String::new();
    let mut in_quote = false;
    let chars: Vec<char> = filter.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '\'' {
            in_quote = !in_quote;
        }
        if !in_quote
            && filter[byte_index(&chars, i)..]
                .to_ascii_lowercase()
                .starts_with(" and ")
        {
            parts.push(std::mem::take(&mut current));
            i += 5;
            continue;
        }
        current.push(c);
        i += 1;
    }
    parts.push(current);
    parts
}

fn byte_index(chars: &[char], i: usize) -> usize {
    chars[..i].iter().map(|c| c.len_utf8()).sum()
}

fn parse_literal(val: &str) -> Option<Value> {
    if let Some(s) = val.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')) {
        return Some(Value::String(s.replace("''", "'")));
    }
    match val {
        "true" => Some(Value::Bool(true)),
        "false" => Some(Value::Bool(false)),
        "null" => Some(Value::Null),
        _ => None,
    }
}

fn canonical_property(p: &str) -> GraphResult<String> {
    USER_ALL_PROPERTIES
        .iter()
        .find(|k| k.eq_ignore_ascii_case(p))
        .map(|k| (*k).to_string())
        .ok_or_else(|| {
            GraphError::bad_request(format!(
                "Could not find a property named '{p}' on type 'Microsoft.DirectoryServices.User'."
            ))
        })
}

fn unsupported(filter: &str) -> GraphError {
    GraphError::new(
        axum::http::StatusCode::BAD_REQUEST,
        "Request_UnsupportedQuery",
        format!("Unsupported query: '{filter}'."),
    )
}
