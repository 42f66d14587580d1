//! `[directory]`: the Active Directory domain the shadow accounts live in.

use crate::values::{self, error};
use crate::ConfigError;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use std::path::PathBuf;

/// The validated `[directory]` section. `Debug` never shows the bind password.
#[derive(Debug, Clone)]
pub struct DirectorySection {
    /// `url`, required: `ldaps://host[:port]`, or `ldap://host[:port]`, which is always upgraded
    /// with StartTLS (LDAP is never used unencrypted).
    pub url: String,
    /// `bind_dn`, required: the service account, as a DN or as `user@REALM` / `DOMAIN\user`
    /// (the forms AD accepts in a simple bind).
    pub bind_dn: String,
    /// `bind_password`, environment only (`SHADOWSYNC_DIRECTORY_BIND_PASSWORD`), required.
    pub bind_password: SecretString,
    /// `ca_file`, optional: a PEM file of the CA that issued the DCs' certificates, readable at
    /// start; without it the system's CAs are trusted.
    pub ca_file: Option<PathBuf>,
    /// `guests_ou`, required: the DN of the OU holding enabled shadow accounts.
    pub guests_ou: String,
    /// `disabled_ou`, required: the DN of the OU holding disabled ones; must differ from
    /// `guests_ou`, since the OU an account is in is what says whether it is disabled.
    pub disabled_ou: String,
    /// `base_dn`, optional: the search base for name clashes; default the domain's
    /// `defaultNamingContext` (read from the rootDSE).
    pub base_dn: Option<String>,
    /// `indexed_anchor`, optional: `"auto"` (the default) looks shadow accounts up by
    /// `msDS-ExternalDirectoryObjectId` where the schema has it indexed (Windows Server 2016 and
    /// later) and writes it; `"off"` keeps to `adminDescription` alone.
    pub indexed_anchor: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    url: Option<String>,
    bind_dn: Option<String>,
    #[serde(default, deserialize_with = "values::secret")]
    bind_password: Option<SecretString>,
    ca_file: Option<PathBuf>,
    guests_ou: Option<String>,
    disabled_ou: Option<String>,
    base_dn: Option<String>,
    indexed_anchor: Option<String>,
}

impl DirectorySection {
    /// The one conversion, for the file and the environment alike.
    pub(crate) fn from_table(table: toml::Table) -> Result<Self, ConfigError> {
        let raw: Raw = values::raw("directory", table)?;
        let section = Self {
            url: url(values::required("directory.url", raw.url)?)?,
            bind_dn: bind_dn(values::required("directory.bind_dn", raw.bind_dn)?)?,
            bind_password: bind_password(raw.bind_password)?,
            ca_file: raw
                .ca_file
                .map(|f| values::readable_file("directory.ca_file", &f))
                .transpose()?,
            guests_ou: values::dn(
                "directory.guests_ou",
                values::required("directory.guests_ou", raw.guests_ou)?,
            )?,
            disabled_ou: values::dn(
                "directory.disabled_ou",
                values::required("directory.disabled_ou", raw.disabled_ou)?,
            )?,
            base_dn: raw
                .base_dn
                .map(|dn| values::dn("directory.base_dn", dn))
                .transpose()?,
            indexed_anchor: indexed_anchor(raw.indexed_anchor)?,
        };
        if shadowsync_core::dn::same(&section.guests_ou, &section.disabled_ou) {
            return Err(error("directory.disabled_ou", "must differ from guests_ou"));
        }
        Ok(section)
    }
}

fn indexed_anchor(value: Option<String>) -> Result<bool, ConfigError> {
    match value.as_deref().map(str::trim) {
        None | Some("auto") => Ok(true),
        Some("off") => Ok(false),
        Some(other) => Err(error(
            "directory.indexed_anchor",
            format!("{other:?} must be \"auto\" or \"off\""),
        )),
    }
}

fn bind_password(value: Option<SecretString>) -> Result<SecretString, ConfigError> {
    let value = values::required("directory.bind_password", value)?;
    if value.expose_secret().is_empty() {
        return Err(error("directory.bind_password", "must not be empty"));
    }
    Ok(value)
}

fn url(value: String) -> Result<String, ConfigError> {
    let value = value.trim();
    let host = value
        .strip_prefix("ldaps://")
        .or_else(|| value.strip_prefix("ldap://"))
        .map(|rest| rest.split([':', '/']).next().unwrap_or_default());
    match host {
        Some(host) if !host.is_empty() => Ok(value.to_string()),
        _ => Err(error(
            "directory.url",
            format!("{value:?} must be ldaps://host[:port] (or ldap://, upgraded with StartTLS)"),
        )),
    }
}

fn bind_dn(value: String) -> Result<String, ConfigError> {
    const KEY: &str = "directory.bind_dn";
    let value = values::text(KEY, value)?;
    if value.contains('=') {
        return values::dn(KEY, value);
    }
    // `user@REALM` or `DOMAIN\user`: both halves present.
    let halves = value.split_once('@').or_else(|| value.split_once('\\'));
    match halves {
        Some((a, b)) if !a.is_empty() && !b.is_empty() => Ok(value),
        _ => Err(error(
            KEY,
            format!("{value:?} must be a DN, user@REALM or DOMAIN\\user"),
        )),
    }
}
