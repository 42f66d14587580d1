//! shadowsync on AWS: what the four Lambda functions (and the on-premises connector) share.
//!
//! - [`LambdaHost`]: the host-only environment (`SHADOWSYNC_QUEUE_URL`, `SHADOWSYNC_DLQ_URL`,
//!   `SHADOWSYNC_TABLE_NAME`, `SHADOWSYNC_DEPLOYMENT_MODE`) and the configuration keys
//!   (`SHADOWSYNC_<SECTION>_<KEY>`, as in the CLI's file), with secrets resolved.
//! - [`secrets`]: `*_SECRET_ARN` variables swapped for their Secrets Manager values, once, at
//!   cold start (so cached for the life of the execution environment); never logged.
//! - [`emf`]: CloudWatch embedded-metric-format lines.

pub mod emf;
pub mod secrets;

use shadowsync_config::{ConfigError, EnvConfig};
use shadowsync_core::Policy;
use shadowsync_directory::Directory;
use shadowsync_graph::GraphClient;
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
    #[error("Microsoft Graph client: {0}")]
    Graph(#[from] shadowsync_graph::GraphError),
    #[error("directory {url}: {source}")]
    Directory {
        url: String,
        source: shadowsync_directory::DirectoryError,
    },
    #[error("secret {arn} (from {variable}): {reason}")]
    Secret {
        variable: String,
        arn: String,
        reason: String,
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
    pub graph_certificate: Option<shadowsync_graph::Credential>,
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

    pub fn graph(&self) -> Result<Arc<GraphClient>, AwsError> {
        let graph = self.config.graph(self.graph_certificate.clone())?;
        Ok(Arc::new(GraphClient::new(graph.graph_config()?)?))
    }

    /// The directory and the policy its OUs define.
    pub async fn directory(&self) -> Result<(Arc<Directory>, Policy), AwsError> {
        let section = self.config.directory()?;
        let policy = self.config.policy(&section)?;
        let directory = Directory::connect(section.directory_config(), &policy)
            .await
            .map_err(|source| AwsError::Directory {
                url: section.url.clone(),
                source,
            })?;
        Ok((Arc::new(directory), policy))
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

/// Logs as Lambda wants them: JSON when the function's log format is JSON (each line carrying
/// the invocation's `requestId` from the runtime's span), level from `AWS_LAMBDA_LOG_LEVEL` or
/// `RUST_LOG`.
pub fn init_logging() {
    lambda_runtime::tracing::init_default_subscriber();
}
