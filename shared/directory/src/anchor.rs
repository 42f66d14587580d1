//! The indexed anchor: where the schema has Windows Server 2016's
//! `msDS-ExternalDirectoryObjectId` (indexed, kept on delete), shadowsync writes the guest's
//! anchor there as well and looks accounts up by it, as Microsoft's own Entra → AD provisioning
//! (Cloud Sync) does with `User_<objectId>`. `adminDescription` keeps the anchor too: it is the
//! ownership mark, and Entra Connect's default rules skip objects whose `adminDescription`
//! starts with `User_`. Without the attribute (an older schema) the lookup compares
//! `adminDescription` on every user object, as before.

use crate::{first, LdapDirectory};
use ldap3::{ldap_escape, Mod, Scope};
use shadowsync_ports::{AnchorLookup, DirectoryError};
use std::collections::HashSet;
use std::time::{Duration, Instant};

/// The indexed attribute, in the Windows Server 2016 schema and later.
pub const EXTERNAL_ID: &str = "msDS-ExternalDirectoryObjectId";

/// How often the managed OUs are checked again for accounts without the indexed anchor (an
/// older shadowsync still running beside this one during an upgrade creates such accounts),
/// unless [`LdapDirectory::with_stamp_interval`] says otherwise.
pub const STAMP_INTERVAL: Duration = Duration::from_secs(3600);

/// `searchFlags` bit 0 (fATTINDEX): the attribute is indexed.
const INDEXED: u32 = 1;

/// The lookup for what the schema says of `msDS-ExternalDirectoryObjectId`: its `searchFlags`,
/// `None` when the schema lacks it. `wanted` is `[directory] indexed_anchor`.
pub fn choose(wanted: bool, anchor_attribute: &str, search_flags: Option<u32>) -> AnchorLookup {
    let fallback = |reason: String| AnchorLookup {
        attribute: anchor_attribute.to_string(),
        indexed: false,
        reason,
    };
    match (wanted, search_flags) {
        (false, _) => fallback("turned off ([directory] indexed_anchor = \"off\")".into()),
        (true, None) => fallback(format!(
            "the schema has no {EXTERNAL_ID} (it came with Windows Server 2016)"
        )),
        (true, Some(flags)) if flags & INDEXED == 0 => fallback(format!(
            "{EXTERNAL_ID} is not indexed in this schema (searchFlags {flags})"
        )),
        (true, Some(_)) => AnchorLookup {
            attribute: EXTERNAL_ID.to_string(),
            indexed: true,
            reason: format!("the schema has {EXTERNAL_ID}, indexed"),
        },
    }
}

/// The filter finding the account anchored to `anchor`. Indexed, AD reads only the objects
/// carrying it in `msDS-ExternalDirectoryObjectId`; `adminDescription` must hold it too, so
/// that an object another tool anchored the same way (Cloud Sync writes `User_<objectId>`
/// there for the users it provisions) is never taken for a shadow account.
pub fn lookup_filter(lookup: &AnchorLookup, anchor_attribute: &str, anchor: &str) -> String {
    match lookup.indexed {
        true => indexed_anchor_filter(&lookup.attribute, anchor_attribute, anchor),
        false => crate::anchor_filter(anchor_attribute, anchor),
    }
}

/// The filter by the indexed attribute `indexed`, with the ownership mark in `anchor_attribute`.
pub fn indexed_anchor_filter(indexed: &str, anchor_attribute: &str, anchor: &str) -> String {
    let value = ldap_escape(anchor);
    format!("(&(objectCategory=person)(objectClass=user)({indexed}={value})({anchor_attribute}={value}))")
}

impl LdapDirectory {
    /// The lookup, from what the schema at `schema_naming_context` holds.
    pub(crate) async fn detect_lookup(
        &self,
        schema_naming_context: Option<&str>,
    ) -> Result<AnchorLookup, DirectoryError> {
        let anchor_attribute = &self.policy.anchor.attribute;
        if !self.config.indexed_anchor {
            return Ok(choose(false, anchor_attribute, None));
        }
        let Some(schema) = schema_naming_context else {
            return Ok(choose(true, anchor_attribute, None));
        };
        let entries = self
            .search_scoped(
                schema,
                Scope::OneLevel,
                format!("(&(objectClass=attributeSchema)(lDAPDisplayName={EXTERNAL_ID}))"),
                vec!["searchFlags".into()],
                vec![],
            )
            .await?;
        let flags = entries.first().map(|e| {
            first(e, "searchFlags")
                .and_then(|f| f.parse().ok())
                .unwrap_or(0)
        });
        Ok(choose(true, anchor_attribute, flags))
    }

    /// Gives every account of ours in the managed OUs that lacks it the indexed anchor (accounts
    /// made before the schema had it, or by an older shadowsync): before the first lookup of
    /// the process, then every stamp interval (`forced`: now, for a sweep). Until then the
    /// indexed lookup would not find them. Returns how many were stamped.
    pub(crate) async fn stamp(
        &self,
        lookup: &AnchorLookup,
        forced: bool,
    ) -> Result<usize, DirectoryError> {
        if !lookup.indexed {
            return Ok(0);
        }
        let mut last = self.stamped_at.lock().await;
        if !forced && last.is_some_and(|at| at.elapsed() < self.stamp_interval) {
            return Ok(0);
        }
        let anchor = &self.policy.anchor;
        let filter = format!(
            "(&(objectCategory=person)(objectClass=user)({}={}*)(!({}=*)))",
            anchor.attribute,
            ldap_escape(&anchor.prefix),
            lookup.attribute
        );
        let mut seen = HashSet::new();
        let mut stamped = 0;
        for ou in [&self.policy.guests_ou, &self.policy.disabled_ou] {
            let entries = match self
                .search_scoped(
                    ou,
                    Scope::Subtree,
                    filter.clone(),
                    vec![anchor.attribute.clone()],
                    vec![],
                )
                .await
            {
                Err(DirectoryError::NoSuchObject(_)) => continue,
                other => other?,
            };
            for entry in entries {
                let Some(value) = first(&entry, &anchor.attribute) else {
                    continue;
                };
                // Only what shadowsync owns: its anchor (prefix and GUID) inside the managed
                // OUs (one OU may hold the other: each object once).
                if anchor.object_id(&value).is_none()
                    || !self.policy.manages(&entry.dn)
                    || !seen.insert(entry.dn.clone())
                {
                    continue;
                }
                let add = Mod::Add(
                    lookup.attribute.as_bytes().to_vec(),
                    HashSet::from([value.into_bytes()]),
                );
                self.modify(&entry.dn, vec![add]).await?;
                stamped += 1;
            }
        }
        if stamped > 0 {
            tracing::info!(
                stamped,
                attribute = %lookup.attribute,
                "accounts of ours gained the indexed anchor"
            );
        }
        *last = Some(Instant::now());
        Ok(stamped)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_indexed_attribute_only_where_the_schema_indexes_it_and_it_is_wanted() {
        let indexed = choose(true, "adminDescription", Some(9));
        assert!(indexed.indexed);
        assert_eq!(indexed.attribute, EXTERNAL_ID);
        for (wanted, flags, why) in [
            (true, None, "Windows Server 2016"),
            (true, Some(8), "not indexed"),
            (false, Some(9), "turned off"),
        ] {
            let lookup = choose(wanted, "adminDescription", flags);
            assert!(!lookup.indexed);
            assert_eq!(lookup.attribute, "adminDescription");
            assert!(lookup.reason.contains(why), "{}", lookup.reason);
        }
    }

    #[test]
    fn the_indexed_filter_needs_the_ownership_mark_too_and_escapes() {
        let lookup = choose(true, "adminDescription", Some(9));
        assert_eq!(
            lookup_filter(&lookup, "adminDescription", "User_a*)(x"),
            "(&(objectCategory=person)(objectClass=user)\
             (msDS-ExternalDirectoryObjectId=User_a\\2a\\29\\28x)(adminDescription=User_a\\2a\\29\\28x))"
        );
        let old = choose(false, "adminDescription", None);
        assert_eq!(
            lookup_filter(&old, "adminDescription", "User_1"),
            crate::anchor_filter("adminDescription", "User_1")
        );
    }
}
