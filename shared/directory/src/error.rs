//! LDAP failures as the port's [`DirectoryError`]: AD's result codes become typed errors that
//! say whether trying again can help.

use ldap3::LdapError;
pub use shadowsync_ports::DirectoryError;

/// An ldap3 failure as a [`DirectoryError`].
pub(crate) fn from_ldap(e: LdapError) -> DirectoryError {
    type Error = DirectoryError;
    match e {
        LdapError::LdapResult { result } => {
            let text = result.text.clone();
            match result.rc {
                68 => Error::AlreadyExists(text),
                19 => Error::ConstraintViolation(text),
                32 => Error::NoSuchObject(text),
                34 => Error::InvalidDnSyntax(text),
                49 => Error::InvalidCredentials(text),
                50 => Error::InsufficientAccess(text),
                51 | 52 => Error::Busy {
                    rc: result.rc,
                    text,
                },
                53 => Error::UnwillingToPerform(text),
                // 80 "other" is what Samba and AD answer when a backend is unavailable;
                // 81 and 85 are client-side "server down" and "timeout".
                81 => Error::server_down(text),
                85 => Error::Timeout,
                rc => Error::Other { rc, text },
            }
        }
        LdapError::Timeout { .. } => Error::Timeout,
        LdapError::Rustls { source } => Error::Tls(Box::new(source)),
        LdapError::DNSName { source } => Error::Tls(Box::new(source)),
        LdapError::UrlParsing { .. } | LdapError::UnknownScheme(_) => Error::Config(e.to_string()),
        LdapError::Io { source } if is_tls_failure(&source) => Error::Tls(Box::new(source)),
        LdapError::Io { .. }
        | LdapError::OpSend { .. }
        | LdapError::ResultRecv { .. }
        | LdapError::IdScrubSend { .. }
        | LdapError::MiscSend { .. }
        | LdapError::EndOfStream => Error::ServerDown(Box::new(e)),
        other => Error::Other {
            rc: 0,
            text: other.to_string(),
        },
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
        from_ldap(LdapError::LdapResult {
            result: ldap3::LdapResult {
                rc,
                matched: String::new(),
                text: "t".into(),
                refs: vec![],
                ctrls: vec![],
            },
        })
    }

    #[test]
    fn maps_ad_result_codes() {
        assert!(matches!(ldap(68), DirectoryError::AlreadyExists(_)));
        assert!(matches!(ldap(19), DirectoryError::ConstraintViolation(_)));
        assert!(matches!(ldap(32), DirectoryError::NoSuchObject(_)));
        assert!(matches!(ldap(34), DirectoryError::InvalidDnSyntax(_)));
        assert!(matches!(ldap(50), DirectoryError::InsufficientAccess(_)));
        assert!(matches!(ldap(53), DirectoryError::UnwillingToPerform(_)));
        for rc in [68, 19, 32, 34, 50, 53] {
            assert!(!ldap(rc).is_retryable(), "{rc} must not be retried");
        }
        // 49: the bind refused (a password rotated) is waited for, like a DC down.
        for rc in [49, 51, 52, 81, 85] {
            assert!(ldap(rc).is_retryable(), "{rc} should be retried");
        }
        assert!(DirectoryError::Timeout.is_retryable());
    }
}
