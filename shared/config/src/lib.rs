//! shadowsync's configuration, parsed once into validated types.
//!
//! The keys come from a TOML file, one section per component, and from environment variables
//! `SHADOWSYNC_<SECTION>_<KEY>`, which override the file. Both feed the same conversion: each
//! section module turns a TOML table into its validated struct in one function, whether the
//! table came from the file ([`Config`]) or from the environment alone ([`EnvConfig`], for the
//! Lambda functions, which have no file). Every wrong value is a [`ConfigError::Key`] naming
//! the key and saying why, before anything starts; no input makes this crate panic.
//!
//! Secrets (`graph.client_secret`, `webhook.client_state` and `previous_client_state`, `directory.bind_password`) are read
//! from the environment only, so that a config file can be shared, versioned and backed up
//! without leaking anything; they are held as [`SecretString`], whose `Debug` is redacted.

mod admin;
mod connector;
mod directory;
mod graph;
mod partners;
mod policy;
mod provisioner;
mod reconciler;
mod safety;
mod sources;
mod state;
mod subscriptions;
mod values;
mod webhook;

pub use admin::AdminSection;
pub use connector::ConnectorSection;
pub use directory::DirectorySection;
pub use graph::{GraphCredential, GraphSection, DEFAULT_GRAPH_ENDPOINT, DEFAULT_LOGIN_ENDPOINT};
pub use partners::{
    PartnerAttribute, PartnerMode, PartnersSection,
    DEFAULT_POLL_INTERVAL as DEFAULT_PARTNER_POLL_INTERVAL,
};
pub use policy::PolicySection;
pub use provisioner::ProvisionerSection;
pub use reconciler::ReconcilerSection;
pub use safety::SafetySection;
pub use secrecy::SecretString;
pub use state::StateSection;
pub use subscriptions::{SubscriptionsSection, MAX_SUBSCRIPTION_LIFETIME, SUBSCRIPTION_LIFETIME};
pub use webhook::{WebhookSection, MAX_CLIENT_STATE_CHARS};

use shadowsync_core::Policy;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use thiserror::Error;
use values::error;

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} is not valid TOML: {message}")]
    Syntax { path: PathBuf, message: String },
    /// A key has a wrong value; `key` is `section.key` (or the section, for an unknown key or
    /// section).
    #[error("config key {key}: {reason}")]
    Key { key: String, reason: String },
}

/// The whole configuration of the `shadowsync` binary: the file, with environment overrides.
#[derive(Debug, Clone)]
pub struct Config {
    pub graph: GraphSection,
    pub webhook: WebhookSection,
    pub directory: DirectorySection,
    /// Optional section; defaults when absent.
    pub policy: PolicySection,
    /// Required by `serve` and the admin commands ([`Config::state_path`]); the connector keeps
    /// its state in DynamoDB.
    pub state: Option<StateSection>,
    /// Optional section; defaults when absent.
    pub provisioner: ProvisionerSection,
    /// Optional section; defaults when absent.
    pub subscriptions: SubscriptionsSection,
    /// Optional section; defaults when absent.
    pub admin: AdminSection,
    /// Optional section; defaults when absent.
    pub reconciler: ReconcilerSection,
    /// Optional section; defaults when absent.
    pub safety: SafetySection,
    /// Only for `shadowsync connector` ([`Config::connector`]): where the cloud deployment's
    /// queue and state are.
    pub connector: Option<ConnectorSection>,
    /// Optional: partner accounts in AD become guests in Entra; absent, that direction is off.
    pub partners: Option<PartnersSection>,
}

impl Config {
    /// Reads the file, applies the process environment, validates.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        Self::load_with_env(path, sources::process_env()?, None)
    }

    /// Like [`Config::load`] with the given environment. `graph_certificate` is a Graph
    /// credential the host read elsewhere (the connector: Secrets Manager); when given, it is
    /// the credential, and neither the file nor the environment may give another.
    pub fn load_with_env(
        path: &Path,
        env: impl IntoIterator<Item = (String, String)>,
        graph_certificate: Option<GraphCredential>,
    ) -> Result<Self, ConfigError> {
        let text = sources::read_file(path)?;
        Self::parse(path, &text, env, graph_certificate)
    }

    /// Parses `text`, the contents of the file at `path` (named in errors).
    pub fn parse(
        path: &Path,
        text: &str,
        env: impl IntoIterator<Item = (String, String)>,
        graph_certificate: Option<GraphCredential>,
    ) -> Result<Self, ConfigError> {
        let mut table = sources::file_table(path, text)?;
        sources::apply_env(&mut table, env)?;
        let mut section = |name| sources::take_section(&mut table, name);
        // Absent sections convert from an empty table: defaults, or an error naming the first
        // required key.
        Ok(Self {
            graph: GraphSection::from_table(
                section("graph")?.unwrap_or_default(),
                graph_certificate,
            )?,
            webhook: WebhookSection::from_table(section("webhook")?.unwrap_or_default())?,
            directory: DirectorySection::from_table(section("directory")?.unwrap_or_default())?,
            policy: PolicySection::from_table(section("policy")?.unwrap_or_default())?,
            state: section("state")?
                .map(StateSection::from_table)
                .transpose()?,
            provisioner: ProvisionerSection::from_table(
                section("provisioner")?.unwrap_or_default(),
            )?,
            subscriptions: SubscriptionsSection::from_table(
                section("subscriptions")?.unwrap_or_default(),
            )?,
            admin: AdminSection::from_table(section("admin")?.unwrap_or_default())?,
            reconciler: ReconcilerSection::from_table(section("reconciler")?.unwrap_or_default())?,
            safety: SafetySection::from_table(section("safety")?.unwrap_or_default())?,
            connector: section("connector")?
                .map(ConnectorSection::from_table)
                .transpose()?,
            partners: section("partners")?
                .map(PartnersSection::from_table)
                .transpose()?,
        })
    }

    /// The embedded store's file (`[state] path`), which `serve` and the admin commands need.
    pub fn state_path(&self) -> Result<&Path, ConfigError> {
        self.state
            .as_ref()
            .map(|s| s.path.as_path())
            .ok_or_else(|| {
                error(
                    "state.path",
                    "missing: serve and the admin commands keep their state and queue in this file",
                )
            })
    }

    /// The `[connector]` section, which `shadowsync connector` needs.
    pub fn connector(&self) -> Result<&ConnectorSection, ConfigError> {
        self.connector.as_ref().ok_or_else(|| {
            error(
                "connector",
                "missing: the connector needs [connector] queue_url, dead_letter_queue_url and table_name (the stack's outputs)",
            )
        })
    }

    /// The core's policy: `[policy]` with the OUs of `[directory]`.
    pub fn policy(&self) -> Policy {
        Policy {
            partner_link_attribute: self
                .partners
                .as_ref()
                .and_then(PartnersSection::link_attribute_in_use),
            ..self.policy.policy(&self.directory)
        }
    }
}

/// The configuration keys from the environment alone, section by section: the Lambda functions
/// have no file, and each needs only some sections. Every accessor goes through the same
/// conversion as [`Config`]. `Debug` lists the keys set, never their values.
pub struct EnvConfig {
    table: toml::Table,
}

impl std::fmt::Debug for EnvConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let keys = self.table.iter().flat_map(|(section, keys)| {
            keys.as_table()
                .into_iter()
                .flat_map(|t| t.keys())
                .map(move |key| format!("{section}.{key}"))
        });
        f.debug_struct("EnvConfig")
            .field("keys", &keys.collect::<Vec<_>>())
            .finish()
    }
}

impl EnvConfig {
    pub fn from_env(env: impl IntoIterator<Item = (String, String)>) -> Result<Self, ConfigError> {
        let mut table = toml::Table::new();
        sources::apply_env(&mut table, env)?;
        Ok(Self { table })
    }

    /// True when any `SHADOWSYNC_<SECTION>_*` variable is set: a host can tell whether, say, a
    /// directory is configured at all.
    pub fn has_section(&self, name: &str) -> bool {
        self.table.contains_key(&name.to_lowercase())
    }

    /// One section's keys; an absent section is an empty table (defaults, or an error naming
    /// the first required key).
    fn section(&self, name: &str) -> toml::Table {
        self.table
            .get(name)
            .and_then(toml::Value::as_table)
            .cloned()
            .unwrap_or_default()
    }

    /// One key, parsed; `None` when unset.
    pub fn key<T: FromStr>(&self, section: &str, key: &str) -> Result<Option<T>, ConfigError>
    where
        T::Err: std::fmt::Display,
    {
        let Some(value) = self.table.get(section).and_then(|s| s.get(key)) else {
            return Ok(None);
        };
        let text = value.as_str().unwrap_or_default().trim();
        text.parse().map(Some).map_err(|e| {
            // A secret's value never goes into a message.
            let shown = if sources::is_secret(section, key) {
                "(secret)".to_string()
            } else {
                format!("{text:?}")
            };
            error(format!("{section}.{key}"), format!("{shown}: {e}"))
        })
    }

    /// Like [`EnvConfig::key`], but required: the error says which variable to set.
    pub fn required<T: FromStr>(&self, section: &str, key: &str) -> Result<T, ConfigError>
    where
        T::Err: std::fmt::Display,
    {
        self.key(section, key)?.ok_or_else(|| {
            error(
                format!("{section}.{key}"),
                format!("required: set {}", env_name(section, key)),
            )
        })
    }

    /// `[graph]`; `certificate` is a credential the host read elsewhere (Secrets Manager).
    pub fn graph(&self, certificate: Option<GraphCredential>) -> Result<GraphSection, ConfigError> {
        GraphSection::from_table(self.section("graph"), certificate)
    }

    /// `graph.tenant_id` alone (the webhook function needs nothing else of `[graph]`).
    pub fn tenant_id(&self) -> Result<uuid::Uuid, ConfigError> {
        GraphSection::tenant_id_from_table(self.section("graph"))
    }

    pub fn webhook(&self) -> Result<WebhookSection, ConfigError> {
        WebhookSection::from_table(self.section("webhook"))
    }

    /// `webhook.client_state` alone (the webhook function needs no public URL).
    pub fn client_state(&self) -> Result<SecretString, ConfigError> {
        Ok(self.client_states()?.0)
    }

    /// `webhook.client_state` and `webhook.previous_client_state` (during a rotation).
    pub fn client_states(&self) -> Result<(SecretString, Option<SecretString>), ConfigError> {
        WebhookSection::client_states_from_table(self.section("webhook"))
    }

    pub fn directory(&self) -> Result<DirectorySection, ConfigError> {
        DirectorySection::from_table(self.section("directory"))
    }

    /// `[policy]` with the OUs of `directory`.
    pub fn policy(&self, directory: &DirectorySection) -> Result<Policy, ConfigError> {
        let partners = self.partners()?;
        Ok(Policy {
            partner_link_attribute: partners
                .as_ref()
                .and_then(PartnersSection::link_attribute_in_use),
            ..PolicySection::from_table(self.section("policy"))?.policy(directory)
        })
    }

    /// `[partners]`, `None` when absent (the partner direction is off).
    pub fn partners(&self) -> Result<Option<PartnersSection>, ConfigError> {
        let partners = self.section("partners");
        (!partners.is_empty())
            .then(|| PartnersSection::from_table(partners))
            .transpose()
    }

    /// `[state]`; required when asked for.
    pub fn state(&self) -> Result<StateSection, ConfigError> {
        StateSection::from_table(self.section("state"))
    }

    pub fn provisioner(&self) -> Result<ProvisionerSection, ConfigError> {
        ProvisionerSection::from_table(self.section("provisioner"))
    }

    pub fn subscriptions(&self) -> Result<SubscriptionsSection, ConfigError> {
        SubscriptionsSection::from_table(self.section("subscriptions"))
    }

    pub fn admin(&self) -> Result<AdminSection, ConfigError> {
        AdminSection::from_table(self.section("admin"))
    }

    pub fn reconciler(&self) -> Result<ReconcilerSection, ConfigError> {
        ReconcilerSection::from_table(self.section("reconciler"))
    }

    pub fn safety(&self) -> Result<SafetySection, ConfigError> {
        SafetySection::from_table(self.section("safety"))
    }

    /// `[connector]`; required when asked for.
    pub fn connector(&self) -> Result<ConnectorSection, ConfigError> {
        ConnectorSection::from_table(self.section("connector"))
    }
}

/// The environment variable that sets `section.key`.
pub fn env_name(section: &str, key: &str) -> String {
    format!(
        "{}{}_{}",
        sources::PREFIX,
        section.to_uppercase(),
        key.to_uppercase()
    )
}
