//! AD's answers as typed errors that say whether trying again can help.

use ldap3::LdapError;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum DirectoryError {
    /// 68: the DN or sAMAccountName already exists.
    #[error("already exists: {0}")]
    AlreadyExists(String),
    /// 19: e.g. duplicate userPrincipalName, a forbidden character, password policy.
    #[error("constraint violation: {0}")]
    ConstraintViolation(String),
    /// 32: the object or its parent OU is missing.
    #[error("no such object: {0}")]
    NoSuchObject(String),
    /// 34
    #[error("invalid DN syntax: {0}")]
    InvalidDnSyntax(String),
    /// 50: the bind account lacks a permission.
    #[error("insufficient access rights: {0}")]
    InsufficientAccess(String),
    /// 53: e.g. unicodePwd over an unencrypted connection or badly encoded.
    #[error("the directory is unwilling to perform: {0}")]
    UnwillingToPerform(String),
    /// 49
    #[error("invalid credentials for the bind account: {0}")]
    InvalidCredentials(String),
    /// 51, 52: the DC is busy or unavailable right now.
    #[error("directory busy or unavailable (LDAP {rc}): {text}")]
    Busy { rc: u32, text: String },
    #[error("LDAP error {rc}: {text}")]
    Other { rc: u32, text: String },
    #[error("directory server down or connection lost: {0}")]
    ServerDown(String),
    #[error("directory operation timed out")]
    Timeout,
    #[error("TLS: {0}")]
    Tls(String),
    #[error("directory configuration: {0}")]
    Config(String),
    /// Refused before sending anything: shadowsync never writes to objects it does not own.
    #[error("refusing to modify {dn}: not an anchored account inside the managed OUs")]
    NotOwned { dn: String },
    #[error("the plan refers to an account that does not exist")]
    NoAccount,
}

impl DirectoryError {
    /// Can the same operation succeed later without anyone changing anything?
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Self::Busy { .. } | Self::ServerDown(_) | Self::Timeout
        )
    }

    /// The connection is unusable and must be re-opened.
    pub(crate) fn is_connection_lost(&self) -> bool {
        matches!(self, Self::ServerDown(_) | Self::Timeout)
    }
}

impl From<LdapError> for DirectoryError {
    fn from(e: LdapError) -> Self {
        match e {
            LdapError::LdapResult { result } => {
                let text = result.text.clone();
                match result.rc {
                    68 => Self::AlreadyExists(text),
                    19 => Self::ConstraintViolation(text),
                    32 => Self::NoSuchObject(text),
                    34 => Self::InvalidDnSyntax(text),
                    49 => Self::InvalidCredentials(text),
                    50 => Self::InsufficientAccess(text),
                    51 | 52 => Self::Busy {
                        rc: result.rc,
                        text,
                    },
                    53 => Self::UnwillingToPerform(text),
                    // 80 "other" is what Samba and AD answer when a backend is unavailable;
                    // 81 and 85 are client-side "server down" and "timeout".
                    81 => Self::ServerDown(text),
                    85 => Self::Timeout,
                    rc => Self::Other { rc, text },
                }
            }
            LdapError::Timeout { .. } => Self::Timeout,
            LdapError::Rustls { source } => Self::Tls(source.to_string()),
            LdapError::DNSName { source } => Self::Tls(source.to_string()),
            LdapError::UrlParsing { .. } | LdapError::UnknownScheme(_) => {
                Self::Config(e.to_string())
            }
            LdapError::Io { source } if is_tls_failure(&source) => Self::Tls(source.to_string()),
            LdapError::Io { .. }
            | LdapError::OpSend { .. }
            | LdapError::ResultRecv { .. }
            | LdapError::IdScrubSend { .. }
            | LdapError::MiscSend { .. }
            | LdapError::EndOfStream => Self::ServerDown(e.to_string()),
            other => Self::Other {
                rc: 0,
                text: other.to_string(),
            },
        }
    }
}

/// rustls reports certificate failures as I/O errors wrapping a rustls error.
fn is_tls_failure(e: &std::io::Error) -> bool {
    e.get_ref().is_some_and(|inner| inner.is::<rustls::Error>())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ldap(rc: u32) -> DirectoryError {
        LdapError::LdapResult {
            result: ldap3::LdapResult {
                rc,
                matched: String::new(),
                text: "t".into(),
                refs: vec![],
                ctrls: vec![],
            },
        }
        .into()
    }

    #[test]
    fn maps_ad_result_codes() {
        assert!(matches!(ldap(68), DirectoryError::AlreadyExists(_)));
        assert!(matches!(ldap(19), DirectoryError::ConstraintViolation(_)));
        assert!(matches!(ldap(32), DirectoryError::NoSuchObject(_)));
        assert!(matches!(ldap(34), DirectoryError::InvalidDnSyntax(_)));
        assert!(matches!(ldap(50), DirectoryError::InsufficientAccess(_)));
        assert!(matches!(ldap(53), DirectoryError::UnwillingToPerform(_)));
        for rc in [68, 19, 32, 34, 49, 50, 53] {
            assert!(!ldap(rc).is_retryable(), "{rc} must not be retried");
        }
        for rc in [51, 52, 81, 85] {
            assert!(ldap(rc).is_retryable(), "{rc} should be retried");
        }
        assert!(DirectoryError::Timeout.is_retryable());
    }
}
