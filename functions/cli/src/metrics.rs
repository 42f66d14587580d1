//! The counters of a long-running host, published as log lines: what the Lambda functions send
//! as embedded metrics, `serve` and the connector write to their log (one line a minute when
//! something happened, and a last one when they stop), where a log pipeline can count them.

use shadowsync_app::{App, MetricsSnapshot};
use shadowsync_notifications::WebhookMetrics;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Logs the jobs' counters (and the webhook's, where it runs) every `every`, and once more when
/// `shutdown` is cancelled (the hosts cancel it once their workers have stopped, so that the
/// jobs finished during the shutdown are in the last line).
pub async fn log_periodically(
    app: &App,
    webhook: Option<&WebhookMetrics>,
    every: Duration,
    shutdown: CancellationToken,
) {
    let mut published = webhook.map(WebhookMetrics::snapshot).unwrap_or_default();
    let mut jobs_published = app.metrics.snapshot();
    loop {
        let stopping = tokio::select! {
            _ = tokio::time::sleep(every) => false,
            _ = shutdown.cancelled() => true,
        };
        let jobs = app.metrics.snapshot();
        log_jobs(&jobs.since(&jobs_published), &app.metrics.take_latencies());
        jobs_published = jobs;
        if let Some(webhook) = webhook {
            let now = webhook.snapshot();
            let delta = now.since(&published);
            published = now;
            if !delta.is_zero() {
                let counters: Vec<String> = delta
                    .counters()
                    .iter()
                    .map(|(name, n)| format!("{name}={n}"))
                    .collect();
                tracing::info!(metrics = "webhook", counters = %counters.join(" "), "webhook counters");
            }
        }
        if stopping {
            return;
        }
    }
}

fn log_jobs(m: &MetricsSnapshot, latencies: &[Duration]) {
    if m.is_zero() {
        return;
    }
    let mut latencies: Vec<u128> = latencies.iter().map(Duration::as_millis).collect();
    latencies.sort_unstable();
    let p50 = latencies.get(latencies.len() / 2).copied().unwrap_or(0);
    tracing::info!(
        metrics = "jobs",
        applied = m.applied,
        unchanged = m.unchanged,
        conflicts = m.conflicts,
        retries = m.retries,
        dead_letters = m.dead_letters,
        parked = m.parked,
        latency_p50_ms = p50 as u64,
        "job counters"
    );
}
