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
    /// `previous_client_state`, environment only (`SHADOWSYNC_WEBHOOK_PREVIOUS_CLIENT_STATE`),
    /// optional: the client state being rotated out. While it is set, the webhook accepts
    /// notifications carrying either, so that none is lost while the keeper replaces the
    /// subscription with one carrying the new client state. Same rules; must differ from
    /// `client_state`. Remove it once the subscription has been replaced.
    pub previous_client_state: Option<SecretString>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    listen: Option<toml::Value>,
    public_url: Option<String>,
    #[serde(default, deserialize_with = "values::secret")]
    client_state: Option<SecretString>,
    #[serde(default, deserialize_with = "values::secret")]
    previous_client_state: Option<SecretString>,
}

impl WebhookSection {
    /// The one conversion, for the file and the environment alike.
    pub(crate) fn from_table(table: toml::Table) -> Result<Self, ConfigError> {
        let raw: Raw = values::raw("webhook", table)?;
        let (client_state, previous_client_state) =
            client_states(raw.client_state, raw.previous_client_state)?;
        Ok(Self {
            listen: values::socket_addr("webhook.listen", raw.listen.as_ref(), DEFAULT_LISTEN)?,
            public_url: values::http_url(
                "webhook.public_url",
                &values::required("webhook.public_url", raw.public_url)?,
            )?,
            client_state,
            previous_client_state,
        })
    }

    /// `client_state` and `previous_client_state` alone (the webhook function needs no public
    /// URL).
    pub(crate) fn client_states_from_table(
        table: toml::Table,
    ) -> Result<(SecretString, Option<SecretString>), ConfigError> {
        let raw: Raw = values::raw("webhook", table)?;
        client_states(raw.client_state, raw.previous_client_state)
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

/// The client state and the one being rotated out, checked alike.
fn client_states(
    current: Option<SecretString>,
    previous: Option<SecretString>,
) -> Result<(SecretString, Option<SecretString>), ConfigError> {
    let current = client_state(
        "webhook.client_state",
        values::required("webhook.client_state", current)?,
    )?;
    let previous = previous
        .map(|p| client_state("webhook.previous_client_state", p))
        .transpose()?;
    if previous
        .as_ref()
        .is_some_and(|p| p.expose_secret() == current.expose_secret())
    {
        return Err(error(
            "webhook.previous_client_state",
            "must differ from client_state (it is the one being rotated out)",
        ));
    }
    Ok((current, previous))
}

/// Messages say how long it is, never what it is.
fn client_state(key: &str, value: SecretString) -> Result<SecretString, ConfigError> {
    let chars = value.expose_secret().chars().count();
    if chars > MAX_CLIENT_STATE_CHARS {
        return Err(error(
            key,
            format!("at most {MAX_CLIENT_STATE_CHARS} characters (Graph's limit), got {chars}"),
        ));
    }
    if chars < MIN_CLIENT_STATE_CHARS {
        return Err(error(
            key,
            format!(
                "at least {MIN_CLIENT_STATE_CHARS} characters: it is what tells genuine notifications from forged ones (got {chars})"
            ),
        ));
    }
    Ok(value)
}
