//! Graph refused access (403: an application permission removed, admin consent revoked). Then
//! nothing can be known about a guest, and a refusal is not an absence: no account may be
//! disabled or deleted on its account. So a refused job is parked (kept in state, one per
//! user, taken off the queue: never retried into the dead-letter queue), the refusal is
//! recorded for `status` and logged at error level each time, and the first delta round Graph
//! answers again puts every parked job back on the queue.

use crate::error::AppError;
use chrono::{DateTime, Utc};
use shadowsync_core::Clock;
use shadowsync_queue::{Job, Queue};
use shadowsync_state::records::{CHECKPOINTS, GRAPH_ACCESS, PARKED};
use shadowsync_state::{count_keys, get_json, put_json, GraphAccessDenied, KeyValueStore};
use std::sync::Arc;

/// Parked jobs read or re-sent per step.
const PAGE: usize = 100;

pub struct GraphAccess {
    pub state: Arc<dyn KeyValueStore>,
    pub clock: Arc<dyn Clock>,
}

/// What `status` shows.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AccessReport {
    /// `None` while Graph answers.
    pub denied: Option<GraphAccessDenied>,
    pub parked_jobs: usize,
}

impl GraphAccess {
    /// Is this Graph refusing access?
    pub fn is_denied(error: &AppError) -> bool {
        error.graph_error().is_some_and(|g| g.is_access_denied())
    }

    /// Records a refusal (`error` is one, see [`Self::is_denied`]), loudly.
    pub async fn refused(&self, error: &AppError) -> Result<(), AppError> {
        let now = self.clock.now();
        let (action, message) = match error {
            AppError::Graph { action, source } => (action.to_string(), source.to_string()),
            other => (String::new(), other.to_string()),
        };
        tracing::error!(%action, error = %message,
            "Microsoft Graph refuses access (403): check the application's permissions and admin consent; \
             nothing is changed in AD until it answers again");
        // Retried on a lost compare-and-set: two workers refused at the same time.
        for _ in 0..3 {
            let current = get_json::<GraphAccessDenied>(&*self.state, CHECKPOINTS, GRAPH_ACCESS)
                .await
                .ok()
                .flatten();
            let record = GraphAccessDenied {
                since: current.as_ref().map_or(now, |c| c.value.since),
                last_at: now,
                action: action.clone(),
                message: message.clone(),
                refusals: current.as_ref().map_or(0, |c| c.value.refusals) + 1,
            };
            match put_json(
                &*self.state,
                CHECKPOINTS,
                GRAPH_ACCESS,
                &record,
                current.map(|c| c.version),
            )
            .await
            {
                Err(e) if e.is_conflict() => continue,
                other => return other.map(|_| ()).map_err(AppError::from),
            }
        }
        Ok(())
    }

    /// Keeps `job` until Graph answers again (a later job of the same user replaces it: the
    /// job only says "look at this user").
    pub async fn park(&self, job: &Job) -> Result<(), AppError> {
        let key = job.group();
        let current = self.state.get(PARKED, &key).await?;
        put_json(&*self.state, PARKED, &key, job, current.map(|c| c.version)).await?;
        Ok(())
    }

    /// Graph answered: forgets the refusal and puts the parked jobs back on the queue. Returns
    /// how many. Cheap when nothing was refused.
    pub async fn restored(&self, queue: &dyn Queue) -> Result<usize, AppError> {
        let denial = self.state.get(CHECKPOINTS, GRAPH_ACCESS).await?;
        let mut resumed = 0;
        loop {
            let page = self.state.scan(PARKED, None, PAGE).await?;
            if page.is_empty() {
                break;
            }
            let mut jobs = Vec::with_capacity(page.len());
            for (key, raw) in &page {
                match serde_json::from_slice::<Job>(&raw.value) {
                    Ok(job) => jobs.push(fresh(job, self.clock.now())),
                    Err(e) => {
                        tracing::error!(%key, error = %e, "a parked job is unreadable; dropped (the next sweep covers its user)")
                    }
                }
            }
            resumed += jobs.len();
            queue.send_batch(jobs).await?;
            for (key, raw) in page {
                match self.state.delete(PARKED, &key, Some(raw.version)).await {
                    // Parked again meanwhile: the newer one waits for the next round.
                    Err(e) if e.is_conflict() => {}
                    other => other?,
                }
            }
        }
        if let Some(denial) = denial {
            match self
                .state
                .delete(CHECKPOINTS, GRAPH_ACCESS, Some(denial.version))
                .await
            {
                Err(e) if e.is_conflict() => {}
                other => other?,
            }
            tracing::warn!(
                resumed,
                "Microsoft Graph answers again; parked jobs are back on the queue"
            );
        }
        Ok(resumed)
    }
}

/// The refusal, if Graph refuses, and the jobs parked (read from state alone).
pub async fn report(state: &dyn KeyValueStore) -> Result<AccessReport, AppError> {
    let denied = get_json::<GraphAccessDenied>(state, CHECKPOINTS, GRAPH_ACCESS)
        .await?
        .map(|v| v.value);
    let parked_jobs = count_keys(state, PARKED).await?;
    Ok(AccessReport {
        denied,
        parked_jobs,
    })
}

/// The job as new: a queue drops a job it saw in its deduplication window, and the parked one
/// was seen when it was first sent.
fn fresh(job: Job, now: DateTime<Utc>) -> Job {
    match job {
        Job::Converge {
            user_id,
            change_type,
            subscription_id,
            source,
            ..
        } => Job::Converge {
            user_id,
            change_type,
            subscription_id,
            received_at: now,
            source,
        },
        Job::Partner { guid, source, .. } => Job::Partner {
            guid,
            received_at: now,
            source,
        },
        Job::GroupChanged {
            group_id, source, ..
        } => Job::GroupChanged {
            group_id,
            received_at: now,
            source,
        },
        Job::Lifecycle {
            event,
            subscription_id,
            ..
        } => Job::Lifecycle {
            event,
            subscription_id,
            received_at: now,
        },
    }
}
