//! What subscription the keeper maintains.

use chrono::Duration;
use secrecy::{ExposeSecret, SecretString};

use crate::error::KeeperError;

/// Graph's cap on the lifetime of a subscription on `users` (just under 29 days).
pub const MAX_LIFETIME_MINUTES: i64 = 41_760;
/// Default lifetime: below the cap, so that clock skew between us and Graph cannot push a
/// request over it (Graph rejects the whole request then).
pub const DEFAULT_LIFETIME_MINUTES: i64 = 41_000;
/// Default renewal margin: three days leaves room for several failed scheduled runs.
pub const DEFAULT_RENEW_MARGIN_DAYS: i64 = 3;
/// Graph's limit on `clientState`.
pub const MAX_CLIENT_STATE_CHARS: usize = 128;

/// The subscription the keeper keeps. Build with [`KeeperConfig::new`], then adjust fields.
///
/// `Debug` shows the client state as `[REDACTED]` (it is a [`SecretString`]).
#[derive(Debug, Clone)]
pub struct KeeperConfig {
    /// The webhook's URL (Graph validates it with a handshake on creation).
    pub notification_url: String,
    /// Where Graph sends lifecycle events (`reauthorizationRequired`); also validated.
    pub lifecycle_url: String,
    /// Shared secret Graph echoes in every notification; the webhook checks it.
    pub client_state: SecretString,
    /// Default `/users`.
    pub resource: String,
    /// Default `updated,deleted` (the only change types Graph supports on users).
    pub change_type: String,
    /// Requested lifetime on create and renew. Default 41,000 minutes.
    pub lifetime: Duration,
    /// Renew when the subscription expires within this. Default 3 days.
    pub renew_margin: Duration,
}

impl KeeperConfig {
    pub fn new(
        notification_url: impl Into<String>,
        lifecycle_url: impl Into<String>,
        client_state: SecretString,
    ) -> Self {
        KeeperConfig {
            notification_url: notification_url.into(),
            lifecycle_url: lifecycle_url.into(),
            client_state,
            resource: "/users".into(),
            change_type: "updated,deleted".into(),
            lifetime: Duration::minutes(DEFAULT_LIFETIME_MINUTES),
            renew_margin: Duration::days(DEFAULT_RENEW_MARGIN_DAYS),
        }
    }

    /// Rejects configurations Graph would refuse, or that would make the keeper renew on every
    /// run. Messages never contain the client state.
    pub fn validate(&self) -> Result<(), KeeperError> {
        for (what, raw) in [
            ("notification_url", &self.notification_url),
            ("lifecycle_url", &self.lifecycle_url),
        ] {
            let url = url::Url::parse(raw)
                .map_err(|e| KeeperError::Config(format!("{what} {raw:?} is not a URL: {e}")))?;
            if !matches!(url.scheme(), "https" | "http") {
                return Err(KeeperError::Config(format!(
                    "{what} must be an https URL, got {raw:?}"
                )));
            }
        }
        let state = self.client_state.expose_secret();
        if state.is_empty() {
            // Without it the webhook could not tell Graph's notifications from forged ones.
            return Err(KeeperError::Config("client_state is empty".into()));
        }
        if state.chars().count() > MAX_CLIENT_STATE_CHARS {
            return Err(KeeperError::Config(format!(
                "client_state is longer than Graph's limit of {MAX_CLIENT_STATE_CHARS} characters"
            )));
        }
        if self.resource.trim_matches('/').is_empty() {
            return Err(KeeperError::Config("resource is empty".into()));
        }
        if change_types(&self.change_type).is_empty() {
            return Err(KeeperError::Config("change_type is empty".into()));
        }
        if self.lifetime <= Duration::zero()
            || self.lifetime > Duration::minutes(MAX_LIFETIME_MINUTES)
        {
            return Err(KeeperError::Config(format!(
                "lifetime must be between 1 and {MAX_LIFETIME_MINUTES} minutes, got {} minutes",
                self.lifetime.num_minutes()
            )));
        }
        if self.renew_margin < Duration::zero() || self.renew_margin >= self.lifetime {
            return Err(KeeperError::Config(format!(
                "renew_margin ({} minutes) must be at least 0 and shorter than the lifetime ({} minutes)",
                self.renew_margin.num_minutes(),
                self.lifetime.num_minutes()
            )));
        }
        Ok(())
    }
}

/// `"updated, deleted"` → `["deleted", "updated"]`: Graph may reorder or respace the list.
pub(crate) fn change_types(raw: &str) -> Vec<String> {
    let mut v: Vec<String> = raw
        .split(',')
        .map(|s| s.trim().to_ascii_lowercase())
        .filter(|s| !s.is_empty())
        .collect();
    v.sort();
    v.dedup();
    v
}

/// `/users`, `users` and `Users` name the same resource.
pub(crate) fn same_resource(a: &str, b: &str) -> bool {
    a.trim_matches('/')
        .eq_ignore_ascii_case(b.trim_matches('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> KeeperConfig {
        KeeperConfig::new(
            "https://hooks.example.com/notify",
            "https://hooks.example.com/lifecycle",
            SecretString::from("s3cret-client-state"),
        )
    }

    #[test]
    fn defaults_are_valid_and_under_graphs_cap() {
        let c = config();
        c.validate().unwrap();
        assert_eq!(c.resource, "/users");
        assert_eq!(c.change_type, "updated,deleted");
        assert!(c.lifetime < Duration::minutes(MAX_LIFETIME_MINUTES));
        assert_eq!(c.renew_margin, Duration::days(3));
    }

    #[test]
    fn rejects_bad_settings_without_leaking_the_client_state() {
        let mut c = config();
        c.lifetime = Duration::minutes(MAX_LIFETIME_MINUTES + 1);
        assert!(matches!(c.validate(), Err(KeeperError::Config(_))));
        let mut c = config();
        c.renew_margin = c.lifetime;
        assert!(c.validate().is_err());
        let mut c = config();
        c.notification_url = "ftp://x/y".into();
        assert!(c.validate().is_err());
        let mut c = config();
        c.client_state = SecretString::from("");
        assert!(c.validate().is_err());
        let mut c = config();
        c.client_state = SecretString::from("x".repeat(129));
        let e = c.validate().unwrap_err();
        assert!(!e.to_string().contains("xxxx"));
        assert!(!e.is_retryable());
    }

    #[test]
    fn debug_hides_the_client_state() {
        let s = format!("{:?}", config());
        assert!(s.contains("hooks.example.com"));
        assert!(!s.contains("s3cret"), "{s}");
    }

    #[test]
    fn normalises_change_types_and_resources() {
        assert_eq!(
            change_types("updated, deleted,updated"),
            change_types("deleted,updated")
        );
        assert!(same_resource("/users", "Users"));
        assert!(!same_resource("/users", "/users/x"));
    }
}
