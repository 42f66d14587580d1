//! The scheduled run of the subscription keeper (the Lambda main's handler).

use crate::{KeeperError, SubscriptionKeeper};
use serde::Serialize;

/// What a scheduled run answers (shown in the Lambda console and the schedule's history).
#[derive(Debug, Serialize)]
pub struct Report {
    pub subscription_id: String,
    pub expires: String,
    pub outcome: String,
}

/// Ensures the subscription; an error fails the invocation, so the schedule's retry policy and
/// the Errors alarm see it.
pub async fn handle(keeper: &SubscriptionKeeper) -> Result<Report, KeeperError> {
    let ensured = keeper.ensure().await?;
    let report = Report {
        subscription_id: ensured.record.id.clone(),
        expires: ensured.record.expiration.to_rfc3339(),
        outcome: format!("{:?}", ensured.outcome),
    };
    tracing::info!(
        subscription_id = %report.subscription_id,
        expires = %report.expires,
        outcome = %report.outcome,
        "subscription checked"
    );
    Ok(report)
}

impl From<KeeperError> for lambda_runtime::Diagnostic {
    fn from(error: KeeperError) -> Self {
        let kind = match &error {
            KeeperError::Config(_) => "Config",
            KeeperError::Graph { .. } => "Graph",
            KeeperError::Conflict { .. } => "Conflict",
            KeeperError::Unexpected { .. } => "Unexpected",
            KeeperError::State(_) => "State",
        };
        lambda_runtime::Diagnostic {
            error_type: format!("KeeperError::{kind}"),
            error_message: error.to_string(),
        }
    }
}
