//! What shadowsync does with each job: the one dispatcher every host's workers use (`serve`,
//! the on-premises connector, the Lambda provisioner). A new kind of job is a variant of
//! [`Job`] (in `shadowsync-queue`) and an arm here.

use crate::converge::{describe, Converger, Hint};
use crate::keeper::SubscriptionKeeper;
use crate::metrics::JobMetrics;
use crate::worker::{JobError, JobHandler, Settled};
use crate::AppError;
use async_trait::async_trait;
use chrono::Utc;
use shadowsync_queue::{ChangeType, Job, LifecycleEvent};
use std::sync::Arc;
use tokio::sync::Notify;

pub struct Jobs {
    /// Converges guests; `None` in a host that does not reach AD.
    pub converger: Option<Arc<Converger>>,
    /// Handles lifecycle events; a host without a keeper leaves them to one that has.
    pub keeper: Option<Arc<SubscriptionKeeper>>,
    /// Woken when Graph says notifications were (or will be) lost (`missed`,
    /// `subscriptionRemoved`), so the host's reconciler runs a delta round now. `None` where
    /// delta rounds run elsewhere (they then wait for their schedule).
    pub reconcile_now: Option<Arc<Notify>>,
    pub metrics: Arc<JobMetrics>,
}

#[async_trait]
impl JobHandler for Jobs {
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
                let converger = self
                    .converger
                    .as_ref()
                    .ok_or(AppError::Missing("the directory"))
                    // Another host of the deployment (the connector) may take it.
                    .map_err(|e| JobError {
                        retryable: true,
                        reason: e.to_string(),
                    })?;
                let hint = Hint {
                    deleted_in_graph: *change_type == Some(ChangeType::Deleted),
                };
                let outcome = converger.converge(user_id, hint).await?;
                let latency = (Utc::now() - *received_at).to_std().unwrap_or_default();
                let latency_ms = latency.as_millis() as u64;
                self.metrics.converged(
                    outcome.applied && !outcome.plan.is_empty(),
                    outcome.conflict().is_some(),
                    latency,
                );
                tracing::info!(
                    %user_id,
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
                let outcome = keeper.handle_lifecycle(*event, subscription_id).await?;
                tracing::info!(subscription_id, ?event, ?outcome, "lifecycle event handled");
                Ok(())
            }
        }
    }
}
