//! `[admin]`: where a running `serve` answers the admin commands.

use crate::values;
use crate::ConfigError;
use serde::Deserialize;
use std::net::SocketAddr;

const DEFAULT_LISTEN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 7071);

/// The validated `[admin]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminSection {
    /// `listen`, default `127.0.0.1:7071`, loopback only: the admin API has no authentication
    /// of its own, so only the local host may reach it.
    pub listen: SocketAddr,
}

impl Default for AdminSection {
    fn default() -> Self {
        Self {
            listen: DEFAULT_LISTEN,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    listen: Option<toml::Value>,
}

impl AdminSection {
    /// The one conversion, for the file and the environment alike.
    pub(crate) fn from_table(table: toml::Table) -> Result<Self, ConfigError> {
        let raw: Raw = values::raw("admin", table)?;
        Ok(Self {
            listen: values::loopback(
                "admin.listen",
                raw.listen.as_ref(),
                DEFAULT_LISTEN,
                "the admin API has no authentication of its own",
            )?,
        })
    }
}
