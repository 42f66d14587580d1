//! [`PartnerDirectory`] for [`FakeDirectory`]: partner accounts in memory, with what the
//! partner direction relies on in AD: every change raises a domain-wide USN (one DC, one
//! `invocationId` until a test changes it), a delete leaves a tombstone (found by GUID and by
//! `lastKnownParent`, stripped of everything but `sAMAccountName` and `userAccountControl`, as
//! AD without the recycle bin does) until [`FakeDirectory::purge_partner_tombstone`], and the
//! OU search is one level.
//!
//! Limits, on purpose:
//! - Filters: `(attr=value)` (attribute names and values compared case-insensitively),
//!   `(attr=*)`, and `(&…)` of those. Anything else is an error (`Other`, rc 87, AD's
//!   filterError), so a test cannot silently rely on what the fake does not do.
//! - Partner accounts are kept apart from the shadow-account objects of [`Directory`]: the two
//!   directions work in different OUs, and neither port sees the other's accounts. Their OU
//!   must still exist (made with [`FakeDirectory::add_ou`]).
//! - Reads count as [`DirOp::Read`] (faults and hooks included); writes made by the test's
//!   helpers here are someone else's (an administrator's) and count as nothing.
//!
//! [`Directory`]: shadowsync_ports::Directory

use crate::directory::{DirOp, FakeDirectory, ObjectClass};
use crate::faults::lock;
use async_trait::async_trait;
use shadowsync_core::account::uac;
use shadowsync_core::dn;
use shadowsync_core::partner::{ObjectGuid, PartnerAccount, PartnerAttribute};
use shadowsync_ports::partners::{PartnerChanges, PartnerDirectory};
use shadowsync_ports::DirectoryError;
use std::collections::BTreeMap;

/// The fake DC's first `invocationId`.
pub const INVOCATION_ID: &str = "00000dc1-0000-4000-8000-000000000001";

#[derive(Debug, Clone)]
struct Stored {
    guid: ObjectGuid,
    dn: String,
    sam: String,
    /// Lower-case AD attribute name → value (`mail`, `userprincipalname`, `displayname`,
    /// `extensionattribute1`…).
    values: BTreeMap<String, String>,
    user_account_control: u32,
    usn_changed: u64,
    deleted: bool,
    last_known_parent: Option<String>,
}

/// The partner accounts of a [`FakeDirectory`].
#[derive(Debug, Default)]
pub(crate) struct Partners {
    accounts: Vec<Stored>,
    usn: u64,
    invocation_id: Option<String>,
    guids: u64,
    /// Signalled at every change: the fake's change notifications.
    changes: std::sync::Arc<tokio::sync::Notify>,
}

impl Partners {
    fn next_usn(&mut self) -> u64 {
        self.usn += 1;
        self.changes.notify_one();
        self.usn
    }

    fn invocation_id(&self) -> String {
        self.invocation_id
            .clone()
            .unwrap_or_else(|| INVOCATION_ID.to_string())
    }

    fn find_mut(&mut self, guid: &ObjectGuid) -> Result<&mut Stored, DirectoryError> {
        self.accounts
            .iter_mut()
            .find(|a| a.guid == *guid && !a.deleted)
            .ok_or_else(|| no_such_object(&guid.to_string()))
    }

    /// Changes a live account and raises its uSNChanged.
    fn change(
        &mut self,
        guid: &ObjectGuid,
        f: impl FnOnce(&mut Stored) -> Result<(), DirectoryError>,
    ) -> Result<(), DirectoryError> {
        let usn = self.usn + 1;
        let account = self.find_mut(guid)?;
        f(account)?;
        account.usn_changed = usn;
        self.usn = usn;
        self.changes.notify_one();
        Ok(())
    }
}

fn no_such_object(what: &str) -> DirectoryError {
    DirectoryError::NoSuchObject(format!(
        "0000208D: NameErr: problem 2001 (NO_OBJECT), best match of: {what}"
    ))
}

fn filter_error(filter: &str) -> DirectoryError {
    DirectoryError::Other {
        rc: 87,
        text: format!(
            "FakeDirectory supports (attr=value), (attr=*) and (&…) of them, not {filter:?}"
        ),
    }
}

/// One term of a supported filter: attribute (lower-case) and value (`None`: presence).
type Term = (String, Option<String>);

fn parse_filter(filter: &str) -> Result<Vec<Term>, DirectoryError> {
    let f = filter.trim();
    if f.is_empty() {
        return Ok(vec![]);
    }
    let f = if f.starts_with('(') {
        f.to_string()
    } else {
        format!("({f})")
    };
    let inner = f
        .strip_prefix('(')
        .and_then(|s| s.strip_suffix(')'))
        .ok_or_else(|| filter_error(filter))?;
    let terms: Vec<&str> = match inner.strip_prefix('&') {
        Some(rest) => {
            let rest = rest.trim();
            let parts: Vec<&str> = rest
                .strip_prefix('(')
                .and_then(|s| s.strip_suffix(')'))
                .ok_or_else(|| filter_error(filter))?
                .split(")(")
                .collect();
            parts
        }
        None => vec![inner],
    };
    terms
        .into_iter()
        .map(|t| {
            let (attr, value) = t.split_once('=').ok_or_else(|| filter_error(filter))?;
            let attr = attr.trim();
            let bad = |c: char| "()&|!<>~\\".contains(c);
            if attr.is_empty() || attr.contains(bad) || value.contains(bad) {
                return Err(filter_error(filter));
            }
            let value = match value {
                "*" => None,
                v if v.contains('*') => return Err(filter_error(filter)),
                v => Some(v.to_lowercase()),
            };
            Ok((attr.to_lowercase(), value))
        })
        .collect()
}

impl Stored {
    fn value(&self, attribute: &str) -> Option<String> {
        match attribute.to_lowercase().as_str() {
            "samaccountname" => Some(self.sam.clone()),
            "useraccountcontrol" => Some(self.user_account_control.to_string()),
            a => self.values.get(a).cloned(),
        }
    }

    fn matches(&self, terms: &[Term]) -> bool {
        !self.deleted
            && terms
                .iter()
                .all(|(attr, want)| match (self.value(attr), want) {
                    (None, _) => false,
                    (Some(_), None) => true,
                    (Some(v), Some(want)) => v.to_lowercase() == *want,
                })
    }

    fn account(&self, attributes: &[PartnerAttribute], terms: &[Term]) -> PartnerAccount {
        let dn = match (&self.last_known_parent, self.deleted) {
            (Some(parent), true) => dn::first_value(&self.dn)
                .map(|cn| {
                    let cn = cn.split_once("\nDEL:").map_or(cn.as_str(), |(n, _)| n);
                    dn::child("CN", cn, parent)
                })
                .unwrap_or_else(|_| self.dn.clone()),
            _ => self.dn.clone(),
        };
        PartnerAccount {
            guid: self.guid,
            dn,
            sam_account_name: self.sam.clone(),
            user_principal_name: self.value("userPrincipalName"),
            mail: self.value("mail"),
            attributes: attributes
                .iter()
                .map(|a| (*a, self.value(a.ad_name())))
                .collect(),
            enabled: !self.deleted && self.user_account_control & uac::ACCOUNTDISABLE == 0,
            matches_filter: terms.is_empty() || self.matches(terms),
            deleted: self.deleted,
        }
    }
}

impl FakeDirectory {
    /// Adds an enabled partner account `CN=<cn>,<ou>` with these attribute values (AD names:
    /// `mail`, `userPrincipalName`, `displayName`, `extensionAttribute1`…; a
    /// `userAccountControl` among them sets it) and returns its new `objectGUID`. `ou` must
    /// exist; the DN and sAMAccountName must be free among partner accounts.
    pub fn add_partner(
        &self,
        ou: &str,
        cn: &str,
        sam: &str,
        values: &[(&str, &str)],
    ) -> Result<ObjectGuid, DirectoryError> {
        let ou_exists = self.objects().iter().any(|o| {
            matches!(
                o.class,
                ObjectClass::OrganizationalUnit | ObjectClass::Domain
            ) && dn::same(&o.dn, ou)
        });
        if !ou_exists {
            return Err(no_such_object(ou));
        }
        let dn = dn::child("CN", cn, ou);
        let mut s = lock(&self.state);
        let p = &mut s.partners;
        if p.accounts
            .iter()
            .any(|a| !a.deleted && dn::same(&a.dn, &dn))
        {
            return Err(DirectoryError::AlreadyExists(format!(
                "00002071: UpdErr: problem 6005 (ENTRY_EXISTS): {dn}"
            )));
        }
        if p.accounts.iter().any(|a| a.sam.eq_ignore_ascii_case(sam)) {
            return Err(DirectoryError::AlreadyExists(format!(
                "sAMAccountName {sam} is already in use"
            )));
        }
        let mut account = Stored {
            guid: {
                p.guids += 1;
                format!("0000ba00-0000-4000-8000-{:012x}", p.guids)
                    .parse()
                    .expect("a GUID")
            },
            dn,
            sam: sam.to_string(),
            values: BTreeMap::new(),
            user_account_control: uac::NORMAL_ACCOUNT,
            usn_changed: 0,
            deleted: false,
            last_known_parent: None,
        };
        for (name, value) in values {
            set_value(&mut account, name, Some(value))?;
        }
        account.usn_changed = p.next_usn();
        let guid = account.guid;
        p.accounts.push(account);
        Ok(guid)
    }

    /// Sets (`Some`) or clears (`None`) one attribute of a live partner account; raises its
    /// uSNChanged even when the value stays the same, as an LDAP modify does.
    pub fn set_partner_value(
        &self,
        guid: &ObjectGuid,
        attribute: &str,
        value: Option<&str>,
    ) -> Result<(), DirectoryError> {
        lock(&self.state)
            .partners
            .change(guid, |a| set_value(a, attribute, value))
    }

    /// Enables or disables (userAccountControl bit 0x2) a live partner account.
    pub fn set_partner_enabled(
        &self,
        guid: &ObjectGuid,
        enabled: bool,
    ) -> Result<(), DirectoryError> {
        lock(&self.state).partners.change(guid, |a| {
            a.user_account_control = if enabled {
                a.user_account_control & !uac::ACCOUNTDISABLE
            } else {
                a.user_account_control | uac::ACCOUNTDISABLE
            };
            Ok(())
        })
    }

    /// Moves a live partner account to `ou` (which must exist); returns its new DN.
    pub fn move_partner(&self, guid: &ObjectGuid, ou: &str) -> Result<String, DirectoryError> {
        let ou_exists = self.objects().iter().any(|o| dn::same(&o.dn, ou));
        if !ou_exists {
            return Err(no_such_object(ou));
        }
        let mut new_dn = String::new();
        lock(&self.state).partners.change(guid, |a| {
            let cn = dn::first_value(&a.dn).map_err(|_| no_such_object(&a.dn))?;
            new_dn = dn::child("CN", &cn, ou);
            a.dn = new_dn.clone();
            Ok(())
        })?;
        Ok(new_dn)
    }

    /// Deletes a live partner account: it becomes a tombstone under `CN=Deleted Objects` with
    /// its `lastKnownParent`, keeping only `sAMAccountName` and `userAccountControl`.
    pub fn delete_partner(&self, guid: &ObjectGuid) -> Result<(), DirectoryError> {
        let base = self
            .objects()
            .into_iter()
            .find(|o| o.class == ObjectClass::Domain)
            .map(|o| o.dn)
            .unwrap_or_default();
        lock(&self.state).partners.change(guid, |a| {
            let cn = dn::first_value(&a.dn).map_err(|_| no_such_object(&a.dn))?;
            a.last_known_parent = dn::parent(&a.dn);
            a.dn = dn::child(
                "CN",
                &format!("{cn}\nDEL:{}", a.guid),
                &format!("CN=Deleted Objects,{base}"),
            );
            a.values.clear();
            a.deleted = true;
            Ok(())
        })
    }

    /// The tombstone of a deleted partner account disappears (AD's tombstone lifetime passed).
    pub fn purge_partner_tombstone(&self, guid: &ObjectGuid) {
        lock(&self.state)
            .partners
            .accounts
            .retain(|a| !(a.guid == *guid && a.deleted));
    }

    /// The DC's highestCommittedUSN for partner accounts.
    pub fn partner_usn(&self) -> u64 {
        lock(&self.state).partners.usn
    }

    /// Another DC answers (or this one was restored): a new `invocationId`, so callers must
    /// drop their watermark.
    pub fn set_invocation_id(&self, invocation_id: &str) {
        lock(&self.state).partners.invocation_id = Some(invocation_id.to_string());
    }
}

fn set_value(account: &mut Stored, name: &str, value: Option<&str>) -> Result<(), DirectoryError> {
    let key = name.to_lowercase();
    match key.as_str() {
        "samaccountname" => {
            account.sam = value.unwrap_or_default().to_string();
        }
        "useraccountcontrol" => {
            account.user_account_control =
                value
                    .and_then(|v| v.parse().ok())
                    .ok_or_else(|| DirectoryError::Other {
                        rc: 21,
                        text: format!("invalid userAccountControl {value:?}"),
                    })?;
        }
        _ => match value {
            Some(v) => {
                account.values.insert(key, v.to_string());
            }
            None => {
                account.values.remove(&key);
            }
        },
    }
    Ok(())
}

#[async_trait]
impl PartnerDirectory for FakeDirectory {
    async fn partner_account(
        &self,
        guid: &ObjectGuid,
        filter: Option<&str>,
        attributes: &[PartnerAttribute],
    ) -> Result<Option<PartnerAccount>, DirectoryError> {
        self.begin(DirOp::Read)?;
        let terms = parse_filter(filter.unwrap_or(""))?;
        let s = lock(&self.state);
        let found = s
            .partners
            .accounts
            .iter()
            .find(|a| a.guid == *guid)
            .map(|a| a.account(attributes, &terms));
        Ok(found)
    }

    /// Calls `changed` after every change of a partner account, anywhere (the fake does not
    /// scope its notifications), until a read fault makes it fail.
    async fn watch_changes(
        &self,
        _ous: &[String],
        changed: &(dyn Fn() + Send + Sync),
    ) -> Result<(), DirectoryError> {
        self.begin(DirOp::Read)?;
        let changes = lock(&self.state).partners.changes.clone();
        loop {
            changes.notified().await;
            changed();
        }
    }

    async fn partner_accounts_named(
        &self,
        name: &str,
        filter: Option<&str>,
        attributes: &[PartnerAttribute],
    ) -> Result<Vec<PartnerAccount>, DirectoryError> {
        self.begin(DirOp::Read)?;
        let terms = parse_filter(filter.unwrap_or(""))?;
        let s = lock(&self.state);
        Ok(s.partners
            .accounts
            .iter()
            .filter(|a| !a.deleted)
            .filter(|a| {
                ["sAMAccountName", "userPrincipalName", "mail"]
                    .iter()
                    .any(|attr| a.value(attr).is_some_and(|v| v.eq_ignore_ascii_case(name)))
            })
            .map(|a| a.account(attributes, &terms))
            .collect())
    }

    async fn changed_accounts(
        &self,
        filter: Option<&str>,
        attributes: &[PartnerAttribute],
        after_usn: u64,
    ) -> Result<PartnerChanges, DirectoryError> {
        self.begin(DirOp::Read)?;
        let terms = parse_filter(filter.unwrap_or(""))?;
        let s = lock(&self.state);
        let p = &s.partners;
        Ok(PartnerChanges {
            accounts: p
                .accounts
                .iter()
                .filter(|a| a.usn_changed > after_usn)
                .map(|a| a.account(attributes, &terms))
                .collect(),
            highest_usn: p.usn,
            invocation_id: p.invocation_id(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "DC=corp,DC=example,DC=test";
    const OU: &str = "OU=Partners,DC=corp,DC=example,DC=test";
    const ELSEWHERE: &str = "OU=Staff,DC=corp,DC=example,DC=test";
    const FILTER: Option<&str> = Some("(extensionAttribute1=Partner)");

    /// The live accounts directly under `ou` among those changed after `after_usn`.
    async fn changed_in(
        d: &dyn PartnerDirectory,
        ou: &str,
        filter: Option<&str>,
        attributes: &[PartnerAttribute],
        after_usn: u64,
    ) -> PartnerChanges {
        let mut changes = d
            .changed_accounts(filter, attributes, after_usn)
            .await
            .unwrap();
        changes
            .accounts
            .retain(|a| !a.deleted && dn::parent(&a.dn).is_some_and(|p| dn::same(&p, ou)));
        changes
    }

    fn directory() -> FakeDirectory {
        let d = FakeDirectory::new(BASE);
        d.add_ou(OU).unwrap();
        d.add_ou(ELSEWHERE).unwrap();
        d
    }

    #[tokio::test]
    async fn read_by_guid_with_filter_and_state() {
        let d = directory();
        let guid = d
            .add_partner(
                OU,
                "Pat, P.",
                "ppartner",
                &[
                    ("mail", "pat@fabrikam.com"),
                    ("displayName", "Pat (ÄÖ) *"),
                    ("extensionAttribute1", "Partner"),
                ],
            )
            .unwrap();
        let attrs = [PartnerAttribute::DisplayName, PartnerAttribute::Department];
        let a = d
            .partner_account(&guid, FILTER, &attrs)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(a.dn, format!("CN=Pat\\, P.,{OU}"));
        assert_eq!(a.mail.as_deref(), Some("pat@fabrikam.com"));
        assert_eq!(
            a.attributes,
            [
                (PartnerAttribute::DisplayName, Some("Pat (ÄÖ) *".into())),
                (PartnerAttribute::Department, None)
            ]
        );
        assert!(a.enabled && a.matches_filter && !a.deleted);
        d.set_partner_value(&guid, "extensionAttribute1", None)
            .unwrap();
        d.set_partner_enabled(&guid, false).unwrap();
        let a = d
            .partner_account(&guid, FILTER, &attrs)
            .await
            .unwrap()
            .unwrap();
        assert!(!a.enabled && !a.matches_filter);
        assert!(
            d.partner_account(&guid, None, &[])
                .await
                .unwrap()
                .unwrap()
                .matches_filter
        );
        let unknown: ObjectGuid = "00000000-0000-4000-8000-00000000abcd".parse().unwrap();
        assert!(d
            .partner_account(&unknown, None, &[])
            .await
            .unwrap()
            .is_none());
        assert!(d
            .partner_account(&guid, Some("(|(a=b)(c=d))"), &[])
            .await
            .is_err());
    }

    #[tokio::test]
    async fn changes_after_a_watermark_one_level_and_tombstones() {
        let d = directory();
        let pat = d.add_partner(OU, "Pat", "pat", &[]).unwrap();
        let sam = d.add_partner(OU, "Sam", "sam", &[]).unwrap();
        let first = changed_in(&d, OU, None, &[], 0).await;
        assert_eq!(first.accounts.len(), 2);
        assert_eq!(first.invocation_id, INVOCATION_ID);
        let none = changed_in(&d, OU, None, &[], first.highest_usn).await;
        assert!(none.accounts.is_empty());
        assert_eq!(none.highest_usn, first.highest_usn);

        d.set_partner_value(&pat, "title", Some("Engineer"))
            .unwrap();
        d.move_partner(&sam, ELSEWHERE).unwrap();
        let next = changed_in(
            &d,
            OU,
            None,
            &[PartnerAttribute::JobTitle],
            first.highest_usn,
        )
        .await;
        assert_eq!(next.accounts.len(), 1, "the moved account is not in the OU");
        assert_eq!(next.accounts[0].guid, pat);
        assert!(next.highest_usn > first.highest_usn);

        let everywhere = d
            .changed_accounts(None, &[], first.highest_usn)
            .await
            .unwrap();
        assert_eq!(
            everywhere
                .accounts
                .iter()
                .map(|a| a.guid)
                .collect::<Vec<_>>(),
            [pat, sam],
            "domain-wide, the moved account too"
        );
        d.delete_partner(&pat).unwrap();
        let deleted = d
            .changed_accounts(FILTER, &[], next.highest_usn)
            .await
            .unwrap();
        assert_eq!(deleted.accounts.len(), 1);
        assert!(deleted.accounts[0].deleted && !deleted.accounts[0].matches_filter);
        assert_eq!(deleted.accounts[0].guid, pat);
        let gone = d.partner_account(&pat, FILTER, &[]).await.unwrap().unwrap();
        assert!(gone.deleted && !gone.enabled && !gone.matches_filter);
        assert_eq!(gone.dn, format!("CN=Pat,{OU}"));
        assert!(changed_in(&d, OU, None, &[], next.highest_usn)
            .await
            .accounts
            .is_empty());
        d.purge_partner_tombstone(&pat);
        assert!(d.partner_account(&pat, None, &[]).await.unwrap().is_none());
        d.set_invocation_id("00000dc2-0000-4000-8000-000000000002");
        let other = changed_in(&d, OU, None, &[], 0).await;
        assert_ne!(other.invocation_id, INVOCATION_ID);
    }

    #[tokio::test]
    async fn reads_can_fail() {
        let d = directory();
        d.fail(DirOp::Read, 1, || DirectoryError::server_down("reset"));
        assert!(d
            .changed_accounts(None, &[], 0)
            .await
            .unwrap_err()
            .is_retryable());
        assert!(d.changed_accounts(None, &[], 0).await.is_ok());
    }
}
