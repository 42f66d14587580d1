//! `shadowsync-reconciler`: the delta reconciler as a Lambda function on an EventBridge schedule.
//! In lambda mode it also sweeps the managed OUs (it runs in the VPC); in connector mode it runs
//! delta rounds only and the on-premises connector sweeps.

use lambda_runtime::{service_fn, Error, LambdaEvent};
use shadowsync_aws::{DeploymentMode, LambdaHost};
use shadowsync_core::SystemClock;
use shadowsync_reconciler::{ManagedDirectory, Reconciler};
use std::sync::Arc;

#[tokio::main]
async fn main() -> Result<(), Error> {
    shadowsync_aws::init_logging();
    let host = LambdaHost::from_env().await?;
    let managed = match host.mode {
        DeploymentMode::Lambda => {
            let (directory, policy) = host.directory().await?;
            Some(ManagedDirectory { directory, policy })
        }
        DeploymentMode::Connector => None,
    };
    let sweep_interval = host.config.reconciler()?.sweep_interval;
    let reconciler = Reconciler {
        graph: host.graph()?,
        // Enqueues only: the provisioner decides about dead letters.
        queue: host.queue(1)?,
        state: host.store()?,
        managed,
        clock: Arc::new(SystemClock),
    };
    let reconciler = &reconciler;
    lambda_runtime::run(service_fn(|_: LambdaEvent<serde_json::Value>| async move {
        reconciler.scheduled_run(sweep_interval).await
    }))
    .await
}
