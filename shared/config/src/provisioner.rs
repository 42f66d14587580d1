//! `[provisioner]`: how jobs are worked off.

use crate::values;
use crate::ConfigError;
use serde::Deserialize;

const DEFAULT_WORKERS: usize = 4;
const DEFAULT_MAX_ATTEMPTS: u32 = 8;

/// The validated `[provisioner]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProvisionerSection {
    /// `workers`, default 4, from 1 to 1024: guests converged at the same time (jobs of one
    /// guest never run concurrently). More would only queue up at the domain controllers.
    pub workers: usize,
    /// `max_attempts`, default 8, from 1 to 1000: attempts before a job is dead-lettered with
    /// its reason. On AWS, set it to the dead-letter queue's `maxReceiveCount`.
    pub max_attempts: u32,
}

impl Default for ProvisionerSection {
    fn default() -> Self {
        Self {
            workers: DEFAULT_WORKERS,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    workers: Option<toml::Value>,
    max_attempts: Option<toml::Value>,
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
        })
    }
}
