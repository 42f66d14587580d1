//! Active Directory as the partner direction needs it: partner accounts read by `objectGUID` or
//! by the name an administrator types, the accounts (and tombstones) changed since a watermark,
//! and AD's change notifications as the hint to look now.
//!
//! Change detection is `uSNChanged` rounds (design notes §9): USNs are per domain controller,
//! so every round reports the DC's `invocationId` next to its `highestCommittedUSN`, and a
//! caller that sees another `invocationId` than the one its watermark came from starts over
//! from 0.

use crate::DirectoryError;
use async_trait::async_trait;
use shadowsync_core::partner::{ObjectGuid, PartnerAccount, PartnerAttribute};

#[async_trait]
pub trait PartnerDirectory: Send + Sync {
    /// The user account with this `objectGUID`, wherever it is in the domain, or its tombstone
    /// when it was deleted and the tombstone still exists (`deleted: true`, `dn` where it was:
    /// `CN=<its name>,<lastKnownParent>`, or the tombstone's own DN when AD kept no
    /// `lastKnownParent`); `None` when neither exists.
    ///
    /// `matches_filter` says whether the live account matches
    /// `(&(objectCategory=person)(objectClass=user)<filter>)`; with no filter it is `true`. A
    /// tombstone matches no filter (it has lost `objectCategory` and most attributes): `true`
    /// only when there is no filter.
    async fn partner_account(
        &self,
        guid: &ObjectGuid,
        filter: Option<&str>,
        attributes: &[PartnerAttribute],
    ) -> Result<Option<PartnerAccount>, DirectoryError>;

    /// The live user accounts whose `sAMAccountName`, `userPrincipalName` or `mail` is `name`
    /// (what an administrator types), anywhere in the domain, with `matches_filter` set.
    async fn partner_accounts_named(
        &self,
        name: &str,
        filter: Option<&str>,
        attributes: &[PartnerAttribute],
    ) -> Result<Vec<PartnerAccount>, DirectoryError>;

    /// Runs AD's change notification searches (`LDAP_SERVER_NOTIFICATION_OID`, one level) on
    /// `ous`, calling `changed` each time the DC reports that an object under one changed,
    /// until they fail (a dropped connection, a DC refusing the control): then the error. A
    /// hint only, to run the next watermark round at once: what changed is read by
    /// [`PartnerDirectory::changed_accounts`].
    async fn watch_changes(
        &self,
        ous: &[String],
        changed: &(dyn Fn() + Send + Sync),
    ) -> Result<(), DirectoryError>;

    /// Every user account of the domain (`objectCategory=person`, `objectClass=user`, wherever
    /// it is) and every user tombstone (`deleted: true`, placed as in
    /// [`PartnerDirectory::partner_account`]) whose `uSNChanged` is greater than `after_usn`,
    /// with `matches_filter` set from `filter`.
    ///
    /// This is how a change anywhere is seen: an account moved out of a partner OU is no longer
    /// under it, and only a domain-wide search by the indexed `uSNChanged` finds it. The caller
    /// keeps the accounts that are partners or were (its state knows those).
    async fn changed_accounts(
        &self,
        filter: Option<&str>,
        attributes: &[PartnerAttribute],
        after_usn: u64,
    ) -> Result<PartnerChanges, DirectoryError>;
}

/// One round of [`PartnerDirectory::changed_accounts`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PartnerChanges {
    pub accounts: Vec<PartnerAccount>,
    /// The DC's `highestCommittedUSN` before the search: the next watermark.
    pub highest_usn: u64,
    /// The DC's `invocationId` (a GUID, hyphenated): a watermark is only meaningful for the
    /// `invocationId` it was read with.
    pub invocation_id: String,
}
