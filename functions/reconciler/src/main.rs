//! `shadowsync-reconciler`: the reconciler as a Lambda function on an EventBridge schedule. Each
//! run follows the application's one schedule: a delta round, then a sweep of the managed OUs
//! when one is due. In lambda mode it reaches AD and sweeps; in connector mode the directory is
//! not configured here, so it runs delta rounds only and the on-premises connector sweeps.

use lambda_runtime::{service_fn, Error, LambdaEvent};
use shadowsync_app::{Roles, RunReport};
use shadowsync_aws::{LambdaError, LambdaHost};

#[tokio::main]
async fn main() -> Result<(), Error> {
    shadowsync_aws::init_logging();
    let host = LambdaHost::from_env().await?;
    let app = host.app().await?;
    let roles = match app.converger {
        Some(_) => Roles::ALL,
        None => Roles::DELTA,
    };
    let app = &app;
    lambda_runtime::run(service_fn(|_: LambdaEvent<serde_json::Value>| async move {
        let report: RunReport = app
            .reconciler
            .scheduled_run(roles, app.schedule.sweep_interval)
            .await?;
        Ok::<_, LambdaError>(report)
    }))
    .await
}
