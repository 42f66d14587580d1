//! Parsers shared by the sections. Each takes the full key it parses (`section.key`) so that its
//! error names it, and none can panic, whatever the input.
//!
//! Environment values are always strings, so numbers, booleans and addresses are accepted both
//! as TOML values and as strings: `workers = 4` in the file and `SHADOWSYNC_PROVISIONER_WORKERS=4`
//! mean the same.

use crate::{env_name, ConfigError};
use secrecy::SecretString;
use serde::de::{DeserializeOwned, Deserializer};
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use toml::Value;
use url::Url;

pub(crate) fn error(key: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError::Key {
        key: key.into(),
        reason: reason.into(),
    }
}

/// Deserializes a section's raw struct. A key of the wrong type is reported as `section.key`;
/// an unknown key too (serde's message lists the keys the section has).
pub(crate) fn raw<T: DeserializeOwned>(
    section: &str,
    table: toml::Table,
) -> Result<T, ConfigError> {
    serde_path_to_error::deserialize(Value::Table(table)).map_err(|e| {
        let path = e.path().to_string();
        let key = if path == "." {
            section.to_string()
        } else {
            format!("{section}.{path}")
        };
        // The message alone: toml's rendering adds the key, which is in `key` already.
        error(key, e.into_inner().message().trim())
    })
}

/// For `#[serde(deserialize_with)]` on a secret: wrapped at once, so that no `String` copy of it
/// is left in a struct that `Debug` could print.
pub(crate) fn secret<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SecretString>, D::Error> {
    Ok(Option::<String>::deserialize(d)?.map(SecretString::from))
}

/// A key the section cannot do without; the error says where to set it.
pub(crate) fn required<T>(key: &str, value: Option<T>) -> Result<T, ConfigError> {
    value.ok_or_else(|| {
        let (section, name) = key.split_once('.').unwrap_or((key, ""));
        error(
            key,
            format!(
                "required: set {name} in [{section}] or {}",
                env_name(section, name)
            ),
        )
    })
}

/// A text value, trimmed (environment values often carry a stray space or newline), not empty.
pub(crate) fn text(key: &str, value: String) -> Result<String, ConfigError> {
    let trimmed = value.trim();
    if trimmed.is_empty() {
        return Err(error(key, "must not be empty"));
    }
    Ok(trimmed.to_string())
}

/// A path, not empty.
pub(crate) fn path(key: &str, value: PathBuf) -> Result<PathBuf, ConfigError> {
    if value.as_os_str().is_empty() {
        return Err(error(key, "must not be empty"));
    }
    Ok(value)
}

/// A file that exists and can be opened now: better refused at start than at the first use.
pub(crate) fn readable_file(key: &str, value: &Path) -> Result<PathBuf, ConfigError> {
    let path = path(key, value.to_path_buf())?;
    let fail = |reason: String| {
        error(
            key,
            format!("{} is not a readable file: {reason}", path.display()),
        )
    };
    match std::fs::metadata(&path) {
        Ok(meta) if meta.is_file() => {}
        Ok(_) => return Err(fail("not a regular file".into())),
        Err(e) => return Err(fail(e.to_string())),
    }
    std::fs::File::open(&path).map_err(|e| fail(e.to_string()))?;
    Ok(path)
}

/// How a value appears in an error: strings quoted, other TOML values as written.
pub(crate) fn shown(value: &Value) -> String {
    match value {
        Value::String(s) => format!("{s:?}"),
        other => other.to_string(),
    }
}

/// A human duration ("90s", "15m", "1h 30m", "1day", "30d"). Nothing else: a bare number would
/// leave its unit to guesswork.
pub(crate) fn duration(key: &str, value: &Value) -> Result<Duration, ConfigError> {
    let Value::String(text) = value else {
        return Err(error(
            key,
            format!(
                "{} is not a duration: write one in quotes, like \"15m\" or \"1h\"",
                shown(value)
            ),
        ));
    };
    humantime::parse_duration(text.trim()).map_err(|e| {
        error(
            key,
            format!("{text:?} is not a duration like \"15m\" or \"1h\": {e}"),
        )
    })
}

/// A duration as people read it, for error messages.
pub(crate) fn show(duration: Duration) -> String {
    humantime::format_duration(duration).to_string()
}

/// A whole number, 0 or more.
pub(crate) fn whole(key: &str, value: &Value) -> Result<u64, ConfigError> {
    let parsed = match value {
        Value::Integer(n) => u64::try_from(*n).ok(),
        Value::String(s) => s.trim().parse::<u64>().ok(),
        _ => None,
    };
    parsed.ok_or_else(|| {
        error(
            key,
            format!(
                "must be a whole number (0 or more, at most {}), got {}",
                u64::MAX,
                shown(value)
            ),
        )
    })
}

/// A whole number within `min..=max`, converted to the type the field has.
pub(crate) fn whole_in<T: TryFrom<u64>>(
    key: &str,
    value: &Value,
    min: u64,
    max: u64,
) -> Result<T, ConfigError> {
    let out_of_range = || {
        error(
            key,
            format!(
                "must be a whole number from {min} to {max}, got {}",
                shown(value)
            ),
        )
    };
    let n = whole(key, value).map_err(|_| out_of_range())?;
    if !(min..=max).contains(&n) {
        return Err(out_of_range());
    }
    T::try_from(n).map_err(|_| out_of_range())
}

/// A finite number, fractions allowed.
pub(crate) fn number(key: &str, value: &Value) -> Result<f64, ConfigError> {
    let parsed = match value {
        Value::Float(f) => Some(*f),
        Value::Integer(n) => Some(*n as f64),
        Value::String(s) => s.trim().parse::<f64>().ok(),
        _ => None,
    };
    match parsed {
        Some(n) if n.is_finite() => Ok(n),
        _ => Err(error(
            key,
            format!("must be a finite number, got {}", shown(value)),
        )),
    }
}

/// `true` or `false` (any case, as CloudFormation parameters are sometimes written).
pub(crate) fn boolean(key: &str, value: &Value) -> Result<bool, ConfigError> {
    match value {
        Value::Boolean(b) => Ok(*b),
        Value::String(s) if s.trim().eq_ignore_ascii_case("true") => Ok(true),
        Value::String(s) if s.trim().eq_ignore_ascii_case("false") => Ok(false),
        other => Err(error(
            key,
            format!("must be true or false, got {}", shown(other)),
        )),
    }
}

/// An `ip:port` socket address; `default` when the key is absent.
pub(crate) fn socket_addr(
    key: &str,
    value: Option<&Value>,
    default: SocketAddr,
) -> Result<SocketAddr, ConfigError> {
    let Some(value) = value else {
        return Ok(default);
    };
    let bad = || {
        error(
            key,
            format!("{} is not an address like {default}", shown(value)),
        )
    };
    match value {
        Value::String(s) => s.trim().parse().map_err(|_| bad()),
        _ => Err(bad()),
    }
}

/// A socket address on the loopback interface; `why` says what would be exposed otherwise.
pub(crate) fn loopback(
    key: &str,
    value: Option<&Value>,
    default: SocketAddr,
    why: &str,
) -> Result<SocketAddr, ConfigError> {
    let addr = socket_addr(key, value, default)?;
    if !addr.ip().is_loopback() {
        return Err(error(
            key,
            format!("{addr} must be a loopback address: {why}"),
        ));
    }
    Ok(addr)
}

/// A distinguished name that parses (RFC 4514) and is not empty.
pub(crate) fn dn(key: &str, value: String) -> Result<String, ConfigError> {
    let value = text(key, value)?;
    match shadowsync_core::dn::parse(&value) {
        Ok(rdns) if !rdns.is_empty() => Ok(value),
        Ok(_) => Err(error(key, "must not be empty")),
        Err(e) => Err(error(key, e.to_string())),
    }
}

/// An http(s) URL with a host and no query or fragment: a base that paths are appended to.
pub(crate) fn http_url(key: &str, value: &str) -> Result<Url, ConfigError> {
    let value = value.trim();
    let url = Url::parse(value).map_err(|e| error(key, format!("{value:?} is not a URL: {e}")))?;
    if !matches!(url.scheme(), "https" | "http") || url.host_str().is_none_or(str::is_empty) {
        return Err(error(
            key,
            format!("{url} is not an http(s) URL with a host"),
        ));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(error(
            key,
            format!("{url} must not have a query or a fragment"),
        ));
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key_of(result: Result<impl std::fmt::Debug, ConfigError>) -> (String, String) {
        match result {
            Err(ConfigError::Key { key, reason }) => (key, reason),
            other => panic!("expected a key error, got {other:?}"),
        }
    }

    #[test]
    fn durations_are_human_and_only_human() {
        let s = |t: &str| Value::String(t.into());
        assert_eq!(duration("a.b", &s("90s")).unwrap(), Duration::from_secs(90));
        assert_eq!(
            duration("a.b", &s(" 1h 30m ")).unwrap(),
            Duration::from_secs(5400)
        );
        assert_eq!(
            duration("a.b", &s("1day")).unwrap(),
            Duration::from_secs(86400)
        );
        let (key, reason) = key_of(duration("a.b", &s("often")));
        assert_eq!(key, "a.b");
        assert!(
            reason.starts_with(r#""often" is not a duration like "15m" or "1h""#),
            "{reason}"
        );
        let (_, reason) = key_of(duration("a.b", &Value::Integer(15)));
        assert!(reason.contains("in quotes"), "{reason}");
        // humantime refuses what does not fit rather than wrapping.
        key_of(duration("a.b", &s("99999999999999999999y")));
    }

    #[test]
    fn numbers_take_strings_and_refuse_what_does_not_fit() {
        assert_eq!(
            whole("a.b", &Value::String(" 18446744073709551615".into())).unwrap(),
            u64::MAX
        );
        key_of(whole("a.b", &Value::String("18446744073709551616".into())));
        key_of(whole("a.b", &Value::Integer(-1)));
        key_of(whole("a.b", &Value::Float(1.5)));
        assert_eq!(
            whole_in::<u32>("a.b", &Value::Integer(7), 1, 10).unwrap(),
            7
        );
        let (_, reason) = key_of(whole_in::<u32>("a.b", &Value::Integer(11), 1, 10));
        assert_eq!(reason, "must be a whole number from 1 to 10, got 11");
        assert_eq!(number("a.b", &Value::String("0.02".into())).unwrap(), 0.02);
        for bad in [
            Value::Float(f64::NAN),
            Value::Float(f64::INFINITY),
            Value::String("NaN".into()),
            Value::String("inf".into()),
            Value::Boolean(true),
        ] {
            key_of(number("a.b", &bad));
        }
        assert!(boolean("a.b", &Value::String("TRUE".into())).unwrap());
        assert!(!boolean("a.b", &Value::Boolean(false)).unwrap());
        key_of(boolean("a.b", &Value::String("yes".into())));
    }

    #[test]
    fn addresses_urls_and_dns() {
        let default: SocketAddr = ([127, 0, 0, 1], 1).into();
        assert_eq!(socket_addr("a.b", None, default).unwrap(), default);
        assert_eq!(
            socket_addr("a.b", Some(&Value::String("[::1]:80".into())), default)
                .unwrap()
                .to_string(),
            "[::1]:80"
        );
        let (_, reason) = key_of(loopback(
            "a.b",
            Some(&Value::String("0.0.0.0:80".into())),
            default,
            "why",
        ));
        assert_eq!(reason, "0.0.0.0:80 must be a loopback address: why");
        for bad in [
            "ftp://x",
            "mailto:a@b",
            "https://x/?a=b",
            "https://x/#f",
            "x",
        ] {
            key_of(http_url("a.b", bad));
        }
        assert!(http_url("a.b", "http://127.0.0.1:9/sim/").is_ok());
        assert_eq!(dn("a.b", " OU=G,DC=x ".into()).unwrap(), "OU=G,DC=x");
        key_of(dn("a.b", "OU=G,,DC=x".into()));
        key_of(dn("a.b", "  ".into()));
    }
}
