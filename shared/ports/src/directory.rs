//! Active Directory, as the application needs it.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use shadowsync_core::{ActualAccount, Operation, Policy};
use thiserror::Error;

/// How the directory finds a guest's account by its anchor: by an indexed attribute (AD then
/// reads only the matching objects) or by one it must compare on every user object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnchorLookup {
    /// The attribute searched.
    pub attribute: String,
    pub indexed: bool,
    /// Why this one, in a sentence (what the schema holds, or the configuration).
    pub reason: String,
}

/// Any object found by a uniqueness check: enough to say who holds a name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectoryObject {
    pub dn: String,
    pub object_guid: Option<String>,
    /// The value of the anchor attribute, if the object carries one.
    pub anchor: Option<String>,
}

#[async_trait]
pub trait Directory: Send + Sync {
    /// Every user object in the domain whose anchor attribute equals `anchor` (the caller
    /// decides what to do with ones outside the managed OUs). Where the lookup is indexed, an
    /// object must carry the anchor in the indexed attribute as well to be found.
    async fn find_by_anchor(&self, anchor: &str) -> Result<Vec<ActualAccount>, DirectoryError>;

    /// The object holding `sAMAccountName` (unique in the domain, compared case-insensitively),
    /// whatever its class.
    async fn find_by_sam_account_name(
        &self,
        sam: &str,
    ) -> Result<Option<DirectoryObject>, DirectoryError>;

    /// The object holding `userPrincipalName`.
    async fn find_by_user_principal_name(
        &self,
        upn: &str,
    ) -> Result<Option<DirectoryObject>, DirectoryError>;

    /// The user object at `dn`, or `None` if there is none.
    async fn read_account(&self, dn: &str) -> Result<Option<ActualAccount>, DirectoryError>;

    /// Every user object inside `ou` (subtree), with or without an anchor.
    async fn list_accounts(&self, ou: &str) -> Result<Vec<ActualAccount>, DirectoryError>;

    /// Carries out `plan` on the account it was made for (`None`: no account yet) and returns
    /// where the account is afterwards (`None` once deleted). Must refuse, before writing
    /// anything, an account that [`ensure_owned`] rejects.
    async fn apply(
        &self,
        account: Option<&ActualAccount>,
        plan: &[Operation],
        policy: &Policy,
    ) -> Result<Option<String>, DirectoryError>;

    /// How [`Directory::find_by_anchor`] searches; `None` until the directory was reached.
    fn anchor_lookup(&self) -> Option<AnchorLookup> {
        None
    }

    /// Where the lookup is indexed, gives every account of ours in the managed OUs that lacks
    /// the indexed anchor (made by an older version, or before the schema had it) the anchor
    /// there too, so that the lookup finds it; returns how many. A sweep calls it first.
    async fn stamp_indexed_anchors(&self) -> Result<usize, DirectoryError> {
        Ok(0)
    }
}

/// shadowsync writes only to accounts inside its managed OUs that carry its anchor (a prefix
/// and a GUID). Every [`Directory::apply`] checks this before its first write.
pub fn ensure_owned(account: &ActualAccount, policy: &Policy) -> Result<(), DirectoryError> {
    let anchored = account
        .anchor
        .as_deref()
        .is_some_and(|v| policy.anchor.object_id(v).is_some());
    if anchored && policy.manages(&account.dn) {
        Ok(())
    } else {
        Err(DirectoryError::NotOwned {
            dn: account.dn.clone(),
        })
    }
}

/// AD's answers as typed errors that say whether trying again can help. The LDAP result codes
/// are AD's (and Samba's) for the same cases.
#[derive(Debug, Error)]
pub enum DirectoryError {
    /// 68: the DN or the sAMAccountName already exists.
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
    ServerDown(#[source] crate::BoxError),
    #[error("directory operation timed out")]
    Timeout,
    #[error("TLS: {0}")]
    Tls(#[source] crate::BoxError),
    #[error("directory configuration: {0}")]
    Config(String),
    /// Refused before sending anything: shadowsync never writes to objects it does not own.
    #[error("refusing to modify {dn}: not an anchored account inside the managed OUs")]
    NotOwned { dn: String },
    #[error("the plan refers to an account that does not exist")]
    NoAccount,
}

impl DirectoryError {
    /// Can the same operation succeed later? A refused bind is a fault outside shadowsync (the
    /// password rotated or expired) that someone fixes: the jobs wait for it like for a DC
    /// down, instead of failing for good. A certificate refused is not waited for: it may be
    /// someone in the middle.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Self::Busy { .. } | Self::ServerDown(_) | Self::Timeout | Self::InvalidCredentials(_)
        )
    }

    /// The connection is unusable and must be opened again.
    pub fn is_connection_lost(&self) -> bool {
        matches!(self, Self::ServerDown(_) | Self::Timeout)
    }

    /// A server-down error from a message (for adapters and fakes without an error value).
    pub fn server_down(message: impl Into<String>) -> Self {
        Self::ServerDown(message.into().into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shadowsync_core::{Location, ManagedAttributes, ObjectId};

    #[test]
    fn only_anchored_accounts_in_the_managed_ous_are_ours() {
        let policy = Policy::new("OU=Guests,DC=corp", "OU=Disabled Guests,DC=corp");
        let id = ObjectId::parse("4f8a2c1e-9b3d-4e5f-8a7b-6c5d4e3f2a1b").unwrap();
        let account = |dn: &str, anchor: Option<String>| ActualAccount {
            dn: dn.into(),
            object_guid: None,
            anchor,
            sam_account_name: "x".into(),
            location: Location {
                cn: "x".into(),
                ou: "OU=Guests,DC=corp".into(),
            },
            attributes: ManagedAttributes::default(),
            user_account_control: 0,
        };
        let ours = Some(policy.anchor.value_for(&id));
        assert!(ensure_owned(&account("CN=x,OU=Guests,DC=corp", ours.clone()), &policy).is_ok());
        assert!(ensure_owned(
            &account("CN=x,OU=Disabled Guests,DC=corp", ours.clone()),
            &policy
        )
        .is_ok());
        for (dn, anchor) in [
            ("CN=x,OU=Staff,DC=corp", ours),
            ("CN=x,OU=Guests,DC=corp", None),
            (
                "CN=x,OU=Guests,DC=corp",
                Some("User_alice@contoso.com".into()),
            ),
            ("CN=x,OU=Guests,DC=corp", Some("Employee".into())),
        ] {
            assert!(
                matches!(
                    ensure_owned(&account(dn, anchor.clone()), &policy),
                    Err(DirectoryError::NotOwned { .. })
                ),
                "{dn} {anchor:?}"
            );
        }
    }

    #[test]
    fn retryable_errors() {
        assert!(DirectoryError::Timeout.is_retryable());
        assert!(DirectoryError::server_down("reset").is_retryable());
        assert!(DirectoryError::Busy {
            rc: 51,
            text: String::new()
        }
        .is_retryable());
        assert!(DirectoryError::InvalidCredentials("data 52e".into()).is_retryable());
        assert!(!DirectoryError::AlreadyExists(String::new()).is_retryable());
        assert!(!DirectoryError::NotOwned { dn: String::new() }.is_retryable());
    }
}
