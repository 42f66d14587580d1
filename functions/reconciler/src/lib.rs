//! `shadowsync-reconciler`: the reconciler as a Lambda function on an EventBridge schedule. Each
//! run follows the application's one schedule: a delta round, then a sweep of the managed OUs
//! when one is due. In lambda mode it reaches AD and sweeps; in connector mode the directory is
//! not configured here, so it runs delta rounds only and the on-premises connector sweeps.
//!
//! A run stops [`DEADLINE_MARGIN`] before Lambda would end it: a delta round still going saves
//! its position, and the next run resumes it, so a tenant too large for one invocation's 15
//! minutes is enumerated over several.
//!
//! A second schedule sends `{"watch": "partners"}`: a round of the partner direction's AD
//! watcher (accounts changed since the `uSNChanged` watermark become jobs), where `[partners]`
//! is configured and AD is in reach.

use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use shadowsync_app::{App, Roles};
use shadowsync_aws::LambdaError;

/// Time kept back from the invocation's deadline. After the delta round's last look at the
/// clock, the page in hand (a Graph request may take its 30 s timeout and 30 s of retries), its
/// jobs and the saved position must still fit, and the function must answer.
pub const DEADLINE_MARGIN: chrono::Duration = chrono::Duration::minutes(2);

/// One scheduled run: what the event asks for. `deadline`: when Lambda ends the invocation
/// (`None`: no limit).
pub async fn handle(
    app: &App,
    event: &Value,
    deadline: Option<DateTime<Utc>>,
) -> Result<Value, LambdaError> {
    if event["watch"] == "partners" {
        return Ok(match &app.partner_watcher {
            Some((watcher, _)) => json!(watcher.round().await?),
            // Said, not failed: the schedule is disabled where the direction is off.
            None => {
                json!({ "skipped": "the partner direction is not configured in this function" })
            }
        });
    }
    let roles = match app.converger {
        Some(_) => Roles::ALL,
        None => Roles::DELTA,
    };
    app.check_scope_tree().await;
    let report = app
        .reconciler
        .scheduled_run_until(
            roles,
            app.schedule.sweep_interval,
            deadline.map(|d| d - DEADLINE_MARGIN),
        )
        .await?;
    Ok(json!(report))
}
