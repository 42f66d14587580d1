//! Injected faults: throttling (429 + `Retry-After`), server errors and added latency, per path
//! pattern, for the next N requests or at random with a seeded generator. `/_sim` is never
//! affected.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::error::{GraphError, TokenError};
use crate::state::RetryAfterStyle;
use crate::Sim;

/// One fault rule (the body of `POST /_sim/faults`).
///
/// In JSON, `retryAfterSeconds` may be fractional (`2.128`): it is then kept as
/// `retry_after_ms` = 2128 (and `retry_after_seconds` = 2). `retryAfterMs` may also be given
/// directly and wins over `retryAfterSeconds`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", try_from = "FaultRuleWire")]
pub struct FaultRule {
    /// Assigned by the simulator.
    #[serde(default)]
    pub id: Option<u64>,
    /// Path pattern; `*` matches any run of characters (`/v1.0/users*`, `/v1.0/users/*/checkMemberGroups`).
    pub path: String,
    /// Only this HTTP method (any when absent).
    #[serde(default)]
    pub method: Option<String>,
    /// Status to answer with (429, 500, 503, 504...); absent = only add latency.
    #[serde(default)]
    pub status: Option<u16>,
    /// `Retry-After` seconds for 429/503 (429 always carries one; default 10).
    #[serde(default)]
    pub retry_after_seconds: Option<u64>,
    /// `Retry-After` in milliseconds, for fractional values (2128 → `Retry-After: 2.128`);
    /// wins over `retry_after_seconds`.
    #[serde(default)]
    pub retry_after_ms: Option<u64>,
    /// Delay before answering (or before passing the request on).
    #[serde(default)]
    pub latency_ms: Option<u64>,
    /// Affect only the next N matching requests; the rule disappears after that.
    #[serde(default)]
    pub count: Option<u64>,
    /// Affect each matching request with this probability (0..=1), from the seeded generator.
    #[serde(default)]
    pub probability: Option<f64>,
}

/// What `POST /_sim/faults` accepts: `retryAfterSeconds` may be any non-negative number.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct FaultRuleWire {
    #[serde(default)]
    id: Option<u64>,
    path: String,
    #[serde(default)]
    method: Option<String>,
    #[serde(default)]
    status: Option<u16>,
    #[serde(default)]
    retry_after_seconds: Option<f64>,
    #[serde(default)]
    retry_after_ms: Option<u64>,
    #[serde(default)]
    latency_ms: Option<u64>,
    #[serde(default)]
    count: Option<u64>,
    #[serde(default)]
    probability: Option<f64>,
}

impl TryFrom<FaultRuleWire> for FaultRule {
    type Error = String;

    fn try_from(w: FaultRuleWire) -> Result<Self, String> {
        let mut retry_after_ms = w.retry_after_ms;
        let retry_after_seconds = match w.retry_after_seconds {
            None => None,
            Some(s) if !s.is_finite() || s < 0.0 => {
                return Err(format!(
                    "retryAfterSeconds must be a non-negative number, not {s}"
                ))
            }
            Some(s) => {
                if s.fract() != 0.0 && retry_after_ms.is_none() {
                    retry_after_ms = Some((s * 1000.0).round() as u64);
                }
                Some(s.trunc() as u64)
            }
        };
        Ok(FaultRule {
            id: w.id,
            path: w.path,
            method: w.method,
            status: w.status,
            retry_after_seconds,
            retry_after_ms,
            latency_ms: w.latency_ms,
            count: w.count,
            probability: w.probability,
        })
    }
}

/// The `Retry-After` value for an answer with `status`, or none: 429 always has one (10 s unless
/// the rule says otherwise), other statuses only when the rule gives one; `style` (switch
/// `retryAfter`) may make it fractional or leave it out.
pub fn retry_after_value(
    status: StatusCode,
    rule: &FaultRule,
    style: RetryAfterStyle,
) -> Option<String> {
    let configured_ms = rule
        .retry_after_ms
        .or(rule.retry_after_seconds.map(|s| s.saturating_mul(1000)));
    let ms = match (status, configured_ms) {
        (StatusCode::TOO_MANY_REQUESTS, c) => c.unwrap_or(10_000),
        (_, Some(c)) => c,
        (_, None) => return None,
    };
    let ms = match style {
        RetryAfterStyle::Missing => return None,
        RetryAfterStyle::Seconds => ms,
        RetryAfterStyle::Fractional if ms.is_multiple_of(1000) => ms + FRACTION_MS,
        RetryAfterStyle::Fractional => ms,
    };
    Some(format_seconds(ms))
}

/// What the `fractional` style adds to a whole number of seconds (`7` → `7.128`).
pub const FRACTION_MS: u64 = 128;

/// `7000` → `"7"`, `2128` → `"2.128"`, `2500` → `"2.5"`.
fn format_seconds(ms: u64) -> String {
    if ms.is_multiple_of(1000) {
        return (ms / 1000).to_string();
    }
    let s = format!("{}.{:03}", ms / 1000, ms % 1000);
    s.trim_end_matches('0').to_string()
}

impl FaultRule {
    /// "Fail the next `count` requests matching `path` with `status`."
    pub fn fail_next(path: &str, status: u16, count: u64) -> Self {
        FaultRule {
            path: path.into(),
            status: Some(status),
            count: Some(count),
            ..Default::default()
        }
    }

    /// Throttle the next `count` requests matching `path` with 429 and `Retry-After`.
    pub fn throttle_next(path: &str, retry_after_seconds: u64, count: u64) -> Self {
        FaultRule {
            path: path.into(),
            status: Some(429),
            retry_after_seconds: Some(retry_after_seconds),
            count: Some(count),
            ..Default::default()
        }
    }
}

#[derive(Debug)]
pub struct Faults {
    pub rules: Vec<FaultRule>,
    rng: StdRng,
    seed: u64,
    next_id: u64,
    /// Per request (method and path with query): until when its `Retry-After` said to wait.
    waits: HashMap<String, Instant>,
    /// What the injector answered, and how clients behaved (`GET /_sim/faults/stats`).
    pub stats: FaultStats,
}

/// Counters of injected faults and of retries that came before their `Retry-After`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FaultStats {
    /// Requests answered with an injected status.
    pub injected: u64,
    /// Of those, answers that carried a `Retry-After`.
    pub with_retry_after: u64,
    /// Requests repeated before the `Retry-After` their previous answer gave. Graph answers
    /// them 429 again (retrying early extends the throttling), and so does the simulator.
    pub early_retries: u64,
}

impl Faults {
    pub fn new(seed: u64) -> Self {
        Faults {
            rules: Vec::new(),
            rng: StdRng::seed_from_u64(seed),
            seed,
            next_id: 0,
            waits: HashMap::new(),
            stats: FaultStats::default(),
        }
    }

    /// How long a repeat of `request` must still wait, if its last answer said to wait.
    fn too_early(&mut self, request: &str, now: Instant) -> Option<Duration> {
        let until = self.waits.get(request).copied()?;
        if now >= until {
            self.waits.remove(request);
            return None;
        }
        self.stats.early_retries += 1;
        Some(until - now)
    }

    fn answered(&mut self, request: String, retry_after: Option<Duration>, now: Instant) {
        self.stats.injected += 1;
        if let Some(wait) = retry_after {
            self.stats.with_retry_after += 1;
            self.waits.insert(request, now + wait);
        }
    }

    pub fn add(&mut self, mut rule: FaultRule) -> u64 {
        self.next_id += 1;
        rule.id = Some(self.next_id);
        self.rules.push(rule);
        self.next_id
    }

    pub fn remove(&mut self, id: u64) -> bool {
        let before = self.rules.len();
        self.rules.retain(|r| r.id != Some(id));
        before != self.rules.len()
    }

    /// Removes all rules and restarts the random sequence (so runs are reproducible); the
    /// counters stay, for whoever reads them after the faults.
    pub fn clear(&mut self) {
        self.rules.clear();
        self.waits.clear();
        self.rng = StdRng::seed_from_u64(self.seed);
    }

    /// The first rule that applies to this request, consuming one of its `count`.
    fn take(&mut self, method: &str, path: &str) -> Option<FaultRule> {
        for i in 0..self.rules.len() {
            let r = &self.rules[i];
            if r.method
                .as_deref()
                .is_some_and(|m| !m.eq_ignore_ascii_case(method))
                || !glob_match(&r.path, path)
            {
                continue;
            }
            if let Some(p) = r.probability {
                if self.rng.gen::<f64>() >= p {
                    continue;
                }
            }
            let hit = self.rules[i].clone();
            if let Some(c) = &mut self.rules[i].count {
                *c = c.saturating_sub(1);
                if *c == 0 {
                    self.rules.remove(i);
                }
            }
            return Some(hit);
        }
        None
    }
}

/// `*` matches any (possibly empty) run of characters; everything else literally.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti, mut star, mut mark) = (0usize, 0usize, None::<usize>, 0usize);
    while ti < t.len() {
        if pi < p.len() && p[pi] != '*' && p[pi] == t[ti] {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

pub async fn inject(State(sim): State<Arc<Sim>>, req: Request, next: Next) -> Response {
    let path = req.uri().path().to_string();
    if path.starts_with("/_sim") {
        return next.run(req).await;
    }
    let request = format!(
        "{} {}",
        req.method(),
        req.uri()
            .path_and_query()
            .map_or(path.as_str(), |p| p.as_str())
    );
    let now = Instant::now();
    let enforced = !sim.world().switches.early_retries_allowed;
    let (early, rule) = {
        let mut faults = sim.faults.lock().unwrap_or_else(|e| e.into_inner());
        match faults.too_early(&request, now).filter(|_| enforced) {
            Some(left) => (Some(left), None),
            None => (None, faults.take(req.method().as_str(), &path)),
        }
    };
    // A retry before its Retry-After: throttled again, for what is left of the wait.
    let rule = match (early, rule) {
        (Some(left), _) => FaultRule {
            status: Some(429),
            retry_after_ms: Some(left.as_millis().max(1) as u64),
            ..FaultRule::default()
        },
        (None, Some(rule)) => rule,
        (None, None) => return next.run(req).await,
    };
    if let Some(ms) = rule.latency_ms {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    let Some(status) = rule.status else {
        return next.run(req).await;
    };
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let style = sim.world().switches.retry_after;
    let retry_after = retry_after_value(status, &rule, style);
    let mut response = if path.contains("/oauth2/") {
        TokenError::new(
            status,
            "temporarily_unavailable",
            50000,
            "There was an error issuing a token or an issue with our sign-in service.",
        )
        .into_response()
    } else {
        let (code, message) = match status {
            StatusCode::TOO_MANY_REQUESTS => ("TooManyRequests", "Too many requests."),
            StatusCode::SERVICE_UNAVAILABLE => (
                "serviceNotAvailable",
                "The service is temporarily unavailable. Please retry later.",
            ),
            StatusCode::GATEWAY_TIMEOUT => (
                "GatewayTimeout",
                "The gateway did not receive a timely response.",
            ),
            _ => ("generalException", "An unspecified error has occurred."),
        };
        GraphError::new(status, code, message).into_response()
    };
    let wait = retry_after.as_deref().and_then(parse_seconds);
    sim.faults
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .answered(request, wait, now);
    if let Some(s) = retry_after {
        if let Ok(v) = s.parse() {
            response.headers_mut().insert(header::RETRY_AFTER, v);
        }
    }
    response
}

/// `"2.128"` → 2.128 s.
fn parse_seconds(value: &str) -> Option<Duration> {
    value
        .parse::<f64>()
        .ok()
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map(Duration::from_secs_f64)
}
