//! The partner direction's reads ([`PartnerDirectory`]) over the same connection, reconnect and
//! paging as the shadow-account port.
//!
//! Everything AD answers is parsed before it is used: an `objectGUID` or `invocationId` must be
//! 16 bytes, USNs and `userAccountControl` decimal; an entry that fails is an error, not a
//! default. The administrator's filter is configuration and goes into the search as written;
//! every value shadowsync puts into a filter is escaped (RFC 4515), a GUID byte by byte.

use crate::{binary, first, LdapDirectory};
use async_trait::async_trait;
use ldap3::controls::RawControl;
use ldap3::{ldap_escape, Scope, SearchEntry};
use shadowsync_core::account::uac;
use shadowsync_core::dn;
use shadowsync_core::partner::{ObjectGuid, PartnerAccount, PartnerAttribute};
use shadowsync_ports::partners::{PartnerChanges, PartnerDirectory};
use shadowsync_ports::DirectoryError;
use std::collections::HashSet;

/// LDAP_SERVER_NOTIFICATION_OID: a search that never ends and returns each object of its scope
/// (base or one level; filter `(objectClass=*)`) when it changes.
pub const NOTIFICATION: &str = "1.2.840.113556.1.4.528";

/// LDAP_SERVER_SHOW_DELETED_OID: searches see tombstones too.
pub const SHOW_DELETED: &str = "1.2.840.113556.1.4.417";

/// The filter for partner accounts: user objects (not contacts, not tombstones) matching the
/// administrator's `filter`, if any. An empty filter counts as none.
pub fn partner_filter(filter: Option<&str>) -> String {
    format!(
        "(&(objectCategory=person)(objectClass=user){})",
        admin_filter(filter)
    )
}

fn admin_filter(filter: Option<&str>) -> String {
    let f = filter.map(str::trim).unwrap_or("");
    match f {
        "" => String::new(),
        f if f.starts_with('(') => f.to_string(),
        // `extensionAttribute1=Partner` written without its parentheses.
        f => format!("({f})"),
    }
}

/// Escapes bytes for a filter value, every byte as `\xx` (RFC 4515): how a binary value such
/// as an `objectGUID` goes into a filter.
pub fn escape_binary(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("\\{b:02x}")).collect()
}

/// `(uSNChanged>=after+1)`, or nothing for 0 (LDAP has no `>`).
fn usn_after(after_usn: u64) -> String {
    match after_usn.checked_add(1) {
        Some(_) if after_usn == 0 => String::new(),
        Some(next) => format!("(uSNChanged>={next})"),
        // Nothing can be greater.
        None => "(uSNChanged<=-1)".into(),
    }
}

fn malformed(what: impl Into<String>) -> DirectoryError {
    DirectoryError::Other {
        rc: 0,
        text: format!("malformed answer from the directory: {}", what.into()),
    }
}

fn show_deleted() -> RawControl {
    RawControl {
        ctype: SHOW_DELETED.to_string(),
        crit: true,
        val: None,
    }
}

fn guid_of(e: &SearchEntry, attribute: &str) -> Result<ObjectGuid, DirectoryError> {
    let bytes =
        binary(e, attribute).ok_or_else(|| malformed(format!("{} has no {attribute}", e.dn)))?;
    ObjectGuid::from_ad_bytes(&bytes).ok_or_else(|| {
        malformed(format!(
            "{attribute} of {} is {} bytes, not 16",
            e.dn,
            bytes.len()
        ))
    })
}

fn decimal(e: &SearchEntry, attribute: &str) -> Result<u64, DirectoryError> {
    let text = first(e, attribute).ok_or_else(|| malformed(format!("no {attribute}")))?;
    let text = text.trim();
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(malformed(format!("{attribute} {text:?} is not a decimal")));
    }
    text.parse()
        .map_err(|_| malformed(format!("{attribute} {text:?} is out of range")))
}

/// A tombstone's RDN value is `<name>\nDEL:<guid>` (AD's "mangled" name).
fn unmangled(cn: &str) -> &str {
    cn.split_once("\nDEL:").map_or(cn, |(name, _)| name)
}

impl LdapDirectory {
    /// One entry by base read, `None` when there is none (32).
    async fn base_entry(
        &self,
        base: &str,
        filter: &str,
        attrs: &[&str],
    ) -> Result<Option<SearchEntry>, DirectoryError> {
        let base = base.to_string();
        let filter = filter.to_string();
        let attrs: Vec<String> = attrs.iter().map(|a| a.to_string()).collect();
        let found = self
            .read(move |ldap, timeout| {
                let (base, filter, attrs) = (base.clone(), filter.clone(), attrs.clone());
                Box::pin(async move {
                    let (entries, _) = ldap
                        .with_timeout(timeout)
                        .search(&base, Scope::Base, &filter, attrs)
                        .await?
                        .success()?;
                    Ok(entries.into_iter().next().map(SearchEntry::construct))
                })
            })
            .await;
        match found {
            Err(DirectoryError::NoSuchObject(_)) => Ok(None),
            other => other,
        }
    }

    /// The DC's `highestCommittedUSN` and `invocationId`, the watermark's two halves.
    async fn usn_watermark(&self) -> Result<(u64, String), DirectoryError> {
        let root = self
            .base_entry(
                "",
                "(objectClass=*)",
                &["highestCommittedUSN", "dsServiceName"],
            )
            .await?
            .ok_or_else(|| malformed("no rootDSE"))?;
        let highest = decimal(&root, "highestCommittedUSN")?;
        let service = first(&root, "dsServiceName")
            .filter(|d| dn::parse(d).is_ok_and(|r| !r.is_empty()))
            .ok_or_else(|| malformed("the rootDSE has no dsServiceName DN"))?;
        let dsa = self
            .base_entry(&service, "(objectClass=*)", &["invocationId"])
            .await?
            .ok_or_else(|| malformed(format!("dsServiceName {service} does not exist")))?;
        let invocation = guid_of(&dsa, "invocationId")?;
        Ok((highest, invocation.to_string()))
    }

    fn partner_attrs(attributes: &[PartnerAttribute]) -> Vec<String> {
        let mut attrs: Vec<String> = [
            "objectGUID",
            "sAMAccountName",
            "userPrincipalName",
            "mail",
            "userAccountControl",
            "isDeleted",
            "lastKnownParent",
            "uSNChanged",
        ]
        .iter()
        .map(|a| a.to_string())
        .collect();
        for a in attributes {
            if !attrs.iter().any(|x| x.eq_ignore_ascii_case(a.ad_name())) {
                attrs.push(a.ad_name().to_string());
            }
        }
        attrs
    }

    /// The GUIDs among entries under `base` (`scope`) that match the partner filter.
    async fn matching(
        &self,
        base: &str,
        scope: Scope,
        filter: Option<&str>,
        extra: &str,
    ) -> Result<HashSet<ObjectGuid>, DirectoryError> {
        let f = format!(
            "(&(objectCategory=person)(objectClass=user){}{extra})",
            admin_filter(filter)
        );
        let entries = match self
            .search_scoped(base, scope, f, vec!["objectGUID".into()], vec![])
            .await
        {
            Err(DirectoryError::NoSuchObject(_)) => vec![],
            other => other?,
        };
        entries.iter().map(|e| guid_of(e, "objectGUID")).collect()
    }

    /// Reads the partner account with this `objectGUID` (see the port).
    pub async fn partner_account(
        &self,
        guid: &ObjectGuid,
        filter: Option<&str>,
        attributes: &[PartnerAttribute],
    ) -> Result<Option<PartnerAccount>, DirectoryError> {
        let by_guid = format!("(objectGUID={})", escape_binary(&guid.to_ad_bytes()));
        let entries = self
            .search_scoped(
                self.base_dn().await?,
                Scope::Subtree,
                format!("(&(objectClass=user){by_guid})"),
                Self::partner_attrs(attributes),
                vec![show_deleted()],
            )
            .await?;
        let Some(entry) = entries.into_iter().next() else {
            return Ok(None);
        };
        let mut account = to_partner(entry, attributes)?;
        if account.guid != *guid {
            return Err(malformed(format!(
                "asked for {guid}, the directory answered {}",
                account.guid
            )));
        }
        account.matches_filter = match filter.map(str::trim).filter(|f| !f.is_empty()) {
            None => true,
            Some(_) if account.deleted => false,
            // Read by GUID, not DN: a rename between the two reads changes nothing.
            Some(_) => !self
                .matching(&format!("<GUID={guid}>"), Scope::Base, filter, "")
                .await?
                .is_empty(),
        };
        Ok(Some(account))
    }

    /// AD's change notifications on `ous` (see the port), on a connection of their own: the
    /// searches never end, and must not hold up the shared one.
    pub async fn watch_changes(
        &self,
        ous: &[String],
        changed: &(dyn Fn() + Send + Sync),
    ) -> Result<(), DirectoryError> {
        let mut ldap = crate::open(&self.config).await?;
        let mut streams = Vec::with_capacity(ous.len());
        for ou in ous {
            let control = RawControl {
                ctype: NOTIFICATION.to_string(),
                crit: true,
                val: None,
            };
            let stream = ldap
                .with_controls(vec![control])
                .streaming_search(ou, Scope::OneLevel, "(objectClass=*)", vec!["objectGUID"])
                .await
                .map_err(crate::error::from_ldap)?;
            streams.push(stream);
        }
        if streams.is_empty() {
            return std::future::pending().await;
        }
        loop {
            let next = streams.iter_mut().map(|s| Box::pin(s.next()));
            let (entry, i, _) = futures::future::select_all(next).await;
            match entry.map_err(crate::error::from_ldap)? {
                Some(_) => changed(),
                // A notification search ends only with an error (the control refused, the
                // base gone, the DC shutting down): its result says which.
                None => {
                    let result = streams[i].finish().await;
                    return Err(crate::error::from_ldap(ldap3::LdapError::LdapResult {
                        result: ldap3::LdapResult {
                            rc: if result.rc == 0 { 80 } else { result.rc },
                            ..result
                        },
                    }));
                }
            }
        }
    }

    /// The live accounts an administrator's `name` names (see the port).
    pub async fn partner_accounts_named(
        &self,
        name: &str,
        filter: Option<&str>,
        attributes: &[PartnerAttribute],
    ) -> Result<Vec<PartnerAccount>, DirectoryError> {
        let v = ldap_escape(name);
        let by_name = format!("(|(sAMAccountName={v})(userPrincipalName={v})(mail={v}))");
        let entries = self
            .search_scoped(
                self.base_dn().await?,
                Scope::Subtree,
                format!("(&(objectCategory=person)(objectClass=user){by_name})"),
                Self::partner_attrs(attributes),
                vec![],
            )
            .await?;
        let matching = match admin_filter(filter).is_empty() || entries.is_empty() {
            true => None,
            false => Some(
                self.matching(self.base_dn().await?, Scope::Subtree, filter, &by_name)
                    .await?,
            ),
        };
        entries
            .into_iter()
            .map(|e| {
                let mut account = to_partner(e, attributes)?;
                account.matches_filter =
                    matching.as_ref().is_none_or(|m| m.contains(&account.guid));
                Ok(account)
            })
            .collect()
    }

    /// Every user account and user tombstone of the domain changed after `after_usn` (see the
    /// port).
    pub async fn changed_accounts(
        &self,
        filter: Option<&str>,
        attributes: &[PartnerAttribute],
        after_usn: u64,
    ) -> Result<PartnerChanges, DirectoryError> {
        let (highest_usn, invocation_id) = self.usn_watermark().await?;
        let usn = usn_after(after_usn);
        // A tombstone keeps objectClass and loses objectCategory; computers are users too.
        let entries = self
            .search_scoped(
                self.base_dn().await?,
                Scope::Subtree,
                format!(
                    "(&(objectClass=user)(!(objectClass=computer))(|(objectCategory=person)(isDeleted=TRUE)){usn})"
                ),
                Self::partner_attrs(attributes),
                vec![show_deleted()],
            )
            .await?;
        let matching = if admin_filter(filter).is_empty() || entries.is_empty() {
            None
        } else {
            Some(
                self.matching(self.base_dn().await?, Scope::Subtree, filter, &usn)
                    .await?,
            )
        };
        let mut accounts = Vec::with_capacity(entries.len());
        for e in entries {
            let mut account = to_partner(e, attributes)?;
            account.matches_filter = match &matching {
                None => !account.deleted || admin_filter(filter).is_empty(),
                Some(m) => !account.deleted && m.contains(&account.guid),
            };
            accounts.push(account);
        }
        Ok(PartnerChanges {
            accounts,
            highest_usn,
            invocation_id,
        })
    }
}

/// A partner account from its entry (live or tombstone); `matches_filter` is left `true` for
/// the caller to settle.
fn to_partner(
    e: SearchEntry,
    attributes: &[PartnerAttribute],
) -> Result<PartnerAccount, DirectoryError> {
    let guid = guid_of(&e, "objectGUID")?;
    let deleted = first(&e, "isDeleted").is_some_and(|v| v.eq_ignore_ascii_case("TRUE"));
    let uac = match first(&e, "userAccountControl") {
        Some(_) => u32::try_from(decimal(&e, "userAccountControl")?)
            .map_err(|_| malformed(format!("userAccountControl of {} is out of range", e.dn)))?,
        // Tombstones keep userAccountControl in AD; if one did not, it is not enabled.
        None if deleted => uac::ACCOUNTDISABLE,
        None => return Err(malformed(format!("{} has no userAccountControl", e.dn))),
    };
    let dn = if deleted {
        tombstone_dn(&e)
    } else {
        e.dn.clone()
    };
    let get = |a: &str| first(&e, a);
    Ok(PartnerAccount {
        guid,
        sam_account_name: get("sAMAccountName").unwrap_or_default(),
        user_principal_name: get("userPrincipalName"),
        mail: get("mail"),
        attributes: attributes.iter().map(|a| (*a, get(a.ad_name()))).collect(),
        enabled: !deleted && uac & uac::ACCOUNTDISABLE == 0,
        matches_filter: true,
        deleted,
        dn,
    })
}

/// Where a tombstone was: `CN=<its name>,<lastKnownParent>`, else its own DN.
fn tombstone_dn(e: &SearchEntry) -> String {
    let parent = first(e, "lastKnownParent").filter(|p| dn::parse(p).is_ok());
    match (parent, dn::first_value(&e.dn)) {
        (Some(parent), Ok(cn)) => dn::child("CN", unmangled(&cn), &parent),
        _ => e.dn.clone(),
    }
}

#[async_trait]
impl PartnerDirectory for LdapDirectory {
    async fn partner_account(
        &self,
        guid: &ObjectGuid,
        filter: Option<&str>,
        attributes: &[PartnerAttribute],
    ) -> Result<Option<PartnerAccount>, DirectoryError> {
        LdapDirectory::partner_account(self, guid, filter, attributes).await
    }

    async fn changed_accounts(
        &self,
        filter: Option<&str>,
        attributes: &[PartnerAttribute],
        after_usn: u64,
    ) -> Result<PartnerChanges, DirectoryError> {
        LdapDirectory::changed_accounts(self, filter, attributes, after_usn).await
    }

    async fn partner_accounts_named(
        &self,
        name: &str,
        filter: Option<&str>,
        attributes: &[PartnerAttribute],
    ) -> Result<Vec<PartnerAccount>, DirectoryError> {
        LdapDirectory::partner_accounts_named(self, name, filter, attributes).await
    }

    async fn watch_changes(
        &self,
        ous: &[String],
        changed: &(dyn Fn() + Send + Sync),
    ) -> Result<(), DirectoryError> {
        LdapDirectory::watch_changes(self, ous, changed).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_guid_is_escaped_byte_by_byte_in_ad_order() {
        let guid: ObjectGuid = "00112233-4455-6677-8899-aabbccddeeff".parse().unwrap();
        assert_eq!(
            escape_binary(&guid.to_ad_bytes()),
            "\\33\\22\\11\\00\\55\\44\\77\\66\\88\\99\\aa\\bb\\cc\\dd\\ee\\ff"
        );
        assert_eq!(ObjectGuid::from_ad_bytes(&guid.to_ad_bytes()), Some(guid));
    }

    #[test]
    fn filters_and_watermarks() {
        assert_eq!(
            partner_filter(None),
            "(&(objectCategory=person)(objectClass=user))"
        );
        assert_eq!(
            partner_filter(Some(" extensionAttribute1=Partner ")),
            "(&(objectCategory=person)(objectClass=user)(extensionAttribute1=Partner))"
        );
        assert_eq!(partner_filter(Some("")), partner_filter(None));
        assert_eq!(usn_after(0), "");
        assert_eq!(usn_after(41), "(uSNChanged>=42)");
        assert_eq!(usn_after(u64::MAX), "(uSNChanged<=-1)");
    }

    #[test]
    fn values_from_ad_are_parsed_not_trusted() {
        let entry = |attrs: Vec<(&str, &str)>, bin: Vec<(&str, Vec<u8>)>| SearchEntry {
            dn: "CN=x,OU=P,DC=corp".into(),
            attrs: attrs
                .into_iter()
                .map(|(k, v)| (k.to_string(), vec![v.to_string()]))
                .collect(),
            bin_attrs: bin
                .into_iter()
                .map(|(k, v)| (k.to_string(), vec![v]))
                .collect(),
        };
        let short = entry(
            vec![("userAccountControl", "512")],
            vec![("objectGUID", vec![1; 15])],
        );
        assert!(to_partner(short, &[]).is_err());
        let bad_uac = entry(
            vec![("userAccountControl", "0x200")],
            vec![("objectGUID", vec![1; 16])],
        );
        assert!(to_partner(bad_uac, &[]).is_err());
        assert!(decimal(&entry(vec![("uSNChanged", "-5")], vec![]), "uSNChanged").is_err());
        assert_eq!(
            decimal(&entry(vec![("uSNChanged", "12345")], vec![]), "uSNChanged").unwrap(),
            12345
        );
        let disabled = entry(
            vec![("userAccountControl", "514"), ("sAMAccountName", "pat")],
            vec![("objectGUID", vec![1; 16])],
        );
        let account = to_partner(disabled, &[PartnerAttribute::Department]).unwrap();
        assert!(!account.enabled && !account.deleted);
        assert_eq!(account.attributes, [(PartnerAttribute::Department, None)]);
    }

    #[test]
    fn a_tombstone_is_placed_where_it_was() {
        let e = SearchEntry {
            dn: "CN=Pat\\, P.\\0ADEL:0f1e2d3c-0000-4000-8000-000000000001,CN=Deleted Objects,DC=corp"
                .into(),
            attrs: [(
                "lastKnownParent".to_string(),
                vec!["OU=Partners,DC=corp".to_string()],
            )]
            .into(),
            bin_attrs: Default::default(),
        };
        assert_eq!(tombstone_dn(&e), "CN=Pat\\, P.,OU=Partners,DC=corp");
    }
}
