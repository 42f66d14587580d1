//! The shadow account: what AD should hold for a guest (design.md §3) and what it holds now.

use crate::id::ObjectId;
use crate::names;
use crate::policy::Policy;
use crate::user::{GraphUser, UserLookup};
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fmt;

/// `userAccountControl` flags (MS-ADTS 2.2.16).
pub mod uac {
    pub const ACCOUNTDISABLE: u32 = 0x0002;
    pub const NORMAL_ACCOUNT: u32 = 0x0200;
    pub const DONT_EXPIRE_PASSWORD: u32 = 0x1_0000;
    pub const SMARTCARD_REQUIRED: u32 = 0x4_0000;
    /// "Account is sensitive and cannot be delegated": must never be set, or KCD fails.
    pub const NOT_DELEGATED: u32 = 0x10_0000;

    /// No one can sign in with a password; Kerberos S4U (KCD) still works.
    pub const ENABLED: u32 = NORMAL_ACCOUNT | SMARTCARD_REQUIRED | DONT_EXPIRE_PASSWORD;
    pub const DISABLED: u32 = ENABLED | ACCOUNTDISABLE;
}

/// LDAP attribute names shadowsync writes.
pub mod attr {
    pub const CN: &str = "cn";
    pub const SAM_ACCOUNT_NAME: &str = "sAMAccountName";
    pub const USER_PRINCIPAL_NAME: &str = "userPrincipalName";
    pub const DISPLAY_NAME: &str = "displayName";
    pub const GIVEN_NAME: &str = "givenName";
    pub const SURNAME: &str = "sn";
    pub const MAIL: &str = "mail";
    pub const DESCRIPTION: &str = "description";
    pub const USER_ACCOUNT_CONTROL: &str = "userAccountControl";
}

/// The fixed `description` that tells humans who owns the object.
pub const DESCRIPTION_MARKER: &str =
    "Shadow account of a Microsoft Entra ID guest, managed by shadowsync. Changes are overwritten.";

/// Where an account lives: its `cn` and the DN of its OU.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Location {
    pub cn: String,
    pub ou: String,
}

impl Location {
    pub fn dn(&self) -> String {
        crate::dn::child("CN", &self.cn, &self.ou)
    }

    /// Same place as AD sees it: `cn` exactly (so a case change still renames), OU as a DN.
    pub fn same_as(&self, other: &Location) -> bool {
        self.cn == other.cn && crate::dn::same(&self.ou, &other.ou)
    }
}

/// The attributes shadowsync keeps equal to Graph on every change. `None` = attribute absent.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManagedAttributes {
    pub user_principal_name: Option<String>,
    pub display_name: Option<String>,
    pub given_name: Option<String>,
    pub surname: Option<String>,
    pub mail: Option<String>,
    pub description: Option<String>,
}

impl ManagedAttributes {
    /// `(LDAP attribute, value)` pairs in a fixed order.
    pub fn fields(&self) -> [(&'static str, Option<&str>); 6] {
        [
            (
                attr::USER_PRINCIPAL_NAME,
                self.user_principal_name.as_deref(),
            ),
            (attr::DISPLAY_NAME, self.display_name.as_deref()),
            (attr::GIVEN_NAME, self.given_name.as_deref()),
            (attr::SURNAME, self.surname.as_deref()),
            (attr::MAIL, self.mail.as_deref()),
            (attr::DESCRIPTION, self.description.as_deref()),
        ]
    }

    /// Sets one attribute by its LDAP name; unknown names are ignored.
    pub fn set(&mut self, attribute: &str, value: Option<String>) {
        let slot = match attribute {
            attr::USER_PRINCIPAL_NAME => &mut self.user_principal_name,
            attr::DISPLAY_NAME => &mut self.display_name,
            attr::GIVEN_NAME => &mut self.given_name,
            attr::SURNAME => &mut self.surname,
            attr::MAIL => &mut self.mail,
            attr::DESCRIPTION => &mut self.description,
            _ => return,
        };
        *slot = value;
    }
}

/// The shadow account a guest in scope should have.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShadowAccount {
    pub object_id: ObjectId,
    /// Value of the anchor attribute (`User_<objectId>` by default).
    pub anchor: String,
    /// Chosen once, at creation, from [`names::sam_account_name_candidates`]; never changed later.
    pub sam_account_name: String,
    pub location: Location,
    pub attributes: ManagedAttributes,
}

impl ShadowAccount {
    /// Maps a Graph user to its shadow account per design.md §3, in the guests OU.
    pub fn for_user(user: &GraphUser, policy: &Policy) -> Self {
        let upn = user.user_principal_name.as_deref();
        let given_and_surname = match (&user.given_name, &user.surname) {
            (None, None) => None,
            (g, s) => Some(format!(
                "{} {}",
                g.as_deref().unwrap_or(""),
                s.as_deref().unwrap_or("")
            )),
        };
        Self {
            object_id: user.id.clone(),
            anchor: policy.anchor.value_for(&user.id),
            sam_account_name: names::sam_account_name_candidates(user.id.as_str(), upn).remove(0),
            location: Location {
                cn: names::common_name(
                    user.id.as_str(),
                    user.display_name.as_deref(),
                    given_and_surname,
                    upn,
                ),
                ou: policy.guests_ou.clone(),
            },
            // Cut to each attribute's rangeUpper in the AD schema.
            attributes: ManagedAttributes {
                user_principal_name: names::attribute_value(upn, 1024),
                display_name: names::attribute_value(user.display_name.as_deref(), 256),
                given_name: names::attribute_value(user.given_name.as_deref(), 64),
                surname: names::attribute_value(user.surname.as_deref(), 64),
                mail: names::attribute_value(user.preferred_mail(), 256),
                description: Some(DESCRIPTION_MARKER.to_string()),
            },
        }
    }

    /// A digest of everything shadowsync writes, kept in state to notice what changed.
    pub fn fingerprint(&self) -> String {
        let mut h = Sha256::new();
        for part in [
            self.anchor.as_str(),
            self.sam_account_name.as_str(),
            self.location.cn.as_str(),
            self.location.ou.as_str(),
        ] {
            h.update(part.as_bytes());
            h.update([0]);
        }
        for (name, value) in self.attributes.fields() {
            h.update(name.as_bytes());
            h.update([1]);
            h.update(value.unwrap_or("").as_bytes());
            h.update([0]);
        }
        h.finalize().iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// A shadow account as read from AD.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActualAccount {
    pub dn: String,
    /// `objectGUID` as a hyphenated string.
    pub object_guid: Option<String>,
    /// Value of the anchor attribute on the object.
    pub anchor: Option<String>,
    pub sam_account_name: String,
    pub location: Location,
    pub attributes: ManagedAttributes,
    pub user_account_control: u32,
}

impl ActualAccount {
    pub fn is_enabled(&self) -> bool {
        self.user_account_control & uac::ACCOUNTDISABLE == 0
    }
}

/// Why an account should be disabled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DisableReason {
    NotGuest,
    DisabledInEntra,
    InvitationNotAccepted,
    NotInScopeGroup,
    SoftDeleted,
    /// Graph knows the user neither as active nor as soft-deleted, but did not say it deleted
    /// them: an orphan. Disabled, and deleted once the retention has passed.
    NotFound,
    /// Synced from this AD by Entra Connect: the user has an account of its own.
    SyncedFromAd,
    /// The guest of a partner account kept in AD (it carries the link): the partner has an
    /// account of its own.
    PartnerAccount,
}

impl fmt::Display for DisableReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::NotGuest => "user is no longer a guest (userType is not Guest)",
            Self::DisabledInEntra => "account disabled in Entra ID",
            Self::InvitationNotAccepted => "invitation not accepted yet",
            Self::NotInScopeGroup => "not a member of the scope group",
            Self::SoftDeleted => "user soft-deleted in Entra ID",
            Self::NotFound => "user not found in Entra ID (orphan)",
            Self::SyncedFromAd => {
                "user synced from AD by Entra Connect: it has an account of its own"
            }
            Self::PartnerAccount => {
                "guest of a partner account kept in AD: the partner has an account of its own"
            }
        })
    }
}

/// Why an account should be deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DeleteReason {
    PermanentlyDeleted,
    /// Disabled for longer than the policy's retention.
    RetentionExpired {
        retention: std::time::Duration,
    },
}

impl fmt::Display for DeleteReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::PermanentlyDeleted => f.write_str("user permanently deleted in Entra ID"),
            Self::RetentionExpired { retention } => {
                write!(f, "disabled for more than {}", human(*retention))
            }
        }
    }
}

/// What AD should hold for one guest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum DesiredState {
    /// An enabled account, exactly this.
    Enabled(Box<ShadowAccount>),
    /// If an account exists: disabled, in the disabled OU, attributes left as last synced (a
    /// soft-deleted user's UPN is mangled by Entra, so it must not be copied). None is created.
    Disabled(DisableReason),
    /// No account.
    Deleted(DeleteReason),
}

/// Decides what AD should hold for a guest from what Graph says now.
///
/// `in_scope_group` is whether the user is a transitive member of the policy's scope group
/// (ignored when the policy has none). `deletion_confirmed` is whether Graph itself reported the
/// user permanently deleted (a `deleted` notification or a delta `@removed` with reason
/// `deleted`): only then does a user Graph cannot find lose their account at once. A 404 alone
/// could also be a wrong tenant or a broken permission, so it only disables, and retention
/// deletes later. `disabled_since` is when shadowsync disabled the existing account, if it is
/// disabled; retention counts from then.
pub fn desired_state(
    lookup: &UserLookup,
    in_scope_group: bool,
    deletion_confirmed: bool,
    policy: &Policy,
    disabled_since: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> DesiredState {
    let reason = match lookup {
        UserLookup::Gone if deletion_confirmed => {
            return DesiredState::Deleted(DeleteReason::PermanentlyDeleted)
        }
        UserLookup::Gone => DisableReason::NotFound,
        UserLookup::SoftDeleted(_) => DisableReason::SoftDeleted,
        UserLookup::Active(user) => match disable_reason(user, in_scope_group, policy) {
            None => return DesiredState::Enabled(Box::new(ShadowAccount::for_user(user, policy))),
            Some(reason) => reason,
        },
    };
    let expired = policy.retention.filter(|r| {
        // A retention too long for chrono to represent never expires.
        let retention = Duration::from_std(*r).unwrap_or(Duration::MAX);
        disabled_since.is_some_and(|since| now - since >= retention)
    });
    if let Some(retention) = expired {
        DesiredState::Deleted(DeleteReason::RetentionExpired { retention })
    } else {
        DesiredState::Disabled(reason)
    }
}

/// "30 days" for whole days, else humantime's spelling ("1day 12h").
fn human(d: std::time::Duration) -> String {
    const DAY: u64 = 24 * 3600;
    match d.as_secs() {
        s if s > 0 && s % DAY == 0 && d.subsec_nanos() == 0 => match s / DAY {
            1 => "1 day".into(),
            n => format!("{n} days"),
        },
        _ => humantime::format_duration(d).to_string(),
    }
}

fn disable_reason(
    user: &GraphUser,
    in_scope_group: bool,
    policy: &Policy,
) -> Option<DisableReason> {
    let partner_link = policy
        .partner_link_attribute
        .as_deref()
        .and_then(|attribute| user.extension_attribute(attribute))
        .and_then(crate::partner::ObjectGuid::from_link);
    if !user.is_guest() {
        Some(DisableReason::NotGuest)
    } else if user.is_synced_from_ad() {
        Some(DisableReason::SyncedFromAd)
    } else if partner_link.is_some() {
        Some(DisableReason::PartnerAccount)
    } else if !user.is_enabled() {
        Some(DisableReason::DisabledInEntra)
    } else if policy.require_accepted && !user.has_accepted_invitation() {
        Some(DisableReason::InvitationNotAccepted)
    } else if policy.scope_group_id.is_some() && !in_scope_group {
        Some(DisableReason::NotInScopeGroup)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Policy {
        Policy::new("OU=Guests,DC=corp", "OU=Disabled Guests,DC=corp")
    }

    fn guest() -> GraphUser {
        GraphUser {
            id: ObjectId::parse("4f8a2c1e-9b3d-4e5f-8a7b-6c5d4e3f2a1b").unwrap(),
            user_principal_name: Some("alice_fabrikam.com#EXT#@contoso.onmicrosoft.com".into()),
            display_name: Some("Alice Smith".into()),
            given_name: Some("Alice".into()),
            surname: Some("".into()),
            mail: None,
            other_mails: vec!["alice@fabrikam.com".into()],
            user_type: Some("Guest".into()),
            external_user_state: Some("PendingAcceptance".into()),
            account_enabled: Some(true),
            ..Default::default()
        }
    }

    #[test]
    fn maps_a_guest_as_design_section_3() {
        let a = ShadowAccount::for_user(&guest(), &policy());
        assert_eq!(a.anchor, "User_4f8a2c1e-9b3d-4e5f-8a7b-6c5d4e3f2a1b");
        assert_eq!(a.sam_account_name, "alice_fabrikam.com");
        assert_eq!(a.location.cn, "Alice Smith_6c5d4e3f2a1b");
        assert_eq!(a.location.ou, "OU=Guests,DC=corp");
        let at = &a.attributes;
        assert_eq!(
            at.user_principal_name.as_deref(),
            Some("alice_fabrikam.com#EXT#@contoso.onmicrosoft.com")
        );
        assert_eq!(at.mail.as_deref(), Some("alice@fabrikam.com"));
        assert_eq!(at.surname, None, "empty values remove the attribute");
        assert_eq!(at.description.as_deref(), Some(DESCRIPTION_MARKER));
        assert_eq!(uac::ENABLED, 0x50200);
        assert_eq!(uac::ENABLED & uac::NOT_DELEGATED, 0);
    }

    #[test]
    fn scope_rules() {
        let now = Utc::now();
        let p = policy();
        let enabled = |u: GraphUser, p: &Policy, member| {
            matches!(
                desired_state(&UserLookup::Active(u), member, false, p, None, now),
                DesiredState::Enabled(_)
            )
        };
        assert!(enabled(guest(), &p, false));
        let member = GraphUser {
            user_type: Some("Member".into()),
            ..guest()
        };
        assert!(!enabled(member, &p, true));
        let off = GraphUser {
            account_enabled: Some(false),
            ..guest()
        };
        assert!(!enabled(off, &p, true));
        let accepted_only = Policy {
            require_accepted: true,
            ..policy()
        };
        assert!(!enabled(guest(), &accepted_only, true));
        let accepted = GraphUser {
            external_user_state: Some("Accepted".into()),
            ..guest()
        };
        assert!(enabled(accepted, &accepted_only, true));
        let grouped = Policy {
            scope_group_id: Some(ObjectId::parse("0a0b0c0d-0000-4000-8000-000000000001").unwrap()),
            ..policy()
        };
        assert!(!enabled(guest(), &grouped, false));
        assert!(enabled(guest(), &grouped, true));
    }

    #[test]
    fn a_guest_with_an_ad_account_of_its_own_gets_no_shadow_account() {
        let now = Utc::now();
        let reason = |u: GraphUser, p: &Policy| match desired_state(
            &UserLookup::Active(u),
            true,
            false,
            p,
            None,
            now,
        ) {
            DesiredState::Disabled(reason) => Some(reason),
            _ => None,
        };
        let synced = GraphUser {
            on_premises_sync_enabled: Some(true),
            ..guest()
        };
        assert_eq!(reason(synced, &policy()), Some(DisableReason::SyncedFromAd));
        let attributes = |value: &str| {
            Some(std::collections::BTreeMap::from([(
                "extensionAttribute15".to_string(),
                Some(value.to_string()),
            )]))
        };
        let linked = GraphUser {
            on_premises_extension_attributes: attributes(
                "Partner_1f0b5a3e-7c2d-4e8f-9a6b-0c1d2e3f4a5b",
            ),
            ..guest()
        };
        let partners = Policy {
            partner_link_attribute: Some("extensionAttribute15".into()),
            ..policy()
        };
        assert_eq!(
            reason(linked.clone(), &partners),
            Some(DisableReason::PartnerAccount)
        );
        assert_eq!(
            reason(linked, &policy()),
            None,
            "no partner direction configured"
        );
        let other_use = GraphUser {
            on_premises_extension_attributes: attributes("cost centre 42"),
            ..guest()
        };
        assert_eq!(reason(other_use, &partners), None, "not a link");
    }

    #[test]
    fn lifecycle_and_retention() {
        let p = policy();
        let now = Utc::now();
        let soft = UserLookup::SoftDeleted(guest());
        assert_eq!(
            desired_state(&soft, true, false, &p, None, now),
            DesiredState::Disabled(DisableReason::SoftDeleted)
        );
        let day29 = now - Duration::days(29);
        assert_eq!(
            desired_state(&soft, true, false, &p, Some(day29), now),
            DesiredState::Disabled(DisableReason::SoftDeleted)
        );
        let day30 = now - Duration::days(30);
        assert_eq!(
            desired_state(&soft, true, false, &p, Some(day30), now),
            DesiredState::Deleted(DeleteReason::RetentionExpired {
                retention: crate::policy::DEFAULT_RETENTION
            })
        );
        let forever = Policy {
            retention: None,
            ..policy()
        };
        assert_eq!(
            desired_state(
                &soft,
                true,
                false,
                &forever,
                Some(now - Duration::days(3650)),
                now
            ),
            DesiredState::Disabled(DisableReason::SoftDeleted)
        );
        assert_eq!(
            desired_state(&UserLookup::Gone, true, true, &p, None, now),
            DesiredState::Deleted(DeleteReason::PermanentlyDeleted)
        );
        assert_eq!(
            desired_state(&UserLookup::Gone, true, false, &p, None, now),
            DesiredState::Disabled(DisableReason::NotFound),
            "a 404 alone only disables"
        );
        assert_eq!(
            desired_state(&UserLookup::Gone, true, false, &p, Some(day30), now),
            DesiredState::Deleted(DeleteReason::RetentionExpired {
                retention: crate::policy::DEFAULT_RETENTION
            })
        );
    }
}
