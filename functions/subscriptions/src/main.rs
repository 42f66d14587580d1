//! `shadowsync-subscriptions`: the subscription keeper as a Lambda function on an EventBridge
//! schedule. Each run ensures the one `/users` subscription: creates, renews or recreates it.

use lambda_runtime::{service_fn, Error, LambdaEvent};
use shadowsync_aws::LambdaHost;
use shadowsync_subscriptions::SubscriptionKeeper;

#[tokio::main]
async fn main() -> Result<(), Error> {
    shadowsync_aws::init_logging();
    let host = LambdaHost::from_env().await?;
    let graph = host.graph()?;
    let keeper = SubscriptionKeeper::from_config(
        graph.clone(),
        host.store()?,
        &host.config.webhook()?,
        &host.config.subscriptions()?,
    );
    let keeper = &keeper;
    lambda_runtime::run(service_fn(|_: LambdaEvent<serde_json::Value>| async move {
        shadowsync_subscriptions::lambda::handle(keeper).await
    }))
    .await
}
