//! `[webhook]`: where Graph's change notifications arrive and how they are told from forgeries.

use crate::values::{self, error};
use crate::ConfigError;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use std::net::SocketAddr;
use url::Url;

const DEFAULT_LISTEN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 7070);
/// Fewer characters would be guessable: the client state is all that tells Graph's
/// notifications from forged ones.
const MIN_CLIENT_STATE_CHARS: usize = 16;
/// Graph's limit for `clientState`.
pub const MAX_CLIENT_STATE_CHARS: usize = 128;

/// The validated `[webhook]` section. `Debug` never shows the client state.
#[derive(Debug, Clone)]
pub struct WebhookSection {
    /// `listen`, default `127.0.0.1:7070`: where `serve` answers HTTP, normally behind an HTTPS
    /// reverse proxy. Any address is allowed (a container may need `0.0.0.0`).
    pub listen: SocketAddr,
    /// `public_url`, required: the http(s) base URL Graph reaches the webhook at (no query or
    /// fragment, since paths are appended to it).
    pub public_url: Url,
    /// `client_state`, environment only (`SHADOWSYNC_WEBHOOK_CLIENT_STATE`), required: 16 to 128
    /// characters, random. Graph echoes it in every notification; 128 is Graph's limit.
    pub client_state: SecretString,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    listen: Option<toml::Value>,
    public_url: Option<String>,
    #[serde(default, deserialize_with = "values::secret")]
    client_state: Option<SecretString>,
}

impl WebhookSection {
    /// The one conversion, for the file and the environment alike.
    pub(crate) fn from_table(table: toml::Table) -> Result<Self, ConfigError> {
        let raw: Raw = values::raw("webhook", table)?;
        Ok(Self {
            listen: values::socket_addr("webhook.listen", raw.listen.as_ref(), DEFAULT_LISTEN)?,
            public_url: values::http_url(
                "webhook.public_url",
                &values::required("webhook.public_url", raw.public_url)?,
            )?,
            client_state: client_state(raw.client_state)?,
        })
    }

    /// `client_state` alone (the webhook function needs no public URL).
    pub(crate) fn client_state_from_table(table: toml::Table) -> Result<SecretString, ConfigError> {
        let raw: Raw = values::raw("webhook", table)?;
        client_state(raw.client_state)
    }

    /// Where Graph posts change notifications: `<public_url>/api/notifications`.
    pub fn notification_url(&self) -> String {
        format!(
            "{}/api/notifications",
            self.public_url.as_str().trim_end_matches('/')
        )
    }

    /// Where Graph posts lifecycle events: `<public_url>/api/lifecycle`.
    pub fn lifecycle_url(&self) -> String {
        format!(
            "{}/api/lifecycle",
            self.public_url.as_str().trim_end_matches('/')
        )
    }
}

/// Messages say how long it is, never what it is.
fn client_state(value: Option<SecretString>) -> Result<SecretString, ConfigError> {
    let value = values::required("webhook.client_state", value)?;
    let chars = value.expose_secret().chars().count();
    if chars > MAX_CLIENT_STATE_CHARS {
        return Err(error(
            "webhook.client_state",
            format!("at most {MAX_CLIENT_STATE_CHARS} characters (Graph's limit), got {chars}"),
        ));
    }
    if chars < MIN_CLIENT_STATE_CHARS {
        return Err(error(
            "webhook.client_state",
            format!(
                "at least {MIN_CLIENT_STATE_CHARS} characters: it is what tells genuine notifications from forged ones (got {chars})"
            ),
        ));
    }
    Ok(value)
}
