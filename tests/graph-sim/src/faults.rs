//! Injected faults: throttling (429 + `Retry-After`), server errors and added latency, per path
//! pattern, for the next N requests or at random with a seeded generator. `/_sim` is never
//! affected.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::error::{GraphError, TokenError};
use crate::Sim;

/// One fault rule (the body of `POST /_sim/faults`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
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
}

impl Faults {
    pub fn new(seed: u64) -> Self {
        Faults {
            rules: Vec::new(),
            rng: StdRng::seed_from_u64(seed),
            seed,
            next_id: 0,
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

    /// Removes all rules and restarts the random sequence (so runs are reproducible).
    pub fn clear(&mut self) {
        self.rules.clear();
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
    let rule = sim
        .faults
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take(req.method().as_str(), &path);
    let Some(rule) = rule else {
        return next.run(req).await;
    };
    if let Some(ms) = rule.latency_ms {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    let Some(status) = rule.status else {
        return next.run(req).await;
    };
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let retry_after = match (status, rule.retry_after_seconds) {
        (StatusCode::TOO_MANY_REQUESTS, r) => Some(r.unwrap_or(10)),
        (_, r) => r,
    };
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
    if let Some(s) = retry_after {
        if let Ok(v) = s.to_string().parse() {
            response.headers_mut().insert(header::RETRY_AFTER, v);
        }
    }
    response
}
