//! OData query options as Graph parses them: option names are case-insensitive (`$deltaToken`
//! and `$deltatoken` are the same), `$select` names must exist on the type, and `$filter`
//! supports the small subset the project uses.

use std::collections::HashMap;

use axum::http::{HeaderMap, StatusCode};
use serde_json::{Map, Value};

use crate::error::{GraphError, GraphResult};
use crate::state::{GROUP_PROPERTIES, USER_ALL_PROPERTIES};

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
        self.select_of(USER_ALL_PROPERTIES, "User")
    }

    /// `$select` for groups: their properties and the `members` relationship (what
    /// `groups/delta` tracks membership changes with).
    pub fn group_select(&self) -> GraphResult<Option<Vec<String>>> {
        let known: Vec<&str> = GROUP_PROPERTIES
            .iter()
            .copied()
            .chain(std::iter::once("members"))
            .collect();
        self.select_of(&known, "Group")
    }

    fn select_of(&self, known: &[&str], type_name: &str) -> GraphResult<Option<Vec<String>>> {
        let Some(raw) = self.get("$select") else {
            return Ok(None);
        };
        let mut fields = Vec::new();
        for f in raw.split(',').map(str::trim).filter(|f| !f.is_empty()) {
            let known = known
                .iter()
                .find(|p| p.eq_ignore_ascii_case(f))
                .ok_or_else(|| {
                    GraphError::bad_request(format!(
                        "Could not find a property named '{f}' on type 'Microsoft.DirectoryServices.{type_name}'."
                    ))
                })?;
            if !fields.iter().any(|x: &String| x == known) {
                fields.push((*known).to_string());
            }
        }
        Ok(Some(fields))
    }

    /// Graph's *advanced query parameters*: the `ConsistencyLevel: eventual` header and
    /// `$count=true`, both required to unlock the advanced `$filter` operators and properties.
    /// `$count=true` without the header is silently ignored, as Graph documents.
    pub fn advanced_query(&self, headers: &HeaderMap) -> bool {
        let eventual = headers
            .get("consistencylevel")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("eventual"));
        let count = self
            .get("$count")
            .is_some_and(|c| c.eq_ignore_ascii_case("true"));
        eventual && count
    }
}

/// Most objects a delta `$filter` may name (Graph's group: delta page: "There is a limit of 50
/// filtered objects").
pub const MAX_DELTA_FILTER_IDS: usize = 50;

/// The only `$filter` delta queries take: `id eq '{id}'`, several joined by `or`. The ids,
/// lower-cased.
pub fn parse_id_filter(raw: &str) -> GraphResult<Vec<String>> {
    let unsupported = || {
        GraphError::new(
            StatusCode::BAD_REQUEST,
            "Request_UnsupportedQuery",
            "Unsupported Query.",
        )
    };
    let lower = raw.trim().to_ascii_lowercase();
    let mut ids: Vec<String> = Vec::new();
    for clause in lower.split(" or ").map(str::trim) {
        let id = clause
            .strip_prefix("id")
            .filter(|rest| rest.starts_with(char::is_whitespace))
            .map(str::trim_start)
            .and_then(|rest| rest.strip_prefix("eq"))
            .filter(|rest| rest.starts_with(char::is_whitespace))
            .map(str::trim)
            .and_then(|v| v.strip_prefix('\''))
            .and_then(|v| v.strip_suffix('\''))
            .filter(|v| !v.is_empty() && !v.contains('\''))
            .ok_or_else(unsupported)?;
        if !ids.iter().any(|known| known == id) {
            ids.push(id.to_string());
        }
    }
    if ids.len() > MAX_DELTA_FILTER_IDS {
        return Err(GraphError::new(
            StatusCode::BAD_REQUEST,
            "Request_UnsupportedQuery",
            format!(
                "The $filter names {} objects; delta queries track at most {MAX_DELTA_FILTER_IDS}.",
                ids.len()
            ),
        ));
    }
    Ok(ids)
}

/// User properties whose `eq` and `startsWith` filters Graph serves only as advanced queries
/// (the "Requires advanced query parameters" cells of Graph's filter table for users).
pub const ADVANCED_ONLY_FILTER_PROPERTIES: &[&str] = &[
    "companyName",
    "mobilePhone",
    "officeLocation",
    "onPremisesSamAccountName",
    "preferredLanguage",
];

/// The complex property whose members are filtered by path
/// (`onPremisesExtensionAttributes/extensionAttribute15 eq 'x'`), only as advanced queries.
const EXTENSION_ATTRIBUTES: &str = "onPremisesExtensionAttributes";

/// Multi-valued user properties: filtered only through a lambda (`otherMails/any(x:x eq 'a')`).
const COLLECTION_PROPERTIES: &[&str] = &["businessPhones", "otherMails"];

/// One `property op value` comparison.
#[derive(Debug, Clone)]
pub struct EqClause {
    pub property: String,
    pub value: Value,
}

/// One clause of a `$filter`.
#[derive(Debug, Clone)]
pub enum Filter {
    /// `prop eq 'x'` (or `eq true/false/null`).
    Eq(EqClause),
    /// `prop ne 'x'` (advanced queries only).
    Ne(EqClause),
    /// `startsWith(prop,'x')`.
    StartsWith(EqClause),
    /// `endsWith(prop,'x')` (advanced queries only).
    EndsWith(EqClause),
    /// `prop/any(x:x eq 'v')` on a collection.
    AnyEq(EqClause),
}

/// A parsed `$filter`: clauses joined by `and`, those groups joined by `or` (`and` binds
/// tighter, as in OData).
#[derive(Debug, Clone, Default)]
pub struct FilterExpr {
    pub any_of: Vec<Vec<Filter>>,
}

impl FilterExpr {
    pub fn matches(&self, props: &Map<String, Value>) -> bool {
        self.any_of.is_empty()
            || self
                .any_of
                .iter()
                .any(|group| group.iter().all(|f| f.matches(props)))
    }

    /// The error Graph answers when a clause needs the advanced query parameters and the
    /// request lacks them; `None` when every clause works by default.
    pub fn advanced_requirement(&self) -> Option<GraphError> {
        self.any_of
            .iter()
            .flatten()
            .find_map(Filter::advanced_requirement)
    }
}

/// Parses `$filter` expressions of the form `a eq 'x' and b eq true or c ne null`, plus
/// `startsWith(prop,'x')`, `endsWith(prop,'x')` and `coll/any(x:x eq 'v')`. Anything else is
/// rejected the way Graph rejects unsupported queries.
pub fn parse_filter(filter: &str) -> GraphResult<FilterExpr> {
    let mut any_of = Vec::new();
    for alternative in split_outside(filter, " or ") {
        let mut group = Vec::new();
        for part in split_outside(&alternative, " and ") {
            group.push(parse_clause(part.trim(), filter)?);
        }
        any_of.push(group);
    }
    Ok(FilterExpr { any_of })
}

fn parse_clause(part: &str, filter: &str) -> GraphResult<Filter> {
    if let Some((name, args)) = function_call(part) {
        let (prop, val) = args.split_once(',').ok_or_else(|| unsupported(filter))?;
        let clause = EqClause {
            property: scalar_property(prop.trim(), filter)?,
            value: parse_literal(val.trim()).ok_or_else(|| unsupported(filter))?,
        };
        return match name.to_ascii_lowercase().as_str() {
            "startswith" => Ok(Filter::StartsWith(clause)),
            "endswith" => Ok(Filter::EndsWith(clause)),
            _ => Err(unsupported(filter)),
        };
    }
    if let Some(clause) = parse_lambda(part, filter)? {
        return Ok(Filter::AnyEq(clause));
    }
    let mut it = part.splitn(3, ' ');
    let (Some(prop), Some(op), Some(val)) = (it.next(), it.next(), it.next()) else {
        return Err(unsupported(filter));
    };
    let clause = EqClause {
        property: scalar_property(prop, filter)?,
        value: parse_literal(val.trim()).ok_or_else(|| unsupported(filter))?,
    };
    match op.to_ascii_lowercase().as_str() {
        "eq" => Ok(Filter::Eq(clause)),
        "ne" => Ok(Filter::Ne(clause)),
        _ => Err(unsupported(filter)),
    }
}

/// `name(args)` for the string functions Graph supports on users.
fn function_call(part: &str) -> Option<(&str, &str)> {
    let (name, rest) = part.split_once('(')?;
    let name = name.trim();
    let known = ["startswith", "endswith"]
        .iter()
        .any(|f| f.eq_ignore_ascii_case(name));
    known.then_some(())?;
    Some((name, rest.strip_suffix(')')?))
}

/// `coll/any(x:x eq 'v')` (any variable name, optional spaces). `Ok(None)` when `part` is not
/// a lambda at all.
fn parse_lambda(part: &str, filter: &str) -> GraphResult<Option<EqClause>> {
    let lower = part.to_ascii_lowercase();
    let Some(at) = lower.find("/any(") else {
        return Ok(None);
    };
    let property = canonical_property(part[..at].trim())?;
    if !COLLECTION_PROPERTIES.contains(&property.as_str()) {
        return Err(unsupported(filter));
    }
    let inner = part[at + "/any(".len()..]
        .strip_suffix(')')
        .ok_or_else(|| unsupported(filter))?;
    let (var, body) = inner.split_once(':').ok_or_else(|| unsupported(filter))?;
    let mut it = body.trim().splitn(3, ' ');
    let (Some(lhs), Some(op), Some(val)) = (it.next(), it.next(), it.next()) else {
        return Err(unsupported(filter));
    };
    if lhs != var.trim() || !op.eq_ignore_ascii_case("eq") {
        return Err(unsupported(filter));
    }
    let value = parse_literal(val.trim()).ok_or_else(|| unsupported(filter))?;
    Ok(Some(EqClause { property, value }))
}

impl Filter {
    pub fn matches(&self, props: &Map<String, Value>) -> bool {
        match self {
            Filter::Eq(c) => equal(lookup(props, &c.property), &c.value),
            Filter::Ne(c) => !equal(lookup(props, &c.property), &c.value),
            Filter::StartsWith(c) => string_test(props, c, |a, b| a.starts_with(b)),
            Filter::EndsWith(c) => string_test(props, c, |a, b| a.ends_with(b)),
            Filter::AnyEq(c) => props
                .get(&c.property)
                .and_then(Value::as_array)
                .is_some_and(|items| items.iter().any(|item| equal(item, &c.value))),
        }
    }

    /// Graph's answer to this clause without the advanced query parameters, if it needs them:
    /// `ne` and `endsWith` always do; so do `null` comparisons and the properties in
    /// [`ADVANCED_ONLY_FILTER_PROPERTIES`].
    fn advanced_requirement(&self) -> Option<GraphError> {
        let (operator, clause) = match self {
            Filter::Ne(_) => return Some(operator_needs_advanced("ne")),
            Filter::EndsWith(_) => return Some(operator_needs_advanced("endsWith")),
            Filter::AnyEq(_) => return None,
            Filter::Eq(c) => ("eq", c),
            Filter::StartsWith(c) => ("startsWith", c),
        };
        let advanced_property = ADVANCED_ONLY_FILTER_PROPERTIES.contains(&clause.property.as_str())
            || clause.property.starts_with(EXTENSION_ATTRIBUTES);
        (clause.value.is_null() || advanced_property).then(|| {
            GraphError::new(
                StatusCode::BAD_REQUEST,
                "Request_UnsupportedQuery",
                format!(
                    "Unsupported or invalid query filter clause specified for property '{}' of resource 'User'. Operator '{operator}' on it requires advanced query parameters: $count=true and ConsistencyLevel:eventual.",
                    clause.property
                ),
            )
        })
    }
}

/// The documented answer to an advanced-only operator sent without `$count=true` and
/// `ConsistencyLevel: eventual`.
fn operator_needs_advanced(operator: &str) -> GraphError {
    GraphError::new(
        StatusCode::BAD_REQUEST,
        "Request_UnsupportedQuery",
        format!(
            "Operator '{operator}' is not supported because the required parameters might be missing. Try adding $count=true query parameter and ConsistencyLevel:eventual header. Refer to https://aka.ms/graph-docs/advanced-queries for more information"
        ),
    )
}

/// Directory string comparisons are case-insensitive.
fn equal(actual: &Value, expected: &Value) -> bool {
    match (actual, expected) {
        (Value::String(a), Value::String(b)) => a.eq_ignore_ascii_case(b),
        (a, b) => a == b,
    }
}

/// A property's value, `a/b` reaching into a complex property; null when absent.
fn lookup<'a>(props: &'a Map<String, Value>, property: &str) -> &'a Value {
    let value = match property.split_once('/') {
        Some((outer, inner)) => props.get(outer).and_then(|v| v.get(inner)),
        None => props.get(property),
    };
    value.unwrap_or(&Value::Null)
}

fn string_test(props: &Map<String, Value>, c: &EqClause, test: fn(&str, &str) -> bool) -> bool {
    match (lookup(props, &c.property), &c.value) {
        (Value::String(a), Value::String(b)) => {
            test(&a.to_ascii_lowercase(), &b.to_ascii_lowercase())
        }
        _ => false,
    }
}

/// Splits on `separator` (matched case-insensitively) outside quotes and parentheses.
fn split_outside(filter: &str, separator: &str) -> Vec<String> {
    let mut parts = Vec::new();
    let mut current = String::new();
    let mut in_quote = false;
    let mut depth = 0usize;
    let mut rest = filter;
    while let Some(c) = rest.chars().next() {
        let at_separator = rest
            .get(..separator.len())
            .is_some_and(|s| s.eq_ignore_ascii_case(separator));
        if !in_quote && depth == 0 && at_separator {
            parts.push(std::mem::take(&mut current));
            rest = &rest[separator.len()..];
            continue;
        }
        match c {
            '\'' => in_quote = !in_quote,
            '(' if !in_quote => depth += 1,
            ')' if !in_quote => depth = depth.saturating_sub(1),
            _ => {}
        }
        current.push(c);
        rest = &rest[c.len_utf8()..];
    }
    parts.push(current);
    parts
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

/// A single-valued property: collections compare only through `any`; a member of
/// `onPremisesExtensionAttributes` by its path.
fn scalar_property(p: &str, filter: &str) -> GraphResult<String> {
    if let Some((outer, inner)) = p.split_once('/') {
        let n = crate::users::extension_attribute_number(inner);
        return match n {
            Some(n) if outer.eq_ignore_ascii_case(EXTENSION_ATTRIBUTES) => {
                Ok(format!("{EXTENSION_ATTRIBUTES}/extensionAttribute{n}"))
            }
            _ => Err(unsupported(filter)),
        };
    }
    let property = canonical_property(p)?;
    if COLLECTION_PROPERTIES.contains(&property.as_str()) {
        return Err(unsupported(filter));
    }
    Ok(property)
}

fn unsupported(filter: &str) -> GraphError {
    GraphError::new(
        StatusCode::BAD_REQUEST,
        "Request_UnsupportedQuery",
        format!("Unsupported query: '{filter}'."),
    )
}
