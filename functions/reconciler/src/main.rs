//! `shadowsync-reconciler`: the Lambda main; what a run does is [`shadowsync_reconciler::handle`].

use lambda_runtime::{service_fn, Error, LambdaEvent};
use serde_json::Value;
use shadowsync_aws::LambdaHost;

#[tokio::main]
async fn main() -> Result<(), Error> {
    shadowsync_aws::init_logging();
    let host = LambdaHost::from_env().await?;
    let app = host.app().await?;
    let app = &app;
    lambda_runtime::run(service_fn(|event: LambdaEvent<Value>| async move {
        let deadline = event.context.deadline().into();
        shadowsync_reconciler::handle(app, &event.payload, Some(deadline)).await
    }))
    .await
}
