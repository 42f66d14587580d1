//! `shadowsync-reconciler`: the reconciler as a Lambda function on an EventBridge schedule. Each
//! run follows the application's one schedule: a delta round, then a sweep of the managed OUs
//! when one is due. In lambda mode it reaches AD and sweeps; in connector mode the directory is
//! not configured here, so it runs delta rounds only and the on-premises connector sweeps.
//!
//! A second schedule sends `{"watch": "partners"}`: a round of the partner direction's AD
//! watcher (accounts changed since the `uSNChanged` watermark become jobs), where `[partners]`
//! is configured and AD is in reach.

use serde_json::{json, Value};
use shadowsync_app::{App, Roles};
use shadowsync_aws::LambdaError;

/// One scheduled run: what the event asks for.
pub async fn handle(app: &App, event: &Value) -> Result<Value, LambdaError> {
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
        .scheduled_run(roles, app.schedule.sweep_interval)
        .await?;
    Ok(json!(report))
}
