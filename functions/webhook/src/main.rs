//! `shadowsync-webhook`: the webhook as a Lambda function behind an API Gateway HTTP API. The
//! same axum router as `shadowsync serve`, fed by lambda_http, storing jobs in the SQS FIFO
//! queue.

use shadowsync_aws::LambdaHost;
use shadowsync_webhook::WebhookState;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    shadowsync_aws::init_logging();
    let host = LambdaHost::from_env().await?;
    // The webhook only sends: max_attempts is the provisioner's business.
    let queue = host.queue(1)?;
    let state = WebhookState::new(queue, host.config.client_state()?, host.config.tenant_id()?);
    lambda_http::run(shadowsync_webhook::router(state)).await
}
