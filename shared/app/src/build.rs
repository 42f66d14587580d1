//! [`App::build`]: the application from the settings and the chosen storage. The one place
//! where the real adapters (the Graph client, the LDAP directory) are made from configuration.

use crate::keeper::KeeperConfig;
use crate::{App, AppError, PartnerParts, PartnerSettings, Parts, Schedule, WorkerConfig};
use shadowsync_config::{
    Config, DirectorySection, GraphCredential, GraphSection, PartnersSection, ProvisionerSection,
    ReconcilerSection, SafetySection, SubscriptionsSection, WebhookSection,
};
use shadowsync_core::{Policy, SystemClock};
use shadowsync_directory::{DirectoryConfig, LdapDirectory};
use shadowsync_graph::{Credential, GraphClient, GraphConfig};
use shadowsync_ports::Directory;
use shadowsync_queue::{EmbeddedQueue, PendingJobs, Queue};
use shadowsync_state::{EmbeddedStore, KeyValueStore};
use std::path::Path;
use std::sync::Arc;

/// What the application needs from the configuration. A host that does not do some work
/// leaves its part out: the Lambda keeper has no directory, the webhook has nothing but a queue.
#[derive(Debug, Clone)]
pub struct Settings {
    pub graph: GraphSection,
    /// AD, where this host reaches it, and the policy that names the managed OUs.
    pub directory: Option<(DirectorySection, Policy)>,
    /// The subscription this host keeps: where Graph notifies, the client state, and when.
    pub subscription: Option<(WebhookSection, SubscriptionsSection)>,
    pub provisioner: ProvisionerSection,
    pub reconciler: ReconcilerSection,
    pub safety: SafetySection,
    /// `[partners]`, where this host reaches AD and the partner direction is on.
    pub partners: Option<PartnersSection>,
}

impl Settings {
    /// Everything, from a whole configuration file (`serve`, the connector, the admin commands).
    pub fn from_config(config: &Config) -> Self {
        Self {
            graph: config.graph.clone(),
            directory: Some((config.directory.clone(), config.policy())),
            subscription: Some((config.webhook.clone(), config.subscriptions)),
            provisioner: config.provisioner.clone(),
            reconciler: config.reconciler,
            safety: config.safety,
            partners: config.partners.clone(),
        }
    }

    pub fn schedule(&self) -> Schedule {
        Schedule {
            interval: self.reconciler.interval,
            sweep_interval: self.reconciler.sweep_interval,
            subscription_check: self
                .subscription
                .as_ref()
                .map_or(Schedule::default().subscription_check, |(_, s)| {
                    s.check_interval
                }),
        }
    }

    /// The subscription keeper's configuration, when this host keeps the subscription.
    pub fn keeper(&self) -> Result<Option<KeeperConfig>, AppError> {
        let Some((webhook, subscriptions)) = &self.subscription else {
            return Ok(None);
        };
        let mut keeper = KeeperConfig::new(
            webhook.notification_url(),
            webhook.lifecycle_url(),
            webhook.client_state.clone(),
        );
        keeper.renew_margin = chrono::Duration::from_std(subscriptions.renew_margin)
            .map_err(|e| AppError::Config(format!("subscriptions.renew_margin: {e}")))?;
        keeper.validate()?;
        Ok(Some(keeper))
    }
}

/// Where state and jobs live.
pub struct Storage {
    pub state: Arc<dyn KeyValueStore>,
    pub queue: Arc<dyn Queue>,
    /// Where the marks of waiting jobs live (see [`PendingJobs`]).
    pub pending: Arc<PendingJobs>,
}

impl Storage {
    /// State and queue shared by several hosts (the AWS deployment): the marks of waiting jobs
    /// live in the state store, where the webhook and every worker see them.
    pub fn shared(state: Arc<dyn KeyValueStore>, queue: Arc<dyn Queue>) -> Self {
        Self {
            pending: Arc::new(PendingJobs::new(state.clone())),
            state,
            queue,
        }
    }

    /// The embedded store and queue, in one redb file (`serve`, the admin commands). The queue
    /// is returned as itself too: its only consumer may release what a dead run held.
    pub fn embedded(
        path: &Path,
        max_attempts: u32,
    ) -> Result<(Self, Arc<EmbeddedQueue>), AppError> {
        let store = EmbeddedStore::open(path)?;
        let queue = Arc::new(EmbeddedQueue::new(&store, max_attempts)?);
        // One process holds the webhook and the workers: the marks need no disk (a crash loses
        // them with the starts they record, which costs at most a duplicate), nor transactions:
        // a map in this process's memory.
        let storage = Self {
            state: Arc::new(store),
            queue: queue.clone(),
            pending: Arc::new(PendingJobs::in_process()),
        };
        Ok((storage, queue))
    }
}

impl App {
    /// The application from its settings, on `storage`: connects the Graph client (no request
    /// yet) and, where configured, the directory (a bind, so that a wrong URL, certificate or
    /// password fails here, before anything starts).
    pub async fn build(settings: &Settings, storage: Storage) -> Result<App, AppError> {
        Self::build_with(settings, storage, true).await
    }

    /// Like [`App::build`], but AD is reached when a job first needs it: a Lambda function
    /// that may not need AD in an invocation does not pay for the TLS handshake and bind at
    /// its start (a wrong URL or password then fails that job, retried, and is logged).
    pub async fn build_deferred(settings: &Settings, storage: Storage) -> Result<App, AppError> {
        Self::build_with(settings, storage, false).await
    }

    async fn build_with(
        settings: &Settings,
        storage: Storage,
        connect_now: bool,
    ) -> Result<App, AppError> {
        let graph = Arc::new(graph_client(&settings.graph)?);
        let mut partners = None;
        let directory = match &settings.directory {
            Some((section, policy)) => {
                let config = directory_config(section);
                let directory = Arc::new(match connect_now {
                    true => LdapDirectory::connect(config, policy).await?,
                    false => LdapDirectory::new(config, policy),
                });
                // Only once AD was reached (not yet when deferred).
                crate::admin::record_anchor_lookup(storage.state.as_ref(), directory.as_ref())
                    .await;
                partners = settings.partners.as_ref().map(|p| PartnerParts {
                    guests: graph.clone(),
                    directory: directory.clone(),
                    settings: PartnerSettings::new(p, policy),
                    poll_interval: p.poll_interval,
                });
                let directory: Arc<dyn Directory> = directory;
                Some((directory, policy.clone()))
            }
            None => None,
        };
        Ok(App::from_parts(Parts {
            graph,
            state: storage.state,
            queue: storage.queue,
            directory,
            keeper: settings.keeper()?,
            clock: Arc::new(SystemClock),
            schedule: settings.schedule(),
            workers: WorkerConfig {
                workers: settings.provisioner.workers,
                retry_for: settings.provisioner.retry_for,
                ..WorkerConfig::default()
            },
            safety: (&settings.safety).into(),
            pending: storage.pending,
            partners,
        }))
    }
}

/// The Graph client the `[graph]` section describes.
pub fn graph_client(section: &GraphSection) -> Result<GraphClient, AppError> {
    let config = error_in_config(graph_config(section))?;
    error_in_config(GraphClient::new(config))
}

fn graph_config(g: &GraphSection) -> Result<GraphConfig, shadowsync_ports::GraphError> {
    let credential = match &g.credential {
        GraphCredential::Secret(secret) => Credential::Secret(secret.clone()),
        GraphCredential::CertificateFiles {
            certificate_file,
            private_key_file,
        } => Credential::certificate_from_files(certificate_file, private_key_file)?,
        GraphCredential::Certificate {
            certificate_pem,
            private_key_pem,
        } => Credential::Certificate {
            certificate_pem: certificate_pem.clone(),
            private_key_pem: private_key_pem.clone(),
        },
    };
    let mut config = GraphConfig::new(g.tenant_id.to_string(), &g.client_id, credential);
    config.login_endpoint = g.login_endpoint.clone();
    config.graph_endpoint = g.graph_endpoint.clone();
    Ok(config)
}

fn error_in_config<T>(r: Result<T, shadowsync_ports::GraphError>) -> Result<T, AppError> {
    r.map_err(|e| AppError::Config(format!("[graph]: {e}")))
}

/// The LDAP adapter's configuration from the `[directory]` section.
pub fn directory_config(d: &DirectorySection) -> DirectoryConfig {
    let mut config = DirectoryConfig::new(&d.url, &d.bind_dn, d.bind_password.clone());
    config.ca_file = d.ca_file.clone();
    config.base_dn = d.base_dn.clone();
    config.indexed_anchor = d.indexed_anchor;
    config
}
