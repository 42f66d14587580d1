//! `[reconciler]`: the delta rounds and sweeps that correct whatever notifications missed.

use crate::values::{self, error};
use crate::ConfigError;
use serde::Deserialize;
use std::time::Duration;

const DAY: u64 = 24 * 3600;
const DEFAULT_INTERVAL: Duration = Duration::from_secs(15 * 60);
const DEFAULT_SWEEP_INTERVAL: Duration = Duration::from_secs(DAY);
/// Graph's delta tokens expire after 7 days: rounds further apart would all be full ones.
const DELTA_TOKEN_LIFETIME: Duration = Duration::from_secs(7 * DAY);
/// A sweep is what deletes accounts past their retention; a year between two is no schedule.
const MAX_SWEEP_INTERVAL: Duration = Duration::from_secs(365 * DAY);

/// The validated `[reconciler]` section.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReconcilerSection {
    /// `interval`, default `"15m"`: how often a delta round runs. More than 0 and shorter than
    /// 7 days, since Graph's delta tokens expire after 7 days and every round would then be a
    /// full enumeration of the tenant.
    pub interval: Duration,
    /// `sweep_interval`, default `"1d"`: how often every account in the managed OUs is checked
    /// (orphans, retention, scope group). More than 0 and at most 365 days.
    pub sweep_interval: Duration,
}

impl Default for ReconcilerSection {
    fn default() -> Self {
        Self {
            interval: DEFAULT_INTERVAL,
            sweep_interval: DEFAULT_SWEEP_INTERVAL,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    interval: Option<toml::Value>,
    sweep_interval: Option<toml::Value>,
}

impl ReconcilerSection {
    /// The one conversion, for the file and the environment alike.
    pub(crate) fn from_table(table: toml::Table) -> Result<Self, ConfigError> {
        let raw: Raw = values::raw("reconciler", table)?;
        let interval = match raw.interval {
            Some(v) => values::duration("reconciler.interval", &v)?,
            None => DEFAULT_INTERVAL,
        };
        if interval.is_zero() || interval >= DELTA_TOKEN_LIFETIME {
            return Err(error(
                "reconciler.interval",
                format!(
                    "must be more than 0 and shorter than 7 days (Graph's delta tokens expire after 7 days), got {}",
                    values::show(interval)
                ),
            ));
        }
        let sweep_interval = match raw.sweep_interval {
            Some(v) => values::duration("reconciler.sweep_interval", &v)?,
            None => DEFAULT_SWEEP_INTERVAL,
        };
        if sweep_interval.is_zero() || sweep_interval > MAX_SWEEP_INTERVAL {
            return Err(error(
                "reconciler.sweep_interval",
                format!(
                    "must be more than 0 and at most 365 days, got {}",
                    values::show(sweep_interval)
                ),
            ));
        }
        Ok(Self {
            interval,
            sweep_interval,
        })
    }
}
