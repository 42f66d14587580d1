//! `shadowsync-subscriptions`: the subscription keeper as a Lambda function on an EventBridge
//! schedule. Each run ensures the one `/users` subscription: creates, renews or recreates it.
//! A failure fails the invocation, so the schedule's retry policy and the Errors alarm see it.

use lambda_runtime::{service_fn, Error, LambdaEvent};
use serde::Serialize;
use shadowsync_aws::{LambdaError, LambdaHost};

/// What a run answers (shown in the Lambda console and the schedule's history).
#[derive(Debug, Serialize)]
struct Report {
    subscription_id: String,
    expires: String,
    outcome: String,
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    shadowsync_aws::init_logging();
    let app = LambdaHost::from_env().await?.app().await?;
    let keeper = app.keeper()?;
    lambda_runtime::run(service_fn(|_: LambdaEvent<serde_json::Value>| async move {
        let ensured = keeper.ensure().await?;
        // The scope tree's groups, as the workers recorded it in state.
        let groups = keeper.ensure_groups().await?;
        tracing::info!(?groups, "scope groups' subscriptions checked");
        let report = Report {
            subscription_id: ensured.record.id.clone(),
            expires: ensured.record.expiration.to_rfc3339(),
            outcome: format!("{:?}", ensured.outcome),
        };
        tracing::info!(?report, "subscription checked");
        Ok::<_, LambdaError>(report)
    }))
    .await
}
