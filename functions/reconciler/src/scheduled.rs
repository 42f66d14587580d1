//! One scheduled run, for hosts that start fresh each time (the Lambda function on its
//! EventBridge schedule): a delta round, then a sweep when one is due. When the last sweep ran is
//! recorded in state (table [`CHECKPOINTS`], key [`LAST_SWEEP`]), since nothing else survives
//! between runs.

use crate::{DeltaReport, ReconcileError, Reconciler, SweepReport, CHECKPOINTS};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use shadowsync_state::{get_json, put_json};
use std::time::Duration;

/// Key of the last sweep's time in [`CHECKPOINTS`].
pub const LAST_SWEEP: &str = "last_sweep";

#[derive(Debug, Clone, Serialize, Deserialize)]
struct LastSweep {
    at: DateTime<Utc>,
}

#[derive(Debug, Serialize)]
pub struct RunReport {
    pub delta: DeltaReport,
    /// `None` when no sweep was due, or AD is out of reach here.
    pub sweep: Option<SweepReport>,
}

impl Reconciler {
    /// A delta round; then, where AD is reachable, a sweep after a full round or once
    /// `sweep_interval` has passed since the last one.
    pub async fn scheduled_run(
        &self,
        sweep_interval: Duration,
    ) -> Result<RunReport, ReconcileError> {
        let delta = self.run_delta().await?;
        tracing::info!(?delta, "delta round done");
        if self.managed.is_none() {
            return Ok(RunReport { delta, sweep: None });
        }
        let last = get_json::<LastSweep>(self.state.as_ref(), CHECKPOINTS, LAST_SWEEP).await?;
        let now = self.clock.now();
        let due = delta.full
            || last
                .as_ref()
                .is_none_or(|l| (now - l.value.at).to_std().unwrap_or_default() >= sweep_interval);
        if !due {
            return Ok(RunReport { delta, sweep: None });
        }
        let sweep = self.sweep().await?;
        tracing::info!(?sweep, "sweep done");
        let version = last.map(|l| l.version);
        put_json(
            self.state.as_ref(),
            CHECKPOINTS,
            LAST_SWEEP,
            &LastSweep { at: now },
            version,
        )
        .await?;
        Ok(RunReport {
            delta,
            sweep: Some(sweep),
        })
    }
}

impl From<ReconcileError> for lambda_runtime::Diagnostic {
    fn from(error: ReconcileError) -> Self {
        let kind = match &error {
            ReconcileError::Graph(_) => "Graph",
            ReconcileError::Queue(_) => "Queue",
            ReconcileError::State(_) => "State",
            ReconcileError::Directory(_) => "Directory",
            ReconcileError::NoDirectory => "NoDirectory",
            ReconcileError::Protocol(_) => "Protocol",
        };
        lambda_runtime::Diagnostic {
            error_type: format!("ReconcileError::{kind}"),
            error_message: error.to_string(),
        }
    }
}
