//! `[connector]`: the on-premises connector's link to the cloud deployment (the stack's outputs).

use crate::values::{self, error};
use crate::ConfigError;
use serde::Deserialize;
use std::net::SocketAddr;
use url::Url;

const DEFAULT_HEALTH_LISTEN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 7072);

/// The validated `[connector]` section, needed by `shadowsync connector` only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectorSection {
    /// `queue_url`, required: the SQS FIFO job queue (stack output `JobQueueUrl`), an http(s)
    /// URL ending in `.fifo`: per-user ordering depends on FIFO.
    pub queue_url: Url,
    /// `dead_letter_queue_url`, required: its FIFO dead-letter queue (`DeadLetterQueueUrl`).
    pub dead_letter_queue_url: Url,
    /// `table_name`, required: the DynamoDB state table (`StateTableName`).
    pub table_name: String,
    /// `region`, optional: the AWS region; default the one in `queue_url` (see
    /// [`ConnectorSection::region`]).
    pub region: Option<String>,
    /// `health_listen`, default `127.0.0.1:7072`, loopback only: `GET /health` for the local
    /// service manager, nobody else.
    pub health_listen: SocketAddr,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    queue_url: Option<String>,
    dead_letter_queue_url: Option<String>,
    table_name: Option<String>,
    region: Option<String>,
    health_listen: Option<toml::Value>,
}

impl ConnectorSection {
    /// The one conversion, for the file and the environment alike.
    pub(crate) fn from_table(table: toml::Table) -> Result<Self, ConfigError> {
        let raw: Raw = values::raw("connector", table)?;
        Ok(Self {
            queue_url: fifo_url(
                "connector.queue_url",
                values::required("connector.queue_url", raw.queue_url)?,
            )?,
            dead_letter_queue_url: fifo_url(
                "connector.dead_letter_queue_url",
                values::required("connector.dead_letter_queue_url", raw.dead_letter_queue_url)?,
            )?,
            table_name: values::text(
                "connector.table_name",
                values::required("connector.table_name", raw.table_name)?,
            )?,
            region: raw.region.map(region).transpose()?,
            health_listen: values::loopback(
                "connector.health_listen",
                raw.health_listen.as_ref(),
                DEFAULT_HEALTH_LISTEN,
                "the health endpoint is for the local service manager",
            )?,
        })
    }

    /// The region: as configured, else the one SQS puts in its queue URLs
    /// (`https://sqs.<region>.amazonaws.com/...`).
    pub fn region(&self) -> Option<String> {
        self.region.clone().or_else(|| {
            let host = self.queue_url.host_str()?;
            let rest = host.strip_prefix("sqs.")?;
            Some(rest.split('.').next()?.to_string())
        })
    }
}

fn fifo_url(key: &str, value: String) -> Result<Url, ConfigError> {
    let url = values::http_url(key, &value)?;
    if !url.path().ends_with(".fifo") {
        return Err(error(
            key,
            format!("{url} is not the URL of an SQS FIFO queue (…/name.fifo)"),
        ));
    }
    Ok(url)
}

/// A region name such as `eu-west-1`: it ends up in endpoint host names.
fn region(value: String) -> Result<String, ConfigError> {
    let value = values::text("connector.region", value)?;
    if !value
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    {
        return Err(error(
            "connector.region",
            format!("{value:?} is not an AWS region like eu-west-1"),
        ));
    }
    Ok(value)
}
