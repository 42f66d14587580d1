//! `shadowsync-provisioner`: the provisioner as a Lambda function on the SQS FIFO queue (lambda
//! mode: in private subnets that reach the domain controllers).

use aws_lambda_events::event::sqs::SqsEvent;
use lambda_runtime::{service_fn, Error, LambdaEvent};
use shadowsync_app::{App, Storage, WorkerConfig};
use shadowsync_aws::LambdaHost;
use shadowsync_provisioner::SqsBatchHandler;
use std::time::Duration;

/// The queue's visibility timeout (infra/template.yaml: 6 × the function's 60 s timeout); a job
/// never outlives the function, so it is never extended in practice.
const QUEUE_VISIBILITY: Duration = Duration::from_secs(360);

#[tokio::main]
async fn main() -> Result<(), Error> {
    shadowsync_aws::init_logging();
    let host = LambdaHost::from_env().await?;
    let settings = host.settings()?;
    let queue = host.queue(settings.provisioner.max_attempts)?;
    let storage = Storage::shared(host.store()?, queue.clone());
    // AD is reached at the first job that needs it, not at the function's start.
    let app = App::build_deferred(&settings, storage).await?;
    let handler = SqsBatchHandler {
        queue,
        jobs: app.jobs.clone(),
        config: WorkerConfig {
            visibility: QUEUE_VISIBILITY,
            ..app.workers.clone()
        },
        metrics: app.metrics.clone(),
        graph: Some(app.graph.clone()),
        published: Default::default(),
        outage: Default::default(),
    };
    let handler = &handler;
    lambda_runtime::run(service_fn(|event: LambdaEvent<SqsEvent>| async move {
        // The invocation's deadline, on the monotonic clock.
        let left = event
            .context
            .deadline()
            .duration_since(std::time::SystemTime::now())
            .unwrap_or_default();
        let deadline = std::time::Instant::now() + left;
        Ok::<_, Error>(handler.handle_until(event.payload, Some(deadline)).await)
    }))
    .await
}
