//! `[state]`: the embedded store of `serve` and the admin commands.

use crate::values;
use crate::ConfigError;
use serde::Deserialize;
use std::path::PathBuf;

/// The validated `[state]` section. The section is optional as a whole (the connector keeps its
/// state in DynamoDB); when given, `path` is required.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateSection {
    /// `path`: the embedded store's file (state and queue), created when missing.
    pub path: PathBuf,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    path: Option<PathBuf>,
}

impl StateSection {
    /// The one conversion, for the file and the environment alike.
    pub(crate) fn from_table(table: toml::Table) -> Result<Self, ConfigError> {
        let raw: Raw = values::raw("state", table)?;
        Ok(Self {
            path: values::path("state.path", values::required("state.path", raw.path)?)?,
        })
    }
}
