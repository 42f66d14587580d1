//! `[subscriptions]`: when the subscription keeper renews Graph's `/users` subscription.

use crate::values::{self, error};
use crate::ConfigError;
use serde::Deserialize;
use std::time::Duration;
use toml::Value;

const MINUTE: u64 = 60;
const HOUR: u64 = 3600;

/// Graph's maximum lifetime of a subscription on users: 41,760 minutes, just under 29 days.
pub const MAX_SUBSCRIPTION_LIFETIME: Duration = Duration::from_secs(41_760 * MINUTE);
/// The lifetime the keeper requests: below Graph's maximum, so that clock skew between us and
/// Graph cannot push a request over it (Graph would reject it whole).
pub const SUBSCRIPTION_LIFETIME: Duration = Duration::from_secs(41_000 * MINUTE);

const DEFAULT_RENEW_MARGIN: Duration = Duration::from_secs(72 * HOUR);
const DEFAULT_CHECK_INTERVAL: Duration = Duration::from_secs(HOUR);
const MIN_RENEW_MARGIN: Duration = Duration::from_secs(MINUTE);

/// The validated `[subscriptions]` section.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubscriptionsSection {
    /// Renew the subscription when less than this is left. Default 72 hours, which leaves room
    /// for several failed checks. At least 1 minute and shorter than [`SUBSCRIPTION_LIFETIME`]
    /// (a longer margin would renew at every check). `renew_margin = "72h"`, or the older
    /// `renew_margin_hours = 72` (whole hours); not both.
    pub renew_margin: Duration,
    /// How often the subscription is checked (created, renewed, recreated). Default 1 hour.
    /// More than 0 and shorter than `renew_margin`, or the subscription could expire between two
    /// checks. `check_interval = "1h"`, or the older `check_interval_minutes = 60` (fractions
    /// allowed); not both.
    pub check_interval: Duration,
}

impl Default for SubscriptionsSection {
    fn default() -> Self {
        Self {
            renew_margin: DEFAULT_RENEW_MARGIN,
            check_interval: DEFAULT_CHECK_INTERVAL,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    renew_margin: Option<Value>,
    renew_margin_hours: Option<Value>,
    check_interval: Option<Value>,
    check_interval_minutes: Option<Value>,
}

impl SubscriptionsSection {
    /// The one conversion, for the file and the environment alike. Range errors name the key
    /// the user wrote, whichever spelling it was.
    pub(crate) fn from_table(table: toml::Table) -> Result<Self, ConfigError> {
        let raw: Raw = values::raw("subscriptions", table)?;

        let (margin_key, renew_margin) = match (raw.renew_margin, raw.renew_margin_hours) {
            (Some(_), Some(_)) => return Err(both("renew_margin", "renew_margin_hours")),
            (Some(v), None) => {
                let key = "subscriptions.renew_margin";
                (key, values::duration(key, &v)?)
            }
            (None, Some(v)) => {
                let key = "subscriptions.renew_margin_hours";
                (key, hours(key, &v)?)
            }
            (None, None) => ("subscriptions.renew_margin", DEFAULT_RENEW_MARGIN),
        };
        if renew_margin < MIN_RENEW_MARGIN || renew_margin >= SUBSCRIPTION_LIFETIME {
            return Err(error(
                margin_key,
                format!(
                    "must be at least 1m and shorter than the subscription's lifetime ({}), got {}",
                    values::show(SUBSCRIPTION_LIFETIME),
                    values::show(renew_margin)
                ),
            ));
        }

        let (interval_key, check_interval) = match (raw.check_interval, raw.check_interval_minutes)
        {
            (Some(_), Some(_)) => return Err(both("check_interval", "check_interval_minutes")),
            (Some(v), None) => {
                let key = "subscriptions.check_interval";
                (key, values::duration(key, &v)?)
            }
            (None, Some(v)) => {
                let key = "subscriptions.check_interval_minutes";
                (key, minutes(key, &v)?)
            }
            (None, None) => ("subscriptions.check_interval", DEFAULT_CHECK_INTERVAL),
        };
        if check_interval.is_zero() {
            return Err(error(interval_key, "must be more than 0"));
        }
        if check_interval >= renew_margin {
            return Err(error(
                interval_key,
                format!(
                    "must be shorter than the renew margin ({}), or the subscription could expire between two checks; got {}",
                    values::show(renew_margin),
                    values::show(check_interval)
                ),
            ));
        }
        Ok(Self {
            renew_margin,
            check_interval,
        })
    }
}

fn both(key: &str, legacy: &str) -> ConfigError {
    error(
        format!("subscriptions.{key}"),
        format!("give {key} or {legacy} (its older spelling), not both"),
    )
}

/// Whole hours; a number too large for a duration is an error, not an overflow.
fn hours(key: &str, value: &Value) -> Result<Duration, ConfigError> {
    let n = values::whole(key, value)?;
    n.checked_mul(HOUR).map(Duration::from_secs).ok_or_else(|| {
        error(
            key,
            format!(
                "must be shorter than the subscription's lifetime ({}), got {n} hours",
                values::show(SUBSCRIPTION_LIFETIME)
            ),
        )
    })
}

/// Minutes, fractions allowed; negative or too large for a duration is an error.
fn minutes(key: &str, value: &Value) -> Result<Duration, ConfigError> {
    let n = values::number(key, value)?;
    Duration::try_from_secs_f64(n * 60.0).map_err(|_| {
        error(
            key,
            format!(
                "must be more than 0 and shorter than the renew margin, got {} minutes",
                values::shown(value)
            ),
        )
    })
}
