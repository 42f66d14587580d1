//! `shadowsync-provisioner`: the provisioner as a Lambda function on the SQS FIFO queue (lambda
//! mode: in private subnets that reach the domain controllers).

use aws_lambda_events::event::sqs::SqsEvent;
use lambda_runtime::{service_fn, Error, LambdaEvent};
use shadowsync_aws::LambdaHost;
use shadowsync_converge::Converger;
use shadowsync_core::SystemClock;
use shadowsync_provisioner::lambda::SqsBatchHandler;
use shadowsync_provisioner::{JobMetrics, ProvisionerConfig, ShadowsyncJobs};
use shadowsync_subscriptions::SubscriptionKeeper;
use std::sync::Arc;
use std::time::Duration;

/// The queue's visibility timeout (infra/template.yaml: 6 × the function's 60 s timeout); a job
/// never outlives the function, so it is never extended in practice.
const QUEUE_VISIBILITY: Duration = Duration::from_secs(360);

#[tokio::main]
async fn main() -> Result<(), Error> {
    shadowsync_aws::init_logging();
    let host = LambdaHost::from_env().await?;
    let settings = host.config.provisioner()?;
    let queue = host.queue(settings.max_attempts)?;
    let store = host.store()?;
    let graph = host.graph()?;
    let (directory, policy) = host.directory().await?;
    let keeper = SubscriptionKeeper::from_config(
        graph.clone(),
        store.clone(),
        &host.config.webhook()?,
        &host.config.subscriptions()?,
    );
    let metrics = Arc::new(JobMetrics::new());
    let jobs = ShadowsyncJobs {
        converger: Arc::new(Converger {
            graph: graph.clone(),
            directory,
            state: store,
            policy,
            clock: Arc::new(SystemClock),
        }),
        keeper: Some(Arc::new(keeper)),
        // `missed` and `subscriptionRemoved` wait for the reconciler's next scheduled run.
        reconcile_now: None,
        metrics: metrics.clone(),
    };
    let handler = SqsBatchHandler {
        queue,
        jobs: Arc::new(jobs),
        config: ProvisionerConfig {
            visibility: QUEUE_VISIBILITY,
            ..Default::default()
        },
        metrics,
        graph: Some(graph),
    };
    let handler = &handler;
    lambda_runtime::run(service_fn(|event: LambdaEvent<SqsEvent>| async move {
        Ok::<_, Error>(handler.handle(event.payload).await)
    }))
    .await
}
