//! What shadowsync does with each job: the one dispatcher every host's workers use (`serve`,
//! the on-premises connector, the Lambda provisioner). A new kind of job is a variant of
//! [`Job`] (in `shadowsync-queue`) and an arm here.

use crate::access::GraphAccess;
use crate::converge::{describe, Converger, Hint};
use crate::keeper::SubscriptionKeeper;
use crate::metrics::JobMetrics;
use crate::partners::PartnerConverger;
use crate::scope::ScopeGroups;
use crate::worker::{JobError, JobHandler, Settled};
use crate::AppError;
use async_trait::async_trait;
use chrono::Utc;
use shadowsync_queue::{ChangeType, Job, JobSource, LifecycleEvent, PendingJobs};
use std::sync::Arc;
use tokio::sync::Notify;

pub struct Jobs {
    /// Converges guests; `None` in a host that does not reach AD.
    pub converger: Option<Arc<Converger>>,
    /// Converges partner accounts' guests; `None` where `[partners]` is off or AD out of reach.
    pub partners: Option<Arc<PartnerConverger>>,
    /// Reads scope-group changes; `None` without a scope group.
    pub scope_groups: Option<Arc<ScopeGroups>>,
    /// Handles lifecycle events; a host without a keeper leaves them to one that has.
    pub keeper: Option<Arc<SubscriptionKeeper>>,
    /// Woken when Graph says notifications were (or will be) lost (`missed`,
    /// `subscriptionRemoved`), so the host's reconciler runs a delta round now. `None` where
    /// delta rounds run elsewhere (they then wait for their schedule).
    pub reconcile_now: Option<Arc<Notify>>,
    pub metrics: Arc<JobMetrics>,
    /// Where jobs Graph refuses (403) wait.
    pub access: Arc<GraphAccess>,
    /// Marks of waiting jobs: a job's is removed as it starts, before anything is read.
    pub pending: Arc<PendingJobs>,
}

#[async_trait]
impl JobHandler for Jobs {
    fn settled(&self, settled: Settled) {
        self.metrics.settled(settled);
    }

    async fn handle(&self, job: &Job) -> Result<(), JobError> {
        // From here on, a repeat of this job's notification needs a job of its own.
        self.pending.started(job).await.map_err(AppError::from)?;
        match self.dispatch(job).await {
            Ok(()) => Ok(()),
            // A refusal is not an answer: keep the job until Graph answers again.
            Err(e) if GraphAccess::is_denied(&e) => {
                self.access.refused(&e).await?;
                self.access.park(job).await?;
                self.metrics.parked();
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }
}

impl Jobs {
    async fn dispatch(&self, job: &Job) -> Result<(), AppError> {
        match job {
            Job::Converge {
                user_id,
                change_type,
                received_at,
                source,
                ..
            } => {
                // Another host of the deployment (the connector) may take it: retryable.
                let converger = self
                    .converger
                    .as_ref()
                    .ok_or(AppError::Elsewhere("the directory"))?;
                // Graph told us about this user (a notification, a delta item) when the job
                // says what changed; a sweep's or an administrator's job does not.
                let reported = *source == JobSource::Notification || change_type.is_some();
                let hint = Hint {
                    deleted_in_graph: *change_type == Some(ChangeType::Deleted),
                    reported_at: reported.then_some(*received_at),
                };
                let outcome = converger.converge(user_id, hint).await?;
                if outcome.held.is_some() {
                    self.metrics.held();
                }
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
                    held = outcome.held.as_deref().unwrap_or_default(),
                    "converged"
                );
                Ok(())
            }
            Job::Partner {
                guid,
                received_at,
                source,
            } => {
                let partners = self
                    .partners
                    .as_ref()
                    .ok_or(AppError::Elsewhere("the partner direction"))?;
                let outcome = partners.converge(guid).await?;
                if outcome.held.is_some() {
                    self.metrics.held();
                }
                let latency = (Utc::now() - *received_at).to_std().unwrap_or_default();
                self.metrics
                    .converged(outcome.changed(), outcome.conflict.is_some(), latency);
                tracing::info!(
                    %guid,
                    account = %outcome.name(),
                    guest_id = outcome.guest_id.as_ref().map(|g| g.as_str()).unwrap_or(""),
                    status = outcome.status.as_str(),
                    source = ?source,
                    latency_ms = latency.as_millis() as u64,
                    plan = %outcome.plan.join("; "),
                    held = outcome.held.as_deref().unwrap_or_default(),
                    "partner converged"
                );
                Ok(())
            }
            Job::GroupChanged {
                group_id, source, ..
            } => {
                let scope = self
                    .scope_groups
                    .as_ref()
                    .ok_or(AppError::Elsewhere("the scope groups"))?;
                let report = scope.changed(group_id).await?;
                tracing::info!(%group_id, source = ?source, ?report, "scope group changed");
                // A group joined or left the tree: its subscription follows at once where this
                // host keeps them (elsewhere, at the keeper's next check).
                if report.groups_joined + report.groups_left > 0 {
                    if let Some(keeper) = &self.keeper {
                        let groups = keeper.ensure_groups().await?;
                        tracing::info!(?groups, "scope groups' subscriptions checked");
                    }
                }
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
                let keeper = self
                    .keeper
                    .as_ref()
                    .ok_or(AppError::Elsewhere("the subscription keeper"))?;
                let outcome = keeper.handle_any_lifecycle(*event, subscription_id).await?;
                tracing::info!(subscription_id, ?event, ?outcome, "lifecycle event handled");
                Ok(())
            }
        }
    }
}
