//! What shadowsync does with each job: the one dispatcher shared by every host (`serve`, the
//! on-premises connector, the Lambda functions).

use crate::{JobError, JobHandler, JobMetrics, Settled};
use async_trait::async_trait;
use chrono::Utc;
use shadowsync_converge::{describe, Converger, Hint};
use shadowsync_queue::{ChangeType, Job, LifecycleEvent};
use shadowsync_subscriptions::SubscriptionKeeper;
use std::sync::Arc;

pub struct ShadowsyncJobs {
    pub converger: Arc<Converger>,
    /// Handles lifecycle events; a host without a keeper leaves lifecycle jobs to one that has.
    pub keeper: Option<Arc<SubscriptionKeeper>>,
    /// Woken when Graph says notifications were (or will be) lost (`missed`,
    /// `subscriptionRemoved`), so the host's reconciler runs a delta round now.
    pub reconcile_now: Option<Arc<tokio::sync::Notify>>,
    pub metrics: Arc<JobMetrics>,
}

#[async_trait]
impl JobHandler for ShadowsyncJobs {
    fn settled(&self, settled: Settled) {
        self.metrics.settled(settled);
    }

    async fn handle(&self, job: &Job) -> Result<(), JobError> {
        match job {
            Job::Converge {
                user_id,
                change_type,
                received_at,
                source,
                ..
            } => {
                let hint = Hint {
                    deleted_in_graph: *change_type == Some(ChangeType::Deleted),
                };
                let outcome =
                    self.converger
                        .converge(user_id, hint)
                        .await
                        .map_err(|e| JobError {
                            retryable: e.is_retryable(),
                            reason: e.to_string(),
                        })?;
                let latency = (Utc::now() - *received_at).to_std().unwrap_or_default();
                let latency_ms = latency.as_millis() as u64;
                self.metrics.converged(
                    outcome.applied && !outcome.plan.is_empty(),
                    outcome.conflict().is_some(),
                    latency,
                );
                tracing::info!(
                    user_id,
                    upn = outcome.user_principal_name.as_deref().unwrap_or(""),
                    status = ?outcome.status,
                    source = ?source,
                    latency_ms,
                    plan = %describe(&outcome.plan),
                    "converged"
                );
                Ok(())
            }
            Job::Lifecycle {
                event,
                subscription_id,
                ..
            } => {
                if matches!(
                    event,
                    LifecycleEvent::Missed | LifecycleEvent::SubscriptionRemoved
                ) {
                    if let Some(reconcile) = &self.reconcile_now {
                        reconcile.notify_one();
                    }
                }
                let Some(keeper) = &self.keeper else {
                    return Err(JobError {
                        retryable: true,
                        reason: "no subscription keeper in this host".into(),
                    });
                };
                let outcome = keeper
                    .handle_lifecycle(*event, subscription_id)
                    .await
                    .map_err(|e| JobError {
                        retryable: e.is_retryable(),
                        reason: e.to_string(),
                    })?;
                tracing::info!(subscription_id, ?event, ?outcome, "lifecycle event handled");
                Ok(())
            }
        }
    }
}
