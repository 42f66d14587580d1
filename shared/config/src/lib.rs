//! The configuration file (TOML), with `SHADOWSYNC_<SECTION>_<KEY>` environment overrides.
//!
//! Secrets (`graph.client_secret`, `webhook.client_state`, `directory.bind_password`) are read
//! from the environment only, so that a config file can be shared, versioned and backed up
//! without leaking anything. Every error names the key that is wrong and says why, before
//! anything starts.

use secrecy::SecretString;
use serde::de::{DeserializeOwned, Deserializer};
use serde::Deserialize;
use shadowsync_core::{dn, Policy};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use thiserror::Error;
use url::Url;

const PREFIX: &str = "SHADOWSYNC_";
const SECTIONS: [&str; 10] = [
    "connector",
    "reconciler",
    "graph",
    "webhook",
    "directory",
    "policy",
    "state",
    "provisioner",
    "subscriptions",
    "admin",
];
/// `(section, key)` of every secret.
const SECRETS: [(&str, &str); 3] = [
    ("graph", "client_secret"),
    ("webhook", "client_state"),
    ("directory", "bind_password"),
];

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} is not valid TOML: {message}")]
    Syntax { path: PathBuf, message: String },
    /// A key has a wrong value; `key` is `section.key`.
    #[error("config key {key}: {reason}")]
    Key { key: String, reason: String },
}

fn key_error(key: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Key {
        key: key.to_string(),
        reason: reason.into(),
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub graph: GraphSection,
    pub webhook: WebhookSection,
    pub directory: DirectorySection,
    #[serde(default)]
    pub policy: PolicySection,
    /// Required by `serve` and the admin commands; the connector keeps state in DynamoDB.
    pub state: Option<StateSection>,
    #[serde(default)]
    pub provisioner: ProvisionerSection,
    #[serde(default)]
    pub subscriptions: SubscriptionsSection,
    #[serde(default)]
    pub admin: AdminSection,
    #[serde(default)]
    pub reconciler: ReconcilerSection,
    /// Only for `shadowsync connector`: where the cloud deployment's queue and state are.
    pub connector: Option<ConnectorSection>,
}

/// The on-premises connector's link to the cloud deployment (the stack's outputs).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectorSection {
    /// The SQS FIFO job queue (stack output `JobQueueUrl`).
    pub queue_url: Url,
    /// Its dead-letter queue (stack output `DeadLetterQueueUrl`).
    pub dead_letter_queue_url: Url,
    /// The DynamoDB state table (stack output `StateTableName`).
    pub table_name: String,
    /// The AWS region; default: the one in `queue_url`.
    pub region: Option<String>,
    /// The health endpoint, `GET /health`; loopback only.
    #[serde(default = "default_health_listen", deserialize_with = "lenient")]
    pub health_listen: SocketAddr,
}

fn default_health_listen() -> SocketAddr {
    "127.0.0.1:7072".parse().expect("valid")
}

impl ConnectorSection {
    /// The region: as configured, else the one SQS puts in its queue URLs
    /// (`https://sqs.<region>.amazonaws.com/...`).
    pub fn region(&self) -> Option<String> {
        self.region.clone().or_else(|| {
            let host = self.queue_url.host_str()?;
            let rest = host.strip_prefix("sqs.")?;
            Some(rest.split('.').next()?.to_string())
        })
    }

    fn validate(&self) -> Result<(), ConfigError> {
        for (key, url) in [
            ("connector.queue_url", &self.queue_url),
            (
                "connector.dead_letter_queue_url",
                &self.dead_letter_queue_url,
            ),
        ] {
            if !matches!(url.scheme(), "https" | "http") || !url.path().ends_with(".fifo") {
                return Err(key_error(
                    key,
                    format!("{url} is not the URL of an SQS FIFO queue (…/name.fifo)"),
                ));
            }
        }
        if self.table_name.trim().is_empty() {
            return Err(key_error("connector.table_name", "must not be empty"));
        }
        if !self.health_listen.ip().is_loopback() {
            return Err(key_error(
                "connector.health_listen",
                "must be a loopback address: the health endpoint is for the local service manager",
            ));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReconcilerSection {
    /// How often the delta reconciler runs ("15m", "1h", …).
    #[serde(default = "default_interval", deserialize_with = "duration")]
    pub interval: std::time::Duration,
    /// How often every account in the managed OUs is checked (orphans, retention, scope group).
    #[serde(default = "default_sweep_interval", deserialize_with = "duration")]
    pub sweep_interval: std::time::Duration,
}

impl Default for ReconcilerSection {
    fn default() -> Self {
        Self {
            interval: default_interval(),
            sweep_interval: default_sweep_interval(),
        }
    }
}

fn default_interval() -> std::time::Duration {
    std::time::Duration::from_secs(15 * 60)
}

fn default_sweep_interval() -> std::time::Duration {
    std::time::Duration::from_secs(24 * 3600)
}

/// A duration as people write it: "15m", "90s", "1h 30m", "1day".
fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<std::time::Duration, D::Error> {
    let text = String::deserialize(d)?;
    let parsed = humantime::parse_duration(text.trim()).map_err(|e| {
        serde::de::Error::custom(format!(
            "{text:?} is not a duration like \"15m\" or \"1h\": {e}"
        ))
    })?;
    if parsed.is_zero() {
        return Err(serde::de::Error::custom("must be more than 0"));
    }
    Ok(parsed)
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminSection {
    /// Where `serve` answers the admin commands while it holds the store. Loopback only: the
    /// admin API has no authentication of its own.
    #[serde(default = "default_admin_listen", deserialize_with = "lenient")]
    pub listen: SocketAddr,
}

impl Default for AdminSection {
    fn default() -> Self {
        Self {
            listen: default_admin_listen(),
        }
    }
}

fn default_admin_listen() -> SocketAddr {
    "127.0.0.1:7071".parse().expect("valid")
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GraphSection {
    pub tenant_id: String,
    pub client_id: String,
    #[serde(default, deserialize_with = "secret")]
    pub client_secret: Option<SecretString>,
    pub certificate_file: Option<PathBuf>,
    pub private_key_file: Option<PathBuf>,
    /// A certificate credential given in memory (the Lambda functions read it from Secrets
    /// Manager); never from the file or the environment.
    #[serde(skip)]
    pub certificate: Option<shadowsync_graph::Credential>,
    #[serde(default = "default_login_endpoint")]
    pub login_endpoint: Url,
    #[serde(default = "default_graph_endpoint")]
    pub graph_endpoint: Url,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookSection {
    #[serde(default = "default_listen", deserialize_with = "lenient")]
    pub listen: SocketAddr,
    /// Where Graph reaches the webhook: notifications go to `<public_url>/api/notifications`.
    pub public_url: Url,
    #[serde(default, deserialize_with = "secret")]
    pub client_state: Option<SecretString>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DirectorySection {
    pub url: String,
    pub bind_dn: String,
    #[serde(default, deserialize_with = "secret")]
    pub bind_password: Option<SecretString>,
    pub ca_file: Option<PathBuf>,
    pub guests_ou: String,
    pub disabled_ou: String,
    /// Search base for name clashes; default: the domain (rootDSE `defaultNamingContext`).
    pub base_dn: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicySection {
    pub scope_group_id: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    pub require_accepted: bool,
    #[serde(default = "default_retention_days", deserialize_with = "lenient")]
    pub retention_days: u32,
}

impl PolicySection {
    pub fn policy(&self, directory: &DirectorySection) -> Policy {
        Policy {
            scope_group_id: self.scope_group_id.clone(),
            require_accepted: self.require_accepted,
            retention_days: self.retention_days,
            ..Policy::new(&directory.guests_ou, &directory.disabled_ou)
        }
    }
}

impl Default for PolicySection {
    fn default() -> Self {
        Self {
            scope_group_id: None,
            require_accepted: false,
            retention_days: default_retention_days(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateSection {
    /// The embedded store file (state and queue).
    pub path: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProvisionerSection {
    /// Guests converged at the same time (jobs of one guest never run concurrently).
    #[serde(default = "default_workers", deserialize_with = "lenient")]
    pub workers: usize,
    /// Attempts before a job is dead-lettered.
    #[serde(default = "default_max_attempts", deserialize_with = "lenient")]
    pub max_attempts: u32,
}

impl Default for ProvisionerSection {
    fn default() -> Self {
        Self {
            workers: default_workers(),
            max_attempts: default_max_attempts(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubscriptionsSection {
    /// Renew the subscription when less than this is left.
    #[serde(default = "default_renew_margin_hours", deserialize_with = "lenient")]
    pub renew_margin_hours: u64,
    /// How often the subscription is checked (fractions allowed).
    #[serde(
        default = "default_check_interval_minutes",
        deserialize_with = "lenient"
    )]
    pub check_interval_minutes: f64,
}

impl Default for SubscriptionsSection {
    fn default() -> Self {
        Self {
            renew_margin_hours: default_renew_margin_hours(),
            check_interval_minutes: default_check_interval_minutes(),
        }
    }
}

fn default_login_endpoint() -> Url {
    Url::parse(shadowsync_graph::DEFAULT_LOGIN_ENDPOINT).expect("valid")
}
fn default_graph_endpoint() -> Url {
    Url::parse(shadowsync_graph::DEFAULT_GRAPH_ENDPOINT).expect("valid")
}
fn default_listen() -> SocketAddr {
    "127.0.0.1:7070".parse().expect("valid")
}
fn default_retention_days() -> u32 {
    30
}
fn default_workers() -> usize {
    4
}
fn default_max_attempts() -> u32 {
    8
}
fn default_renew_margin_hours() -> u64 {
    72
}
fn default_check_interval_minutes() -> f64 {
    60.0
}

/// Accepts a native TOML value or a string (environment overrides are always strings).
fn lenient<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: FromStr + DeserializeOwned,
    T::Err: std::fmt::Display,
{
    match toml::Value::deserialize(d)? {
        toml::Value::String(s) => s.trim().parse().map_err(serde::de::Error::custom),
        other => T::deserialize(other).map_err(serde::de::Error::custom),
    }
}

fn secret<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SecretString>, D::Error> {
    Ok(Option::<String>::deserialize(d)?.map(SecretString::from))
}

impl Config {
    /// The embedded store's file (`[state] path`), which `serve` and the admin commands need.
    pub fn state_path(&self) -> Result<&Path, ConfigError> {
        self.state
            .as_ref()
            .map(|s| s.path.as_path())
            .ok_or_else(|| {
                key_error(
                    "state.path",
                    "missing: serve and the admin commands keep their state and queue in this file",
                )
            })
    }

    /// The `[connector]` section, which `shadowsync connector` needs.
    pub fn connector(&self) -> Result<&ConnectorSection, ConfigError> {
        self.connector.as_ref().ok_or_else(|| {
            key_error(
                "connector",
                "missing: the connector needs [connector] queue_url, dead_letter_queue_url and table_name (the stack's outputs)",
            )
        })
    }

    /// Reads the file, applies the process environment, validates.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        Self::load_with_env(path, std::env::vars())
    }

    pub fn load_with_env(
        path: &Path,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(path, &text, env)
    }

    pub fn parse(
        path: &Path,
        text: &str,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let mut table: toml::Table = toml::from_str(text).map_err(|e| ConfigError::Syntax {
            path: path.to_path_buf(),
            message: e.message().to_string(),
        })?;
        for (section, key) in SECRETS {
            if table.get(section).and_then(|s| s.get(key)).is_some() {
                return Err(key_error(
                    &format!("{section}.{key}"),
                    format!(
                        "secrets are read from the environment only: remove it from the file and set {}",
                        env_name(section, key)
                    ),
                ));
            }
        }
        apply_env(&mut table, env)?;
        let config: Config = deserialize(toml::Value::Table(table), "")?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        self.graph.validate()?;
        self.webhook.validate()?;
        self.directory.validate()?;
        let interval = self.subscriptions.check_interval_minutes;
        if !interval.is_finite() || interval <= 0.0 {
            return Err(key_error(
                "subscriptions.check_interval_minutes",
                "must be more than 0",
            ));
        }
        if !self.admin.listen.ip().is_loopback() {
            return Err(key_error(
                "admin.listen",
                "must be a loopback address: the admin API has no authentication of its own",
            ));
        }
        if self.provisioner.workers == 0 {
            return Err(key_error("provisioner.workers", "must be at least 1"));
        }
        if self.provisioner.max_attempts == 0 {
            return Err(key_error("provisioner.max_attempts", "must be at least 1"));
        }
        if let Some(connector) = &self.connector {
            connector.validate()?;
        }
        Ok(())
    }
}

impl GraphSection {
    pub fn graph_config(
        &self,
    ) -> Result<shadowsync_graph::GraphConfig, shadowsync_graph::GraphError> {
        let credential = match (
            &self.client_secret,
            &self.certificate,
            &self.certificate_file,
            &self.private_key_file,
        ) {
            (Some(secret), ..) => shadowsync_graph::Credential::Secret(secret.clone()),
            (None, Some(credential), ..) => credential.clone(),
            (None, None, Some(cert), Some(key)) => {
                shadowsync_graph::Credential::certificate_from_files(cert, key)?
            }
            _ => unreachable!("validated"),
        };
        let mut config =
            shadowsync_graph::GraphConfig::new(&self.tenant_id, &self.client_id, credential);
        config.login_endpoint = self.login_endpoint.clone();
        config.graph_endpoint = self.graph_endpoint.clone();
        Ok(config)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let g = self;
        if uuid::Uuid::parse_str(&g.tenant_id).is_err() {
            return Err(key_error(
                "graph.tenant_id",
                "must be the directory (tenant) ID, a GUID: notifications are checked against it",
            ));
        }
        if g.client_id.trim().is_empty() {
            return Err(key_error("graph.client_id", "must not be empty"));
        }
        let has_certificate = g.certificate_file.is_some() || g.certificate.is_some();
        let has_key = g.private_key_file.is_some() || g.certificate.is_some();
        match (&g.client_secret, has_certificate, has_key) {
            (Some(_), false, false) | (None, true, true) => {}
            (Some(_), _, _) => {
                return Err(key_error(
                    "graph.client_secret",
                    "give either a client secret or certificate_file + private_key_file, not both",
                ))
            }
            (None, true, false) => {
                return Err(key_error(
                    "graph.private_key_file",
                    "required with certificate_file",
                ))
            }
            (None, false, true) => {
                return Err(key_error(
                    "graph.certificate_file",
                    "required with private_key_file",
                ))
            }
            (None, false, false) => {
                return Err(key_error(
                    "graph.client_secret",
                    format!(
                        "no credential: set {} or certificate_file + private_key_file",
                        env_name("graph", "client_secret")
                    ),
                ))
            }
        }
        for (key, file) in [
            ("graph.certificate_file", &g.certificate_file),
            ("graph.private_key_file", &g.private_key_file),
        ] {
            if let Some(file) = file.as_ref().filter(|f| !f.is_file()) {
                return Err(key_error(
                    key,
                    format!("{} is not a readable file", file.display()),
                ));
            }
        }
        for (key, url) in [
            ("graph.login_endpoint", &g.login_endpoint),
            ("graph.graph_endpoint", &g.graph_endpoint),
        ] {
            if !matches!(url.scheme(), "https" | "http") {
                return Err(key_error(key, format!("{url} is not an http(s) URL")));
            }
        }
        Ok(())
    }
}

impl WebhookSection {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !matches!(self.public_url.scheme(), "https" | "http") {
            return Err(key_error(
                "webhook.public_url",
                format!("{} is not an http(s) URL", self.public_url),
            ));
        }
        validate_client_state(self.client_state.as_ref())
    }
}

/// `webhook.client_state`: set, and as long as Graph allows and security wants.
pub fn validate_client_state(client_state: Option<&SecretString>) -> Result<(), ConfigError> {
    match client_state {
        None => {
            return Err(key_error(
                "webhook.client_state",
                format!("required: set {}", env_name("webhook", "client_state")),
            ))
        }
        // Graph's limit for clientState.
        Some(s) if secrecy::ExposeSecret::expose_secret(s).chars().count() > 128 => {
            return Err(key_error("webhook.client_state", "at most 128 characters"))
        }
        Some(s) if secrecy::ExposeSecret::expose_secret(s).chars().count() < 16 => {
            return Err(key_error(
                "webhook.client_state",
                "at least 16 characters: it is what tells genuine notifications from forged ones",
            ))
        }
        Some(_) => {}
    }
    Ok(())
}

impl DirectorySection {
    pub fn validate(&self) -> Result<(), ConfigError> {
        let d = self;
        if let Some(file) = d.ca_file.as_ref().filter(|f| !f.is_file()) {
            return Err(key_error(
                "directory.ca_file",
                format!("{} is not a readable file", file.display()),
            ));
        }
        if !(d.url.starts_with("ldaps://") || d.url.starts_with("ldap://")) {
            return Err(key_error(
                "directory.url",
                format!(
                    "{:?} must be ldaps://host[:port] (or ldap://, upgraded with StartTLS)",
                    d.url
                ),
            ));
        }
        if d.bind_password.is_none() {
            return Err(key_error(
                "directory.bind_password",
                format!("required: set {}", env_name("directory", "bind_password")),
            ));
        }
        for (key, value) in [
            ("directory.bind_dn", Some(&d.bind_dn)),
            ("directory.guests_ou", Some(&d.guests_ou)),
            ("directory.disabled_ou", Some(&d.disabled_ou)),
            ("directory.base_dn", d.base_dn.as_ref()),
        ] {
            let Some(value) = value else { continue };
            // A bind name may also be `user@REALM` or `DOMAIN\user`.
            if key == "directory.bind_dn" && !value.contains('=') {
                continue;
            }
            match dn::parse(value) {
                Ok(rdns) if !rdns.is_empty() => {}
                Ok(_) => return Err(key_error(key, "must not be empty")),
                Err(e) => return Err(key_error(key, e.to_string())),
            }
        }
        if dn::same(&d.guests_ou, &d.disabled_ou) {
            return Err(key_error(
                "directory.disabled_ou",
                "must differ from guests_ou",
            ));
        }
        Ok(())
    }
}

impl Config {
    pub fn policy(&self) -> Policy {
        self.policy.policy(&self.directory)
    }

    pub fn graph_config(
        &self,
    ) -> Result<shadowsync_graph::GraphConfig, shadowsync_graph::GraphError> {
        self.graph.graph_config()
    }

    pub fn directory_config(&self) -> shadowsync_directory::DirectoryConfig {
        self.directory.directory_config()
    }

    pub fn tenant_uuid(&self) -> uuid::Uuid {
        uuid::Uuid::parse_str(&self.graph.tenant_id).expect("validated")
    }

    pub fn notification_url(&self) -> String {
        self.webhook.notification_url()
    }

    pub fn lifecycle_url(&self) -> String {
        self.webhook.lifecycle_url()
    }
}

impl DirectorySection {
    pub fn directory_config(&self) -> shadowsync_directory::DirectoryConfig {
        let d = self;
        let mut config = shadowsync_directory::DirectoryConfig::new(
            &d.url,
            &d.bind_dn,
            d.bind_password.clone().expect("validated"),
        );
        config.ca_file = d.ca_file.clone();
        config.base_dn = d.base_dn.clone();
        config
    }
}

impl WebhookSection {
    pub fn notification_url(&self) -> String {
        format!(
            "{}/api/notifications",
            self.public_url.as_str().trim_end_matches('/')
        )
    }

    pub fn lifecycle_url(&self) -> String {
        format!(
            "{}/api/lifecycle",
            self.public_url.as_str().trim_end_matches('/')
        )
    }
}

/// Puts every `SHADOWSYNC_<SECTION>_<KEY>` variable into `table` as `section.key` (a string).
fn apply_env(
    table: &mut toml::Table,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<(), ConfigError> {
    for (name, value) in env {
        let Some(rest) = name.strip_prefix(PREFIX) else {
            continue;
        };
        let rest = rest.to_lowercase();
        // Other SHADOWSYNC_* variables (test harness, scripts, the Lambda host's QUEUE_URL…)
        // are not config.
        let Some(section) = SECTIONS.iter().find(|s| rest.starts_with(&format!("{s}_"))) else {
            continue;
        };
        let key = &rest[section.len() + 1..];
        let entry = table
            .entry(section.to_string())
            .or_insert_with(|| toml::Value::Table(Default::default()));
        let toml::Value::Table(section_table) = entry else {
            return Err(key_error(section, "must be a table"));
        };
        section_table.insert(key.to_string(), toml::Value::String(value));
    }
    Ok(())
}

/// Deserializes `value` (found at `prefix`), naming the wrong key in the error.
fn deserialize<T: DeserializeOwned>(value: toml::Value, prefix: &str) -> Result<T, ConfigError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let reason = e.into_inner().to_string();
        let key = match (prefix, path.as_str()) {
            // A missing section or key is reported at the top level; the message names it.
            ("", ".") => "(file)".to_string(),
            (prefix, ".") => prefix.to_string(),
            ("", path) => path.to_string(),
            (prefix, path) => format!("{prefix}.{path}"),
        };
        key_error(&key, reason)
    })
}

/// The configuration keys from the environment alone, section by section: the Lambda functions
/// have no file, and each needs only some sections.
pub struct EnvConfig {
    table: toml::Table,
}

impl EnvConfig {
    pub fn from_env(env: impl IntoIterator<Item = (String, String)>) -> Result<Self, ConfigError> {
        let mut table = toml::Table::new();
        apply_env(&mut table, env)?;
        Ok(Self { table })
    }

    /// One section, defaults applied; absent means all defaults (or an error naming the first
    /// required key).
    fn section<T: DeserializeOwned>(&self, name: &str) -> Result<T, ConfigError> {
        let value = self
            .table
            .get(name)
            .cloned()
            .unwrap_or_else(|| toml::Value::Table(Default::default()));
        deserialize(value, name)
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
        text.parse()
            .map(Some)
            .map_err(|e| key_error(&format!("{section}.{key}"), format!("{text:?}: {e}")))
    }

    /// Like [`EnvConfig::key`], but required: the error says which variable to set.
    pub fn required<T: FromStr>(&self, section: &str, key: &str) -> Result<T, ConfigError>
    where
        T::Err: std::fmt::Display,
    {
        self.key(section, key)?.ok_or_else(|| {
            key_error(
                &format!("{section}.{key}"),
                format!("required: set {}", env_name(section, key)),
            )
        })
    }

    /// `[graph]`; `certificate` is a certificate credential read elsewhere (Secrets Manager).
    pub fn graph(
        &self,
        certificate: Option<shadowsync_graph::Credential>,
    ) -> Result<GraphSection, ConfigError> {
        let mut graph: GraphSection = self.section("graph")?;
        graph.certificate = certificate;
        graph.validate()?;
        Ok(graph)
    }

    pub fn webhook(&self) -> Result<WebhookSection, ConfigError> {
        let webhook: WebhookSection = self.section("webhook")?;
        webhook.validate()?;
        Ok(webhook)
    }

    /// `webhook.client_state` alone (the webhook function needs no public URL).
    pub fn client_state(&self) -> Result<SecretString, ConfigError> {
        let state: Option<String> = self.key("webhook", "client_state")?;
        let state = state.map(SecretString::from);
        validate_client_state(state.as_ref())?;
        Ok(state.expect("validated"))
    }

    /// `graph.tenant_id` alone.
    pub fn tenant_id(&self) -> Result<uuid::Uuid, ConfigError> {
        self.required("graph", "tenant_id")
    }

    pub fn directory(&self) -> Result<DirectorySection, ConfigError> {
        let directory: DirectorySection = self.section("directory")?;
        directory.validate()?;
        Ok(directory)
    }

    pub fn policy(&self, directory: &DirectorySection) -> Result<Policy, ConfigError> {
        let policy: PolicySection = self.section("policy")?;
        Ok(policy.policy(directory))
    }

    pub fn provisioner(&self) -> Result<ProvisionerSection, ConfigError> {
        let provisioner: ProvisionerSection = self.section("provisioner")?;
        if provisioner.max_attempts == 0 {
            return Err(key_error("provisioner.max_attempts", "must be at least 1"));
        }
        Ok(provisioner)
    }

    pub fn subscriptions(&self) -> Result<SubscriptionsSection, ConfigError> {
        self.section("subscriptions")
    }

    pub fn reconciler(&self) -> Result<ReconcilerSection, ConfigError> {
        self.section("reconciler")
    }
}

/// The environment variable that sets `section.key`.
pub fn env_name(section: &str, key: &str) -> String {
    format!("{PREFIX}{}_{}", section.to_uppercase(), key.to_uppercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r#"
[graph]
tenant_id = "8a3f6c2e-5b1d-4e7a-9c0f-2d4b6e8a1c3f"
client_id = "3c9e1a7b-6d2f-4b8e-a5c1-9f0d2e4b7a6c"

[webhook]
listen = "127.0.0.1:7070"
public_url = "https://shadowsync.example.com"

[directory]
url = "ldaps://dc1.corp.example.test"
bind_dn = "CN=svc-shadowsync,OU=Service,DC=corp,DC=example,DC=test"
guests_ou = "OU=Guests,DC=corp,DC=example,DC=test"
disabled_ou = "OU=Disabled Guests,DC=corp,DC=example,DC=test"

[policy]
retention_days = 14

[state]
path = "/var/lib/shadowsync/state.redb"
"#;

    fn secrets() -> Vec<(String, String)> {
        vec![
            (
                "SHADOWSYNC_GRAPH_CLIENT_SECRET".into(),
                "s3cret-value".into(),
            ),
            (
                "SHADOWSYNC_WEBHOOK_CLIENT_STATE".into(),
                "a-long-random-client-state".into(),
            ),
            ("SHADOWSYNC_DIRECTORY_BIND_PASSWORD".into(), "pw".into()),
        ]
    }

    fn parse(text: &str, env: Vec<(String, String)>) -> Result<Config, ConfigError> {
        Config::parse(Path::new("test.toml"), text, env)
    }

    fn err_key(text: &str, env: Vec<(String, String)>) -> String {
        match parse(text, env).unwrap_err() {
            ConfigError::Key { key, .. } => key,
            other => panic!("{other}"),
        }
    }

    #[test]
    fn loads_with_defaults_and_env_secrets() {
        let c = parse(FILE, secrets()).unwrap();
        assert_eq!(c.policy.retention_days, 14);
        assert!(!c.policy.require_accepted);
        assert_eq!(c.provisioner.workers, 4);
        assert_eq!(
            c.graph.graph_endpoint.as_str(),
            "https://graph.microsoft.com/"
        );
        assert_eq!(
            c.notification_url(),
            "https://shadowsync.example.com/api/notifications"
        );
        assert_eq!(
            c.lifecycle_url(),
            "https://shadowsync.example.com/api/lifecycle"
        );
        assert!(
            !format!("{c:?}").contains("s3cret-value"),
            "secrets stay out of Debug"
        );
        assert_eq!(c.policy().retention_days, 14);
    }

    #[test]
    fn environment_overrides_any_key() {
        let mut env = secrets();
        env.push(("SHADOWSYNC_POLICY_RETENTION_DAYS".into(), "0".into()));
        env.push(("SHADOWSYNC_POLICY_REQUIRE_ACCEPTED".into(), "true".into()));
        env.push(("SHADOWSYNC_WEBHOOK_LISTEN".into(), "0.0.0.0:8080".into()));
        env.push(("SHADOWSYNC_GRAPH_CLIENT_ID".into(), "12345".into()));
        env.push(("SHADOWSYNC_SAMBA_DIR".into(), "/not/config".into()));
        let c = parse(FILE, env).unwrap();
        assert_eq!(c.policy.retention_days, 0);
        assert!(c.policy.require_accepted);
        assert_eq!(c.webhook.listen.port(), 8080);
        assert_eq!(c.graph.client_id, "12345");
    }

    #[test]
    fn secrets_in_the_file_are_refused() {
        let text = FILE.replace(
            "[webhook]",
            "[webhook]\nclient_state = \"in-the-file-xxxxxxxx\"",
        );
        assert_eq!(err_key(&text, secrets()), "webhook.client_state");
    }

    #[test]
    fn errors_name_the_key() {
        let cases = [
            (
                FILE.replace("retention_days = 14", "retention_days = \"two weeks\""),
                "policy.retention_days",
            ),
            (
                FILE.replace("retention_days = 14", "retention_dayz = 14"),
                "policy",
            ),
            (FILE.replace("ldaps://dc1", "http://dc1"), "directory.url"),
            (
                FILE.replace("OU=Guests,DC=corp", "OU=Guests,,DC=corp"),
                "directory.guests_ou",
            ),
            (
                FILE.replace("127.0.0.1:7070", "localhost"),
                "webhook.listen",
            ),
            (
                FILE.replace("https://shadowsync", "ftp://shadowsync"),
                "webhook.public_url",
            ),
        ];
        for (text, key) in cases {
            let got = err_key(&text, secrets());
            assert!(got.starts_with(key), "expected {key}, got {got}");
        }
        let unknown_env = vec![("SHADOWSYNC_GRAPH_TENANTID".into(), "x".into())];
        assert_eq!(
            err_key(FILE, [secrets(), unknown_env].concat()),
            "graph.tenantid"
        );
    }

    #[test]
    fn missing_secrets_say_which_variable_to_set() {
        let err = parse(FILE, vec![]).unwrap_err().to_string();
        assert!(err.contains("SHADOWSYNC_GRAPH_CLIENT_SECRET"), "{err}");
        let env: Vec<_> = secrets()
            .into_iter()
            .filter(|(k, _)| !k.contains("BIND"))
            .collect();
        let err = parse(FILE, env).unwrap_err().to_string();
        assert!(
            err.contains("directory.bind_password")
                && err.contains("SHADOWSYNC_DIRECTORY_BIND_PASSWORD"),
            "{err}"
        );
    }

    #[test]
    fn reconciler_intervals_read_like_durations() {
        let c = parse(FILE, secrets()).unwrap();
        assert_eq!(c.reconciler.interval.as_secs(), 15 * 60);
        assert_eq!(c.reconciler.sweep_interval.as_secs(), 24 * 3600);
        let text = format!("{FILE}\n[reconciler]\ninterval = \"5m\"\nsweep_interval = \"12h\"\n");
        let c = parse(&text, secrets()).unwrap();
        assert_eq!(
            (
                c.reconciler.interval.as_secs(),
                c.reconciler.sweep_interval.as_secs()
            ),
            (300, 43200)
        );
        let bad = format!("{FILE}\n[reconciler]\ninterval = \"often\"\n");
        assert_eq!(err_key(&bad, secrets()), "reconciler.interval");
    }

    #[test]
    fn short_client_state_is_refused() {
        let mut env = secrets();
        env[1].1 = "short".into();
        assert_eq!(err_key(FILE, env), "webhook.client_state");
    }

    #[test]
    fn the_connector_section_is_validated_and_knows_its_region() {
        let mut env = secrets();
        env.push((
            "SHADOWSYNC_CONNECTOR_QUEUE_URL".into(),
            "https://sqs.eu-west-1.amazonaws.com/123456789012/shadowsync-jobs.fifo".into(),
        ));
        env.push((
            "SHADOWSYNC_CONNECTOR_DEAD_LETTER_QUEUE_URL".into(),
            "https://sqs.eu-west-1.amazonaws.com/123456789012/shadowsync-dlq.fifo".into(),
        ));
        env.push((
            "SHADOWSYNC_CONNECTOR_TABLE_NAME".into(),
            "shadowsync-State".into(),
        ));
        let config = parse(FILE, env.clone()).unwrap();
        let connector = config.connector().unwrap();
        assert_eq!(connector.region().as_deref(), Some("eu-west-1"));
        assert_eq!(connector.health_listen.to_string(), "127.0.0.1:7072");

        assert!(
            parse(FILE, secrets()).unwrap().connector().is_err(),
            "serve needs none, the connector does"
        );
        env.push((
            "SHADOWSYNC_CONNECTOR_HEALTH_LISTEN".into(),
            "0.0.0.0:7072".into(),
        ));
        assert_eq!(err_key(FILE, env), "connector.health_listen");
    }

    #[test]
    fn the_environment_alone_gives_each_section_with_its_errors() {
        let env = |pairs: &[(&str, &str)]| {
            EnvConfig::from_env(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string()))).unwrap()
        };
        let webhook = env(&[
            (
                "SHADOWSYNC_GRAPH_TENANT_ID",
                "8a3f6c2e-5b1d-4e7a-9c0f-2d4b6e8a1c3f",
            ),
            (
                "SHADOWSYNC_WEBHOOK_CLIENT_STATE",
                "a-long-random-client-state",
            ),
            ("SHADOWSYNC_QUEUE_URL", "https://sqs.example/q.fifo"),
        ]);
        assert_eq!(
            webhook.tenant_id().unwrap().to_string(),
            "8a3f6c2e-5b1d-4e7a-9c0f-2d4b6e8a1c3f"
        );
        assert!(webhook.client_state().is_ok());
        // No [graph] client id: the webhook does not need one, the others say what is missing.
        let error = webhook.graph(None).unwrap_err().to_string();
        assert!(error.contains("client_id"), "{error}");
        assert_eq!(webhook.reconciler().unwrap().interval, default_interval());

        let short = env(&[("SHADOWSYNC_WEBHOOK_CLIENT_STATE", "short")]);
        assert!(short
            .client_state()
            .unwrap_err()
            .to_string()
            .contains("at least 16"));
        let missing = env(&[]).tenant_id().unwrap_err().to_string();
        assert!(missing.contains("SHADOWSYNC_GRAPH_TENANT_ID"), "{missing}");
        let bad = env(&[("SHADOWSYNC_PROVISIONER_MAX_ATTEMPTS", "lots")])
            .provisioner()
            .unwrap_err();
        assert!(
            bad.to_string().contains("provisioner.max_attempts"),
            "{bad}"
        );
    }
}
