//! `[safety]`: the accidental-change threshold, what stops a fault upstream (a deleted scope
//! group, another tenant, a lost permission) from disabling every shadow account.

use crate::values;
use crate::ConfigError;
use serde::Deserialize;

/// Entra Connect holds an export that deletes more than 500 objects. A guest's account is
/// disabled long before it is deleted, and disabling already locks a partner out, so both are
/// counted, per rolling hour (shadowsync works from events, not exports), at a bound that
/// everyday churn stays well under.
const DEFAULT_MAX_DISABLES_PER_HOUR: u32 = 100;
const DEFAULT_MAX_DELETES_PER_HOUR: u32 = 100;
/// Above this, the threshold would stop nothing a mistake can do to a large tenant in an hour.
const MAX_LIMIT: u64 = 100_000;

/// The validated `[safety]` section.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SafetySection {
    /// `max_disables_per_hour`, default 100, from 0 (hold every disable for approval) to
    /// 100000: disables let through in any rolling hour; the next one trips the threshold.
    pub max_disables_per_hour: u32,
    /// `max_deletes_per_hour`, default 100, from 0 to 100000: the same for deletes.
    pub max_deletes_per_hour: u32,
}

impl Default for SafetySection {
    fn default() -> Self {
        Self {
            max_disables_per_hour: DEFAULT_MAX_DISABLES_PER_HOUR,
            max_deletes_per_hour: DEFAULT_MAX_DELETES_PER_HOUR,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    max_disables_per_hour: Option<toml::Value>,
    max_deletes_per_hour: Option<toml::Value>,
}

impl SafetySection {
    /// The one conversion, for the file and the environment alike.
    pub(crate) fn from_table(table: toml::Table) -> Result<Self, ConfigError> {
        let raw: Raw = values::raw("safety", table)?;
        let limit = |key: &str, value: Option<toml::Value>, default: u32| {
            value
                .map(|v| values::whole_in(key, &v, 0, MAX_LIMIT))
                .transpose()
                .map(|v| v.unwrap_or(default))
        };
        Ok(Self {
            max_disables_per_hour: limit(
                "safety.max_disables_per_hour",
                raw.max_disables_per_hour,
                DEFAULT_MAX_DISABLES_PER_HOUR,
            )?,
            max_deletes_per_hour: limit(
                "safety.max_deletes_per_hour",
                raw.max_deletes_per_hour,
                DEFAULT_MAX_DELETES_PER_HOUR,
            )?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<SafetySection, ConfigError> {
        SafetySection::from_table(toml::from_str(text).unwrap())
    }

    #[test]
    fn defaults_and_limits() {
        assert_eq!(parse("").unwrap(), SafetySection::default());
        let s = parse("max_disables_per_hour = 0\nmax_deletes_per_hour = \"25\"").unwrap();
        assert_eq!((s.max_disables_per_hour, s.max_deletes_per_hour), (0, 25));
        let e = parse("max_deletes_per_hour = 100001")
            .unwrap_err()
            .to_string();
        assert!(e.contains("safety.max_deletes_per_hour"), "{e}");
        let e = parse("max_disables_per_hour = -1").unwrap_err().to_string();
        assert!(e.contains("safety.max_disables_per_hour"), "{e}");
        assert!(parse("max_disable_per_hour = 3").is_err(), "an unknown key");
    }
}
