//! Where the keys come from: the TOML file and `SHADOWSYNC_<SECTION>_<KEY>` environment
//! variables, merged into one TOML table before any section is converted, so that a key means
//! the same wherever it is written.

use crate::values::error;
use crate::{env_name, ConfigError};
use std::path::Path;

pub(crate) const PREFIX: &str = "SHADOWSYNC_";

/// Every section, in the order they are converted (so the first error reported is stable).
pub(crate) const SECTIONS: [&str; 12] = [
    "graph",
    "webhook",
    "directory",
    "policy",
    "state",
    "provisioner",
    "subscriptions",
    "admin",
    "reconciler",
    "safety",
    "connector",
    "partners",
];

/// `(section, key)` of every secret: read from the environment only, so that a config file can
/// be shared, versioned and backed up without leaking anything.
pub(crate) const SECRETS: [(&str, &str); 4] = [
    ("graph", "client_secret"),
    ("webhook", "client_state"),
    ("webhook", "previous_client_state"),
    ("directory", "bind_password"),
];

pub(crate) fn is_secret(section: &str, key: &str) -> bool {
    SECRETS.contains(&(section, key))
}

pub(crate) fn read_file(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// The file's table: valid TOML, only known sections, each a table, and no secret.
pub(crate) fn file_table(path: &Path, text: &str) -> Result<toml::Table, ConfigError> {
    let table: toml::Table = toml::from_str(text).map_err(|e| ConfigError::Syntax {
        path: path.to_path_buf(),
        message: syntax_message(text, &e),
    })?;
    for (name, value) in &table {
        if !SECTIONS.contains(&name.as_str()) {
            return Err(error(
                name.as_str(),
                format!("unknown section, expected one of {}", SECTIONS.join(", ")),
            ));
        }
        if !value.is_table() {
            return Err(error(name.as_str(), format!("must be a section, [{name}]")));
        }
    }
    for (section, key) in SECRETS {
        if table.get(section).and_then(|s| s.get(key)).is_some() {
            return Err(error(
                format!("{section}.{key}"),
                format!(
                    "secrets are read from the environment only: remove it from the file and set {}",
                    env_name(section, key)
                ),
            ));
        }
    }
    Ok(table)
}

/// Where and what, on one line. Not toml's own rendering: it quotes the line of the file,
/// which could hold a secret.
fn syntax_message(text: &str, e: &toml::de::Error) -> String {
    let what = match e.message().trim() {
        "" => "a value is missing or malformed".to_string(),
        message => message.replace('\n', "; "),
    };
    let Some(before) = e.span().and_then(|span| text.get(..span.start)) else {
        return what;
    };
    let line = before.matches('\n').count() + 1;
    let column = before
        .rsplit('\n')
        .next()
        .unwrap_or_default()
        .chars()
        .count()
        + 1;
    format!("line {line}, column {column}: {what}")
}

/// Puts every `SHADOWSYNC_<SECTION>_<KEY>` variable into `table` as `section.key`, a string,
/// over what the file says. Other `SHADOWSYNC_*` variables (the test harness's, the Lambda
/// host's `SHADOWSYNC_QUEUE_URL`…) are not configuration and are left alone; an unknown key of
/// a known section is not, and the section's conversion reports it.
pub(crate) fn apply_env(
    table: &mut toml::Table,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<(), ConfigError> {
    for (name, value) in env {
        let Some(rest) = name.strip_prefix(PREFIX) else {
            continue;
        };
        let rest = rest.to_lowercase();
        let Some((section, key)) = SECTIONS.iter().find_map(|s| {
            rest.strip_prefix(s)
                .and_then(|r| r.strip_prefix('_'))
                .map(|key| (*s, key))
        }) else {
            continue;
        };
        let entry = table
            .entry(section)
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        let toml::Value::Table(section_table) = entry else {
            return Err(error(section, format!("must be a section, [{section}]")));
        };
        section_table.insert(key.to_string(), toml::Value::String(value));
    }
    Ok(())
}

/// The process environment. `std::env::vars` would panic on a variable that is not UTF-8;
/// such a variable is skipped, unless it is one of ours, which is an error.
pub(crate) fn process_env() -> Result<Vec<(String, String)>, ConfigError> {
    let mut env = Vec::new();
    for (name, value) in std::env::vars_os() {
        let Ok(name) = name.into_string() else {
            continue;
        };
        match value.into_string() {
            Ok(value) => env.push((name, value)),
            Err(_) if name.starts_with(PREFIX) => {
                return Err(error(name, "the environment variable is not valid UTF-8"))
            }
            Err(_) => {}
        }
    }
    Ok(env)
}

/// Removes and returns section `name` of the merged table; `None` when it is absent.
pub(crate) fn take_section(
    table: &mut toml::Table,
    name: &str,
) -> Result<Option<toml::Table>, ConfigError> {
    match table.remove(name) {
        None => Ok(None),
        Some(toml::Value::Table(section)) => Ok(Some(section)),
        Some(_) => Err(error(name, format!("must be a section, [{name}]"))),
    }
}
