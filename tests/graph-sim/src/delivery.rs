//! Change and lifecycle notification delivery: batching, the 3-second rule, retries with
//! exponential backoff up to a horizon (4 hours), and Graph's slow/drop endpoint marking —
//! all timed by simulated time, so tests can fast-forward through backoffs.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::header;
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{json, Value};

use crate::clock::graph_time_precise;
use crate::{chrono_duration, Sim};

/// Oldest records are forgotten beyond this, so long demos do not grow without bound.
const MAX_LOG: usize = 50_000;

#[derive(Debug, Clone)]
pub struct QueuedNotification {
    pub url: String,
    pub subscription_id: String,
    pub item: Value,
    pub paused: bool,
}

/// One entry of the delivery log (`GET /_sim/deliveries`): every validation request and every
/// notification POST attempt, plus notifications that were never sent (lost, paused, dropped,
/// abandoned after the retry horizon).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryRecord {
    pub id: u64,
    /// Simulated time of the attempt.
    pub time: String,
    pub url: String,
    /// `validation`, `notification` or `lifecycle`.
    pub kind: String,
    pub body: Value,
    pub status: Option<u16>,
    pub latency_ms: Option<u64>,
    /// `validated`/`rejected` (handshakes); `delivered`, `failed` (non-2xx), `timeout`,
    /// `error` (connection); `lost`, `paused` (withheld until reauthorization, then sent),
    /// `dropped`, `abandoned`, `denied` (the app's permission was removed) (never sent / given up).
    pub outcome: String,
    pub attempt: u32,
    pub batch_id: Option<u64>,
}

impl DeliveryRecord {
    pub fn unsent(
        id: u64,
        now: DateTime<Utc>,
        url: &str,
        kind: &str,
        body: Value,
        outcome: &str,
    ) -> Self {
        DeliveryRecord {
            id,
            time: graph_time_precise(now),
            url: url.to_string(),
            kind: kind.to_string(),
            body,
            status: None,
            latency_ms: None,
            outcome: outcome.to_string(),
            attempt: 0,
            batch_id: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Health {
    Normal,
    Slow,
    Drop,
}

#[derive(Debug)]
struct EndpointHealth {
    samples: VecDeque<(DateTime<Utc>, bool)>,
    health: Health,
}

#[derive(Debug)]
struct PendingBatch {
    id: u64,
    url: String,
    kind: &'static str,
    body: Value,
    first_attempt: Option<DateTime<Utc>>,
    next_attempt: DateTime<Utc>,
    attempts: u32,
    in_flight: bool,
}

#[derive(Debug, Default)]
pub struct DeliveryState {
    queued: Vec<(Instant, QueuedNotification)>,
    pending: Vec<PendingBatch>,
    pub log: Vec<DeliveryRecord>,
    endpoints: HashMap<String, EndpointHealth>,
    next_record: u64,
    next_batch: u64,
}

impl DeliveryState {
    pub fn enqueue(&mut self, q: QueuedNotification) {
        self.queued.push((Instant::now(), q));
    }

    pub fn next_record_id(&mut self) -> u64 {
        self.next_record += 1;
        if self.log.len() > MAX_LOG {
            self.log.drain(..self.log.len() - MAX_LOG);
        }
        self.next_record
    }

    pub fn health(&self, url: &str) -> Health {
        self.endpoints
            .get(url)
            .map(|e| e.health)
            .unwrap_or(Health::Normal)
    }

    /// Notifications queued or waiting for a (re)try.
    pub fn backlog(&self) -> usize {
        self.queued.len() + self.pending.len()
    }

    pub fn clear_log(&mut self) {
        self.log.clear();
    }

    fn push(&mut self, mut rec: DeliveryRecord) {
        rec.id = self.next_record_id();
        self.log.push(rec);
    }
}

fn kind_of(item: &Value) -> &'static str {
    if item.get("lifecycleEvent").is_some() {
        "lifecycle"
    } else {
        "notification"
    }
}

/// The delivery loop: wakes on new work or every 20 ms, forms batches once the batch window
/// has passed, and starts every attempt that is due by simulated time.
pub async fn run(sim: Arc<Sim>) {
    loop {
        tokio::select! {
            _ = sim.wakeup.notified() => {}
            _ = tokio::time::sleep(Duration::from_millis(20)) => {}
        }
        let due = step(&sim);
        for (id, url, body) in due {
            tokio::spawn(attempt(sim.clone(), id, url, body));
        }
    }
}

fn step(sim: &Sim) -> Vec<(u64, String, Value)> {
    let cfg = &sim.config;
    let now = sim.now();
    let mut w = sim.world();
    let reorder = w.switches.reorder_notifications;
    let duplicate = w.switches.duplicate_notifications;
    // With the app's permission removed, no change notification goes out (lifecycle ones do).
    let denied = w.switches.permission_removed;
    let d = &mut w.delivery;

    let window_passed = d
        .queued
        .first()
        .is_some_and(|(t, _)| t.elapsed() >= cfg.batch_window);
    if window_passed {
        // One POST per endpoint and kind, items in the order they happened.
        let mut groups: Vec<(String, &'static str, Vec<Value>)> = Vec::new();
        for (_, q) in d.queued.drain(..) {
            let kind = kind_of(&q.item);
            match groups
                .iter_mut()
                .find(|(u, k, _)| *u == q.url && *k == kind)
            {
                Some((_, _, items)) => items.push(q.item),
                None => groups.push((q.url, kind, vec![q.item])),
            }
        }
        if reorder {
            groups.reverse();
            for g in &mut groups {
                g.2.reverse();
            }
        }
        for (url, kind, items) in groups {
            let body = json!({ "value": items });
            if denied && kind == "notification" {
                d.push(DeliveryRecord::unsent(0, now, &url, kind, body, "denied"));
                continue;
            }
            match d.health(&url) {
                Health::Drop => {
                    d.push(DeliveryRecord::unsent(0, now, &url, kind, body, "dropped"));
                    continue;
                }
                health => {
                    let delay = if health == Health::Slow {
                        chrono_duration(cfg.slow_delay)
                    } else {
                        chrono::Duration::zero()
                    };
                    let copies = if duplicate { 2 } else { 1 };
                    for _ in 0..copies {
                        d.next_batch += 1;
                        let id = d.next_batch;
                        d.pending.push(PendingBatch {
                            id,
                            url: url.clone(),
                            kind,
                            body: body.clone(),
                            first_attempt: None,
                            next_attempt: now + delay,
                            attempts: 0,
                            in_flight: false,
                        });
                    }
                }
            }
        }
    }

    let horizon = chrono_duration(cfg.retry_horizon);
    let mut due = Vec::new();
    let mut finished = Vec::new();
    for b in d
        .pending
        .iter_mut()
        .filter(|b| !b.in_flight && b.next_attempt <= now)
    {
        let past_horizon = b.first_attempt.is_some_and(|f| now > f + horizon);
        let dropped =
            b.attempts > 0 && d.endpoints.get(&b.url).map(|e| e.health) == Some(Health::Drop);
        if denied && b.kind == "notification" {
            finished.push((b.id, "denied"));
            continue;
        }
        if past_horizon || dropped {
            finished.push((b.id, if dropped { "dropped" } else { "abandoned" }));
            continue;
        }
        b.in_flight = true;
        b.attempts += 1;
        b.first_attempt.get_or_insert(now);
        due.push((b.id, b.url.clone(), b.body.clone()));
    }
    for (id, outcome) in finished {
        if let Some(pos) = d.pending.iter().position(|b| b.id == id) {
            let b = d.pending.remove(pos);
            let mut rec = DeliveryRecord::unsent(0, now, &b.url, b.kind, b.body, outcome);
            rec.attempt = b.attempts;
            rec.batch_id = Some(b.id);
            d.push(rec);
        }
    }
    due
}

async fn attempt(sim: Arc<Sim>, id: u64, url: String, body: Value) {
    let cfg = &sim.config;
    let started = Instant::now();
    let result = sim
        .http
        .post(&url)
        .header(header::CONTENT_TYPE, "application/json; charset=utf-8")
        .body(body.to_string())
        .timeout(cfg.delivery_timeout)
        .send()
        .await;
    let latency = started.elapsed();
    let (status, outcome) = match &result {
        Ok(r) if r.status().is_success() => (Some(r.status().as_u16()), "delivered"),
        Ok(r) => (Some(r.status().as_u16()), "failed"),
        Err(e) if e.is_timeout() => (None, "timeout"),
        Err(_) => (None, "error"),
    };
    let delivered = outcome == "delivered";
    let slow = latency > cfg.slow_threshold || outcome == "timeout";

    let now = sim.now();
    let mut w = sim.world();
    let d = &mut w.delivery;

    // Endpoint health over the sliding window (Graph: >=10% slow → slow, >=15% → drop).
    let window = chrono_duration(cfg.health_window);
    let e = d.endpoints.entry(url.clone()).or_insert(EndpointHealth {
        samples: VecDeque::new(),
        health: Health::Normal,
    });
    e.samples.push_back((now, slow));
    while e.samples.front().is_some_and(|(t, _)| *t + window < now) {
        e.samples.pop_front();
    }
    e.health = if e.samples.len() >= cfg.health_min_samples.max(1) {
        let pct =
            e.samples.iter().filter(|(_, s)| *s).count() as f64 * 100.0 / e.samples.len() as f64;
        if pct >= cfg.drop_percent {
            Health::Drop
        } else if pct >= cfg.slow_percent {
            Health::Slow
        } else {
            Health::Normal
        }
    } else {
        Health::Normal
    };
    let health = e.health;

    let Some(pos) = d.pending.iter().position(|b| b.id == id) else {
        return;
    };
    let attempts = d.pending[pos].attempts;
    let kind = d.pending[pos].kind;
    d.push(DeliveryRecord {
        id: 0,
        time: graph_time_precise(now),
        url: url.clone(),
        kind: kind.to_string(),
        body: body.clone(),
        status,
        latency_ms: Some(latency.as_millis() as u64),
        outcome: outcome.to_string(),
        attempt: attempts,
        batch_id: Some(id),
    });
    if delivered {
        d.pending.remove(pos);
        return;
    }
    // Exponential backoff: initial, 2x, 4x, ... capped; a slow endpoint waits at least the slow
    // delay. A retry that would fall beyond the horizon is never made.
    let factor = 2u32.saturating_pow(attempts.saturating_sub(1)).min(1 << 20);
    let mut backoff = cfg
        .retry_initial_backoff
        .saturating_mul(factor)
        .min(cfg.retry_max_backoff);
    if health == Health::Slow {
        backoff = backoff.max(cfg.slow_delay);
    }
    let b = &mut d.pending[pos];
    let next = now + chrono_duration(backoff);
    let first = b.first_attempt.unwrap_or(now);
    if next > first + chrono_duration(cfg.retry_horizon) || health == Health::Drop {
        let b = d.pending.remove(pos);
        let mut rec = DeliveryRecord::unsent(
            0,
            now,
            &b.url,
            b.kind,
            b.body,
            if health == Health::Drop {
                "dropped"
            } else {
                "abandoned"
            },
        );
        rec.attempt = b.attempts;
        rec.batch_id = Some(b.id);
        d.push(rec);
    } else {
        b.next_attempt = next;
        b.in_flight = false;
    }
}
