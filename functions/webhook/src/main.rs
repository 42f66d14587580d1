//! `shadowsync-webhook`: the webhook as a Lambda function behind an API Gateway HTTP API. The
//! same router as `shadowsync serve`, fed by lambda_http, storing jobs in the SQS FIFO queue.
//! Its counters leave as one embedded-metric line per invocation.

use shadowsync_aws::{emf, LambdaHost};
use shadowsync_notifications::{MetricsSnapshot, WebhookState};
use shadowsync_queue::PendingJobs;
use std::sync::{Arc, Mutex};

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    shadowsync_aws::init_logging();
    let host = LambdaHost::from_env().await?;
    // The webhook only sends: max_attempts is the provisioner's business.
    let queue = host.queue(1)?;
    let (client_state, previous) = host.config.client_states()?;
    // Marks of waiting jobs, in the state table the provisioner clears them from.
    let pending = Arc::new(PendingJobs::new(host.store()?));
    let mut state = WebhookState::new(queue, pending, client_state, host.config.tenant_id()?);
    state.previous_client_state = previous;
    let (metrics, published) = (
        state.metrics.clone(),
        Arc::new(Mutex::<MetricsSnapshot>::default()),
    );
    let router = shadowsync_notifications::router(state).layer(axum::middleware::map_response(
        move |response: axum::response::Response| {
            let now = metrics.snapshot();
            let delta = now.since(&std::mem::replace(&mut *published.lock().unwrap(), now));
            emf::emit("webhook", &emf::counts(&delta.counters()));
            std::future::ready(response)
        },
    ));
    lambda_http::run(router).await
}
