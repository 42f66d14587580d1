//! `[provisioner]`: how jobs are worked off.

use crate::values::{self, error};
use crate::ConfigError;
use serde::Deserialize;
use std::time::Duration;

const DEFAULT_WORKERS: usize = 4;
/// A backstop, not the bound: retries are bounded by `retry_for`. 100 covers six hours of
/// retries at the backoff's five-minute cap.
const DEFAULT_MAX_ATTEMPTS: u32 = 100;
const DEFAULT_RETRY_FOR: Duration = Duration::from_secs(6 * 3600);
/// SQS keeps a message 14 days at most.
const MAX_RETRY_FOR: Duration = Duration::from_secs(14 * 24 * 3600);

/// The validated `[provisioner]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProvisionerSection {
    /// `workers`, default 4, from 1 to 1024: guests converged at the same time (jobs of one
    /// guest never run concurrently). More would only queue up at the domain controllers.
    pub workers: usize,
    /// `max_attempts`, default 100, from 1 to 1000: a backstop; past it a job is
    /// dead-lettered even within `retry_for`. On AWS, the dead-letter queue's `maxReceiveCount`.
    pub max_attempts: u32,
    /// `retry_for`, default `"6h"`, from 1 minute to 14 days: how long a job that fails
    /// retryably (AD or Graph down, throttling) is retried, from when it was queued, before it
    /// is dead-lettered with its reason.
    pub retry_for: Duration,
}

impl Default for ProvisionerSection {
    fn default() -> Self {
        Self {
            workers: DEFAULT_WORKERS,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            retry_for: DEFAULT_RETRY_FOR,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    workers: Option<toml::Value>,
    max_attempts: Option<toml::Value>,
    retry_for: Option<toml::Value>,
}

impl ProvisionerSection {
    /// The one conversion, for the file and the environment alike.
    pub(crate) fn from_table(table: toml::Table) -> Result<Self, ConfigError> {
        let raw: Raw = values::raw("provisioner", table)?;
        Ok(Self {
            workers: raw
                .workers
                .map(|v| values::whole_in("provisioner.workers", &v, 1, 1024))
                .transpose()?
                .unwrap_or(DEFAULT_WORKERS),
            max_attempts: raw
                .max_attempts
                .map(|v| values::whole_in("provisioner.max_attempts", &v, 1, 1000))
                .transpose()?
                .unwrap_or(DEFAULT_MAX_ATTEMPTS),
            retry_for: match raw.retry_for {
                Some(v) => {
                    let d = values::duration("provisioner.retry_for", &v)?;
                    if d < Duration::from_secs(60) || d > MAX_RETRY_FOR {
                        return Err(error(
                            "provisioner.retry_for",
                            format!(
                                "must be from 1 minute to 14 days (SQS keeps a message 14 days at most), got {}",
                                values::show(d)
                            ),
                        ));
                    }
                    d
                }
                None => DEFAULT_RETRY_FOR,
            },
        })
    }
}
