//! `[policy]`: who gets a shadow account and how long a disabled one is kept.

use crate::directory::DirectorySection;
use crate::values::{self, error};
use crate::ConfigError;
use serde::Deserialize;
use shadowsync_core::policy::DEFAULT_RETENTION;
use shadowsync_core::{ObjectId, Policy};
use std::time::Duration;
use toml::Value;

const DAY: u64 = 24 * 3600;
/// A longer retention is a typo, not a plan, and would overflow date arithmetic downstream;
/// "never" says "for ever".
const MAX_RETENTION: Duration = Duration::from_secs(36_500 * DAY);

/// The validated `[policy]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicySection {
    /// `scope_group_id`, optional: the object ID (a GUID) of a group; only its transitive
    /// members are in scope. Default: every guest.
    pub scope_group_id: Option<ObjectId>,
    /// `require_accepted`, default false: only guests who accepted their invitation are in
    /// scope.
    pub require_accepted: bool,
    /// How long a disabled account is kept before it is deleted; `None` keeps it for ever.
    /// Default 30 days. `retention = "30d"` (a human duration, at most 100 years; `"never"`,
    /// `"0"` or any zero duration keep for ever), or the older `retention_days = 30` (0 = for
    /// ever), which deployed configs and the AWS template use; not both.
    pub retention: Option<Duration>,
}

impl Default for PolicySection {
    fn default() -> Self {
        Self {
            scope_group_id: None,
            require_accepted: false,
            retention: Some(DEFAULT_RETENTION),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    scope_group_id: Option<String>,
    require_accepted: Option<Value>,
    retention: Option<Value>,
    retention_days: Option<Value>,
}

impl PolicySection {
    /// The one conversion, for the file and the environment alike.
    pub(crate) fn from_table(table: toml::Table) -> Result<Self, ConfigError> {
        let raw: Raw = values::raw("policy", table)?;
        let scope_group_id = raw
            .scope_group_id
            .map(|id| {
                ObjectId::parse(id.trim()).map_err(|e| {
                    error(
                        "policy.scope_group_id",
                        format!("must be the group's object ID: {e}"),
                    )
                })
            })
            .transpose()?;
        let require_accepted = raw
            .require_accepted
            .map(|v| values::boolean("policy.require_accepted", &v))
            .transpose()?
            .unwrap_or(false);
        let retention = match (raw.retention, raw.retention_days) {
            (Some(_), Some(_)) => {
                return Err(error(
                    "policy.retention",
                    "give retention or retention_days (its older spelling), not both",
                ))
            }
            (Some(value), None) => retention(&value)?,
            (None, Some(value)) => retention_days(&value)?,
            (None, None) => Some(DEFAULT_RETENTION),
        };
        Ok(Self {
            scope_group_id,
            require_accepted,
            retention,
        })
    }

    /// The core's policy: this section with the OUs of `directory`.
    pub fn policy(&self, directory: &DirectorySection) -> Policy {
        Policy {
            scope_group_id: self.scope_group_id.clone(),
            require_accepted: self.require_accepted,
            retention: self.retention,
            ..Policy::new(&directory.guests_ou, &directory.disabled_ou)
        }
    }
}

/// `retention`: a duration, `"never"`, or zero (`"0"`, `0`, `"0d"`) for ever.
fn retention(value: &Value) -> Result<Option<Duration>, ConfigError> {
    const KEY: &str = "policy.retention";
    let duration = match value {
        Value::String(s) if s.trim().eq_ignore_ascii_case("never") => return Ok(None),
        Value::Integer(0) => Duration::ZERO,
        other => values::duration(KEY, other)?,
    };
    if duration.is_zero() {
        return Ok(None);
    }
    if duration > MAX_RETENTION {
        return Err(error(
            KEY,
            format!(
                "at most 100 years, got {}; write \"never\" to keep disabled accounts for ever",
                values::show(duration)
            ),
        ));
    }
    Ok(Some(duration))
}

/// `retention_days`: whole days, 0 for ever.
fn retention_days(value: &Value) -> Result<Option<Duration>, ConfigError> {
    const KEY: &str = "policy.retention_days";
    let days = values::whole(KEY, value)?;
    if days == 0 {
        return Ok(None);
    }
    let max_days = MAX_RETENTION.as_secs() / DAY;
    if days > max_days {
        return Err(error(
            KEY,
            format!(
                "at most {max_days} (100 years), got {days}; 0 keeps disabled accounts for ever"
            ),
        ));
    }
    Ok(Some(Duration::from_secs(days * DAY)))
}
