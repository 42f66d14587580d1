//! shadowsync on AWS: what the four Lambda functions (and the on-premises connector) share.
//!
//! - [`LambdaHost`]: the host-only environment (`SHADOWSYNC_QUEUE_URL`, `SHADOWSYNC_DLQ_URL`,
//!   `SHADOWSYNC_TABLE_NAME`, `SHADOWSYNC_DEPLOYMENT_MODE`) and the configuration keys
//!   (`SHADOWSYNC_<SECTION>_<KEY>`, as in the CLI's file), with secrets resolved; from them the
//!   application's [`Settings`] and its AWS [`Storage`] (SQS FIFO, DynamoDB), and so the [`App`].
//! - [`secrets`]: `*_SECRET_ARN` variables swapped for their Secrets Manager values, once, at
//!   cold start (so cached for the life of the execution environment); never logged.
//! - [`emf`]: CloudWatch embedded-metric-format lines.
//! - [`init_logging`]: the functions' logs, never below info for the Lambda crates.
//! - [`LambdaError`]: the application's errors as the runtime's diagnostics, in one place.

pub mod emf;
mod logging;
pub mod secrets;

pub use logging::init_logging;

use shadowsync_app::{App, AppError, Settings, Storage};
use shadowsync_config::{ConfigError, ConnectorSection, EnvConfig, GraphCredential};
use shadowsync_queue_sqs::SqsQueue;
use shadowsync_state_dynamodb::DynamoStore;
use std::sync::Arc;
use std::time::Duration;
use thiserror::Error;

pub use aws_config;
pub use aws_sdk_dynamodb;
pub use aws_sdk_secretsmanager;
pub use aws_sdk_sqs;
pub use lambda_runtime;

#[derive(Debug, Error)]
pub enum AwsError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("environment variable {0} is required")]
    MissingEnv(&'static str),
    #[error("environment variable {name}: {reason}")]
    BadEnv { name: &'static str, reason: String },
    #[error(transparent)]
    App(#[from] AppError),
    #[error("secret {arn} (from {variable}): {reason}")]
    Secret {
        variable: String,
        arn: String,
        reason: String,
        /// What Secrets Manager answered, when it failed (never a secret's value).
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
}

/// Where the functions run: `lambda` (the provisioner in the VPC) or `connector` (on-premises).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeploymentMode {
    Lambda,
    Connector,
}

/// Everything a Lambda main reads from its environment.
pub struct LambdaHost {
    pub mode: DeploymentMode,
    pub queue_url: Option<String>,
    pub dlq_url: Option<String>,
    pub table_name: Option<String>,
    /// The configuration keys, secrets resolved.
    pub config: EnvConfig,
    /// The Graph certificate credential, when the Graph secret holds one.
    pub graph_certificate: Option<GraphCredential>,
    pub sdk: aws_config::SdkConfig,
}

impl LambdaHost {
    /// Reads the process environment, fetching the secrets it names.
    pub async fn from_env() -> Result<Self, AwsError> {
        let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
        Self::load(sdk, std::env::vars().collect()).await
    }

    pub async fn load(
        sdk: aws_config::SdkConfig,
        env: Vec<(String, String)>,
    ) -> Result<Self, AwsError> {
        let get = |name: &str| {
            env.iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        let mode = match get("SHADOWSYNC_DEPLOYMENT_MODE").as_deref() {
            None | Some("lambda") => DeploymentMode::Lambda,
            Some("connector") => DeploymentMode::Connector,
            Some(other) => {
                return Err(AwsError::BadEnv {
                    name: "SHADOWSYNC_DEPLOYMENT_MODE",
                    reason: format!("{other:?} is neither lambda nor connector"),
                })
            }
        };
        let (queue_url, dlq_url, table_name) = (
            get("SHADOWSYNC_QUEUE_URL"),
            get("SHADOWSYNC_DLQ_URL"),
            get("SHADOWSYNC_TABLE_NAME"),
        );
        let client = aws_sdk_secretsmanager::Client::new(&sdk);
        let resolved = secrets::resolve(&client, env).await?;
        Ok(Self {
            mode,
            queue_url,
            dlq_url,
            table_name,
            config: EnvConfig::from_env(resolved.env)?,
            graph_certificate: resolved.graph_certificate,
            sdk,
        })
    }

    pub fn queue_url(&self) -> Result<&str, AwsError> {
        self.queue_url
            .as_deref()
            .ok_or(AwsError::MissingEnv("SHADOWSYNC_QUEUE_URL"))
    }

    pub fn dlq_url(&self) -> Result<&str, AwsError> {
        self.dlq_url
            .as_deref()
            .ok_or(AwsError::MissingEnv("SHADOWSYNC_DLQ_URL"))
    }

    pub fn table_name(&self) -> Result<&str, AwsError> {
        self.table_name
            .as_deref()
            .ok_or(AwsError::MissingEnv("SHADOWSYNC_TABLE_NAME"))
    }

    /// The job queue; `max_attempts` decides when a failing job is dead-lettered (set it to the
    /// DLQ's `maxReceiveCount`). No long poll: a function must not wait for work.
    pub fn queue(&self, max_attempts: u32) -> Result<Arc<SqsQueue>, AwsError> {
        // Only the provisioner dead-letters; the others merely send or count.
        let dlq = self.dlq_url.as_deref().unwrap_or_default();
        Ok(Arc::new(SqsQueue::new(
            aws_sdk_sqs::Client::new(&self.sdk),
            self.queue_url()?,
            dlq,
            max_attempts,
            Duration::ZERO,
        )))
    }

    pub fn store(&self) -> Result<Arc<DynamoStore>, AwsError> {
        Ok(Arc::new(DynamoStore::new(
            aws_sdk_dynamodb::Client::new(&self.sdk),
            self.table_name()?,
        )))
    }

    /// The application's settings, from what this function's environment configures: Graph
    /// always; AD where the directory keys are set (the provisioner, and the reconciler in
    /// lambda mode); the subscription where the webhook keys are (the keeper, and the
    /// provisioner for lifecycle jobs).
    pub fn settings(&self) -> Result<Settings, AwsError> {
        let config = &self.config;
        let (directory, partners) = match config.has_section("directory") {
            true => {
                let section = config.directory()?;
                let policy = config.policy(&section)?;
                (Some((section, policy)), config.partners()?)
            }
            false => (None, None),
        };
        let subscription = match config.has_section("webhook") {
            true => Some((config.webhook()?, config.subscriptions()?)),
            false => None,
        };
        Ok(Settings {
            graph: config.graph(self.graph_certificate.clone())?,
            directory,
            subscription,
            provisioner: config.provisioner()?,
            reconciler: config.reconciler()?,
            safety: config.safety()?,
            partners,
        })
    }

    /// SQS and DynamoDB, where a function's state and jobs live.
    pub fn storage(&self, max_attempts: u32) -> Result<Storage, AwsError> {
        Ok(Storage::shared(self.store()?, self.queue(max_attempts)?))
    }

    /// The application, as this function's environment configures it.
    pub async fn app(&self) -> Result<App, AwsError> {
        let settings = self.settings()?;
        let storage = self.storage(settings.provisioner.max_attempts)?;
        Ok(App::build(&settings, storage).await?)
    }
}

/// The connector's storage: the cloud deployment's queue (long-polled: an idle connector makes
/// one request per `long_poll`) and its state table.
pub async fn connector_storage(
    section: &ConnectorSection,
    max_attempts: u32,
    long_poll: Duration,
) -> (Storage, Arc<SqsQueue>) {
    let sdk = sdk_config(section.region()).await;
    let queue = Arc::new(SqsQueue::new(
        aws_sdk_sqs::Client::new(&sdk),
        section.queue_url.as_str(),
        section.dead_letter_queue_url.as_str(),
        max_attempts,
        long_poll,
    ));
    let state = Arc::new(DynamoStore::new(
        aws_sdk_dynamodb::Client::new(&sdk),
        &section.table_name,
    ));
    let storage = Storage::shared(state, queue.clone());
    (storage, queue)
}

/// An application error as the Lambda runtime reports it (`errorType`, `errorMessage`): the one
/// place where errors become diagnostics. A handler returns `Result<_, LambdaError>` and `?`
/// converts.
#[derive(Debug)]
pub struct LambdaError(pub AppError);

impl From<AppError> for LambdaError {
    fn from(e: AppError) -> Self {
        Self(e)
    }
}

impl From<LambdaError> for lambda_runtime::Diagnostic {
    fn from(LambdaError(error): LambdaError) -> Self {
        lambda_runtime::Diagnostic {
            error_type: format!("shadowsync::{}", error.kind()),
            error_message: error.to_string(),
        }
    }
}

/// The AWS SDK's configuration: credentials from the standard chain (environment, profile,
/// `credential_process` such as IAM Roles Anywhere's signing helper, instance role), the region
/// given or from the same chain.
pub async fn sdk_config(region: Option<String>) -> aws_config::SdkConfig {
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
    if let Some(region) = region {
        loader = loader.region(aws_config::Region::new(region));
    }
    loader.load().await
}
