//! The other direction, decided without I/O: an AD partner account, the B2B guest it should have
//! in Entra ID, and the ordered operations that take the guest Graph shows there.
//!
//! Ownership is the first rule: shadowsync changes only a guest that carries the link to the
//! account (`Partner_<objectGUID>` in the configured extension attribute), one it adopts (a
//! guest of the partner's address without any link), or the synced user it converts (matched by
//! `onPremisesImmutableId`, the account's own GUID). Anything else found at the address is a
//! conflict, reported and left alone.

use crate::ObjectId;
use base64::Engine;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;
use std::time::Duration;
use uuid::Uuid;

/// An AD account's `objectGUID`: immutable, kept through renames and moves, the only identity
/// of a partner account shadowsync trusts.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ObjectGuid(Uuid);

impl ObjectGuid {
    /// From the 16 bytes AD stores (Microsoft's layout: the first three fields little-endian).
    pub fn from_ad_bytes(bytes: &[u8]) -> Option<Self> {
        let bytes: [u8; 16] = bytes.try_into().ok()?;
        Some(Self(Uuid::from_bytes_le(bytes)))
    }

    /// The 16 bytes AD stores (for a search by `objectGUID`).
    pub fn to_ad_bytes(&self) -> [u8; 16] {
        self.0.to_bytes_le()
    }

    /// Entra Connect's default source anchor for the account: base64 of the bytes AD stores
    /// (`objectGUID`, or `mS-DS-ConsistencyGuid`, which Connect sets to the same value).
    pub fn immutable_id(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(self.to_ad_bytes())
    }

    /// The value of the link on a guest: `Partner_<objectGUID>`.
    pub fn link(&self) -> String {
        format!("{LINK_PREFIX}{self}")
    }

    /// The account a link names; `None` for any other value.
    pub fn from_link(value: &str) -> Option<Self> {
        value.strip_prefix(LINK_PREFIX)?.parse().ok()
    }
}

/// What every link starts with.
pub const LINK_PREFIX: &str = "Partner_";

impl FromStr for ObjectGuid {
    type Err = String;
    /// The hyphenated form (`{…}` braces allowed, as Windows tools print it).
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim().trim_start_matches('{').trim_end_matches('}');
        match Uuid::try_parse(s) {
            Ok(uuid) if s.len() == 36 => Ok(Self(uuid)),
            _ => Err(format!("{s:?} is not an objectGUID")),
        }
    }
}

impl TryFrom<String> for ObjectGuid {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl From<ObjectGuid> for String {
    fn from(g: ObjectGuid) -> String {
        g.to_string()
    }
}

impl fmt::Display for ObjectGuid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0.hyphenated())
    }
}

impl fmt::Debug for ObjectGuid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ObjectGuid({self})")
    }
}

/// A guest property that follows the AD account.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum PartnerAttribute {
    DisplayName,
    GivenName,
    Surname,
    CompanyName,
    JobTitle,
    Department,
}

impl PartnerAttribute {
    pub const ALL: [PartnerAttribute; 6] = [
        Self::DisplayName,
        Self::GivenName,
        Self::Surname,
        Self::CompanyName,
        Self::JobTitle,
        Self::Department,
    ];

    /// The property's name in Graph.
    pub fn graph_name(self) -> &'static str {
        match self {
            Self::DisplayName => "displayName",
            Self::GivenName => "givenName",
            Self::Surname => "surname",
            Self::CompanyName => "companyName",
            Self::JobTitle => "jobTitle",
            Self::Department => "department",
        }
    }

    /// The AD attribute it comes from.
    pub fn ad_name(self) -> &'static str {
        match self {
            Self::DisplayName => "displayName",
            Self::GivenName => "givenName",
            Self::Surname => "sn",
            Self::CompanyName => "company",
            Self::JobTitle => "title",
            Self::Department => "department",
        }
    }

    /// Graph's limit for the property (characters, from the user resource's documentation);
    /// longer AD values are cut.
    pub fn max_len(self) -> usize {
        match self {
            Self::DisplayName => 256,
            Self::JobTitle => 128,
            Self::GivenName | Self::Surname | Self::CompanyName | Self::Department => 64,
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|a| a.graph_name().eq_ignore_ascii_case(name.trim()))
    }
}

/// A partner account as read from AD (or its tombstone).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartnerAccount {
    pub guid: ObjectGuid,
    pub dn: String,
    pub sam_account_name: String,
    pub user_principal_name: Option<String>,
    pub mail: Option<String>,
    /// The values of the attributes that follow (absent ones are `None`).
    pub attributes: Vec<(PartnerAttribute, Option<String>)>,
    pub enabled: bool,
    /// Whether the account matches the configured LDAP filter (the directory answers that).
    pub matches_filter: bool,
    /// A tombstone: the account was deleted in AD.
    pub deleted: bool,
}

/// Which accounts are partners: every condition given must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PartnerScope {
    /// DNs of OUs whose direct children are partners; empty: any place.
    pub ous: Vec<String>,
    /// `@partners.contoso.com`…, lower-case; empty: any UPN.
    pub upn_suffixes: Vec<String>,
    /// The domains of the tenant (`contoso.com`, `contoso.onmicrosoft.com`): a partner's
    /// address must be outside them, or it would be an employee's.
    pub tenant_domains: Vec<String>,
    /// Guests whose account left scope or was deleted are deleted after this; `None`: kept.
    pub retention: Option<Duration>,
    /// Nothing under these is a partner: the managed OUs of the shadow accounts.
    pub excluded_ous: Vec<String>,
}

impl PartnerScope {
    /// Is `account` a partner (ignoring whether it still exists)?
    pub fn includes(&self, account: &PartnerAccount) -> bool {
        let in_ou = self.ous.is_empty()
            || crate::dn::parent(&account.dn)
                .is_some_and(|parent| self.ous.iter().any(|ou| crate::dn::same(&parent, ou)));
        let upn = account
            .user_principal_name
            .as_deref()
            .unwrap_or("")
            .to_ascii_lowercase();
        let suffix =
            self.upn_suffixes.is_empty() || self.upn_suffixes.iter().any(|s| upn.ends_with(s));
        let excluded = self
            .excluded_ous
            .iter()
            .any(|ou| crate::dn::is_within(&account.dn, ou));
        in_ou && suffix && account.matches_filter && !excluded
    }

    /// The partner's own address (`mail`), when it is one a guest can be invited with.
    pub fn external_address(&self, account: &PartnerAccount) -> Result<String, String> {
        let Some(mail) = account
            .mail
            .as_deref()
            .map(str::trim)
            .filter(|m| !m.is_empty())
        else {
            return Err("the account has no mail: the partner's own address is needed".into());
        };
        let Some((local, domain)) = mail.rsplit_once('@') else {
            return Err(format!("mail {mail:?} is not an email address"));
        };
        let domain = domain.to_ascii_lowercase();
        let domain_ok = is_domain_name(&domain);
        let local_ok = !local.is_empty()
            && local.len() <= 64
            && !local
                .chars()
                .any(|c| c.is_whitespace() || c.is_control() || c == '@');
        if !domain_ok || !local_ok {
            return Err(format!("mail {mail:?} is not an email address"));
        }
        if self
            .tenant_domains
            .iter()
            .any(|d| domain == *d || domain.ends_with(&format!(".{d}")))
        {
            return Err(format!(
                "mail {mail:?} is in the organisation's own domain {domain}: a guest needs the partner's own address"
            ));
        }
        Ok(format!("{local}@{domain}"))
    }
}

/// A DNS name of two labels or more, each letters, digits and hyphens (what mail domains and
/// UPN suffixes are).
pub fn is_domain_name(name: &str) -> bool {
    name.contains('.')
        && name.split('.').all(|label| {
            !label.is_empty() && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

/// What the guest of a partner account should be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DesiredGuest {
    /// A guest for `address` with these properties; sign-in allowed when `enabled`.
    Active {
        address: String,
        properties: Vec<(PartnerAttribute, Option<String>)>,
        enabled: bool,
    },
    /// The account left scope or was deleted: blocked now, deleted once `delete` is true
    /// (the retention has passed since `since`).
    Gone {
        reason: GoneReason,
        since: DateTime<Utc>,
        delete: bool,
    },
    /// A partner without an address a guest can have: reported, nothing changes.
    Unaddressable(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GoneReason {
    OutOfScope,
    DeletedInAd,
}

impl GoneReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::OutOfScope => "the account left the partner scope",
            Self::DeletedInAd => "the account was deleted in AD",
        }
    }
}

/// The desired guest for `account` (`None`: deleted and its tombstone gone), given since when
/// it has been gone (`gone_since`, from state) and Graph's clock.
pub fn desired_guest(
    account: Option<&PartnerAccount>,
    scope: &PartnerScope,
    gone_since: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> DesiredGuest {
    let gone = |reason| {
        let since = gone_since.unwrap_or(now);
        let delete = scope
            .retention
            .is_some_and(|r| chrono::Duration::from_std(r).is_ok_and(|r| now - since >= r));
        DesiredGuest::Gone {
            reason,
            since,
            delete,
        }
    };
    let account = match account {
        None => return gone(GoneReason::DeletedInAd),
        Some(a) if a.deleted => return gone(GoneReason::DeletedInAd),
        Some(a) if !scope.includes(a) => return gone(GoneReason::OutOfScope),
        Some(a) => a,
    };
    match scope.external_address(account) {
        Err(why) => DesiredGuest::Unaddressable(why),
        Ok(address) => DesiredGuest::Active {
            address,
            properties: account
                .attributes
                .iter()
                .map(|(a, v)| (*a, clean(*a, v.as_deref())))
                .collect(),
            enabled: account.enabled,
        },
    }
}

/// A property value as Graph takes it: trimmed, control characters out, within its limit;
/// empty is absent.
fn clean(attribute: PartnerAttribute, value: Option<&str>) -> Option<String> {
    let value: String = value?
        .chars()
        .filter(|c| !c.is_control())
        .collect::<String>()
        .trim()
        .chars()
        .take(attribute.max_len())
        .collect();
    let value = value.trim_end().to_string();
    (!value.is_empty()).then_some(value)
}

/// The user Graph shows where the partner's guest is, or could be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedGuest {
    pub id: ObjectId,
    /// `Guest` or `Member`.
    pub user_type: String,
    pub mail: Option<String>,
    pub other_mails: Vec<String>,
    pub account_enabled: bool,
    pub properties: Vec<(PartnerAttribute, Option<String>)>,
    /// The link attribute's value, if any.
    pub link: Option<String>,
    /// `PendingAcceptance`, `Accepted`…: set once the user is a B2B user.
    pub external_user_state: Option<String>,
    pub on_premises_sync_enabled: bool,
    pub on_premises_user_principal_name: Option<String>,
}

impl ObservedGuest {
    fn has_address(&self, address: &str) -> bool {
        self.mail
            .iter()
            .chain(&self.other_mails)
            .any(|m| m.eq_ignore_ascii_case(address))
    }
}

/// One step towards the desired guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GuestOperation {
    /// `POST /invitations` for `address`; the new guest gets the link and the properties.
    Invite {
        address: String,
    },
    /// A guest of the address exists without any link: it becomes this account's.
    Adopt,
    /// `POST /invitations` with `invitedUser: {id}`: the synced user becomes a B2B user.
    Convert {
        address: String,
    },
    /// `userType = Guest`, which the conversion leaves as it was.
    MakeGuest,
    /// Properties to set (`None` clears).
    Update(Vec<(PartnerAttribute, Option<String>)>),
    /// The partner's address changed: the guest redeems again with the new one.
    ResetRedemption {
        address: String,
    },
    Block,
    Unblock,
    Delete,
    /// Nothing is done; the reason is reported.
    Conflict(String),
    /// Nothing can be done until Entra Connect syncs the account (or its new `mail`): the
    /// reason is reported and the work waits for Connect's next cycle.
    AwaitSync(String),
}

/// How partner accounts become guests (the configured mode).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Invite,
    Convert,
}

/// The operations that take `observed` (the guest linked to the account, else the user found
/// at its address, else the synced user with its immutable id) to `desired`. `last_address` is
/// the address the guest was last invited, converted or reset with (from state): another one
/// now means the partner redeems again.
pub fn plan_guest(
    guid: ObjectGuid,
    desired: &DesiredGuest,
    observed: Option<&ObservedGuest>,
    mode: Mode,
    last_address: Option<&str>,
) -> Vec<GuestOperation> {
    let moved_from = |address: &str| last_address.is_some_and(|l| !l.eq_ignore_ascii_case(address));
    use GuestOperation as Op;
    let ours = |g: &ObservedGuest| match mode {
        Mode::Invite => g.link.as_deref() == Some(guid.link().as_str()),
        // A converted user is matched by its immutable id: found, it is ours.
        Mode::Convert => g.on_premises_sync_enabled,
    };
    match (desired, observed) {
        (DesiredGuest::Unaddressable(why), _) => vec![Op::Conflict(why.clone())],
        (DesiredGuest::Gone { .. }, None) => vec![],
        (DesiredGuest::Gone { .. }, Some(g)) if !ours(g) => vec![],
        (DesiredGuest::Gone { delete, .. }, Some(g)) => {
            if mode == Mode::Convert {
                // Entra Connect masters a synced user's sign-in and lifetime: it follows AD.
                return vec![];
            }
            let mut ops = Vec::new();
            if g.account_enabled {
                ops.push(Op::Block);
            }
            if *delete {
                ops.push(Op::Delete);
            }
            ops
        }
        (DesiredGuest::Active { address, .. }, None) => match mode {
            Mode::Invite => vec![Op::Invite {
                address: address.clone(),
            }],
            Mode::Convert => vec![Op::AwaitSync(
                "no user synced from this account in Entra ID (onPremisesImmutableId) yet: is Entra Connect syncing it?"
                    .into(),
            )],
        },
        (
            DesiredGuest::Active {
                address,
                properties,
                enabled,
            },
            Some(g),
        ) => {
            let mut ops = Vec::new();
            match mode {
                Mode::Invite => {
                    if g.link.is_none() && g.user_type == "Guest" && g.has_address(address) {
                        ops.push(Op::Adopt);
                    } else if !ours(g) {
                        return vec![Op::Conflict(match &g.link {
                            Some(other) => format!(
                                "the guest {} at this address belongs to another account ({other})",
                                g.id
                            ),
                            None => format!(
                                "{} {} holds this address and is not a guest shadowsync may adopt",
                                g.user_type.to_lowercase(),
                                g.id
                            ),
                        })];
                    }
                    if !g.has_address(address) || moved_from(address) {
                        ops.push(Op::ResetRedemption {
                            address: address.clone(),
                        });
                    }
                    let changes: Vec<_> = properties
                        .iter()
                        .filter(|(a, want)| {
                            let have = g.properties.iter().find(|(b, _)| b == a).and_then(|(_, v)| v.clone());
                            have != *want
                        })
                        .cloned()
                        .collect();
                    if !changes.is_empty() {
                        ops.push(Op::Update(changes));
                    }
                    match (g.account_enabled, enabled) {
                        (true, false) => ops.push(Op::Block),
                        (false, true) => ops.push(Op::Unblock),
                        _ => {}
                    }
                }
                Mode::Convert => {
                    if g.external_user_state.is_none() {
                        if let Some(upn) = &g.on_premises_user_principal_name {
                            return vec![Op::Conflict(format!(
                                "the synced user {} has onPremisesUserPrincipalName {upn}, which blocks the conversion (Microsoft: Entra Connect must not write it for partner accounts)",
                                g.id
                            ))];
                        }
                        if !g.mail.as_deref().is_some_and(|m| m.eq_ignore_ascii_case(address)) {
                            return vec![Op::AwaitSync(format!(
                                "the synced user {} does not have {address} in mail yet (Entra Connect syncs it from AD): the conversion needs it first",
                                g.id
                            ))];
                        }
                        ops.push(Op::Convert {
                            address: address.clone(),
                        });
                    } else if !g.has_address(address) {
                        // Connect masters mail: the reset waits until it brings the new one.
                        return vec![Op::AwaitSync(format!(
                            "the new address {address} is not on the synced user {} yet (Entra Connect syncs mail from AD): the redemption reset needs it first",
                            g.id
                        ))];
                    } else if moved_from(address) {
                        ops.push(Op::ResetRedemption {
                            address: address.clone(),
                        });
                    }
                    if g.user_type != "Guest" {
                        ops.push(Op::MakeGuest);
                    }
                }
            }
            ops
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GUID: &str = "1f0b5a3e-7c2d-4e8f-9a6b-0c1d2e3f4a5b";
    const OU: &str = "OU=Partners,DC=corp,DC=example,DC=test";

    fn guid() -> ObjectGuid {
        GUID.parse().unwrap()
    }

    fn account() -> PartnerAccount {
        PartnerAccount {
            guid: guid(),
            dn: format!("CN=Pat Partner,{OU}"),
            sam_account_name: "ppartner".into(),
            user_principal_name: Some("ppartner@partners.contoso.com".into()),
            mail: Some("pat@fabrikam.com".into()),
            attributes: vec![
                (PartnerAttribute::DisplayName, Some("Pat Partner".into())),
                (PartnerAttribute::CompanyName, Some("Fabrikam".into())),
                (PartnerAttribute::JobTitle, None),
            ],
            enabled: true,
            matches_filter: true,
            deleted: false,
        }
    }

    fn scope() -> PartnerScope {
        PartnerScope {
            ous: vec![OU.into()],
            upn_suffixes: vec![],
            tenant_domains: vec!["contoso.com".into(), "contoso.onmicrosoft.com".into()],
            retention: Some(Duration::from_secs(30 * 24 * 3600)),
            excluded_ous: vec![],
        }
    }

    fn now() -> DateTime<Utc> {
        "2030-01-07T09:00:00Z".parse().unwrap()
    }

    fn guest(link: Option<String>) -> ObservedGuest {
        ObservedGuest {
            id: ObjectId::from_label("guest"),
            user_type: "Guest".into(),
            mail: Some("pat@fabrikam.com".into()),
            other_mails: vec![],
            account_enabled: true,
            properties: vec![
                (PartnerAttribute::DisplayName, Some("Pat Partner".into())),
                (PartnerAttribute::CompanyName, Some("Fabrikam".into())),
                (PartnerAttribute::JobTitle, None),
            ],
            link,
            external_user_state: Some("Accepted".into()),
            on_premises_sync_enabled: false,
            on_premises_user_principal_name: None,
        }
    }

    fn active() -> DesiredGuest {
        desired_guest(Some(&account()), &scope(), None, now())
    }

    #[test]
    fn the_guid_as_ad_stores_it_as_connect_anchors_it_and_as_the_link_names_it() {
        // AD's bytes are the GUID's first three fields little-endian.
        let bytes = [
            0x3e, 0x5a, 0x0b, 0x1f, 0x2d, 0x7c, 0x8f, 0x4e, 0x9a, 0x6b, 0x0c, 0x1d, 0x2e, 0x3f,
            0x4a, 0x5b,
        ];
        assert_eq!(ObjectGuid::from_ad_bytes(&bytes), Some(guid()));
        assert_eq!(guid().to_ad_bytes(), bytes);
        assert_eq!(guid().immutable_id(), "PloLHy18j06aawwdLj9KWw==");
        assert_eq!(guid().link(), format!("Partner_{GUID}"));
        assert_eq!(ObjectGuid::from_link(&guid().link()), Some(guid()));
        assert_eq!(
            ObjectGuid::from_link("User_1f0b5a3e-7c2d-4e8f-9a6b-0c1d2e3f4a5b"),
            None
        );
        assert_eq!(
            format!("{{{}}}", GUID.to_uppercase()).parse::<ObjectGuid>(),
            Ok(guid())
        );
        assert!("1f0b5a3e7c2d4e8f9a6b0c1d2e3f4a5b"
            .parse::<ObjectGuid>()
            .is_err());
    }

    #[test]
    fn scope_is_the_ou_the_suffix_and_the_filter_together() {
        let s = scope();
        assert!(s.includes(&account()));
        let elsewhere = PartnerAccount {
            dn: "CN=Pat,OU=Staff,DC=corp,DC=example,DC=test".into(),
            ..account()
        };
        assert!(!s.includes(&elsewhere));
        let nested = PartnerAccount {
            dn: format!("CN=Pat,OU=Sub,{OU}"),
            ..account()
        };
        assert!(!s.includes(&nested), "one level, as the watcher's scope");
        let suffixed = PartnerScope {
            upn_suffixes: vec!["@partners.contoso.com".into()],
            ..s.clone()
        };
        assert!(suffixed.includes(&account()));
        let other_upn = PartnerAccount {
            user_principal_name: Some("pat@contoso.com".into()),
            ..account()
        };
        assert!(!suffixed.includes(&other_upn));
        let anywhere = PartnerScope {
            ous: vec![],
            upn_suffixes: vec!["@partners.contoso.com".into()],
            excluded_ous: vec!["OU=Guests,OU=Shadowsync,DC=corp,DC=example,DC=test".into()],
            ..s.clone()
        };
        assert!(anywhere.includes(&account()));
        let shadow = PartnerAccount {
            dn: "CN=x,OU=Guests,OU=Shadowsync,DC=corp,DC=example,DC=test".into(),
            ..account()
        };
        assert!(
            !anywhere.includes(&shadow),
            "a shadow account is never a partner"
        );
        let unfiltered = PartnerAccount {
            matches_filter: false,
            ..account()
        };
        assert!(!s.includes(&unfiltered));
    }

    #[test]
    fn an_address_must_be_the_partner_s_own() {
        let s = scope();
        let with = |mail: Option<&str>| PartnerAccount {
            mail: mail.map(str::to_string),
            ..account()
        };
        assert_eq!(
            s.external_address(&with(Some(" Pat@Fabrikam.COM "))),
            Ok("Pat@fabrikam.com".into())
        );
        for bad in [
            None,
            Some(""),
            Some("pat"),
            Some("pat@fabrikam"),
            Some("p t@fabrikam.com"),
            Some("pat@contoso.com"),
            Some("pat@eu.contoso.com"),
            Some("a@b@fabrikam.com"),
        ] {
            assert!(s.external_address(&with(bad)).is_err(), "{bad:?}");
        }
        let desired = desired_guest(Some(&with(Some("pat@contoso.com"))), &s, None, now());
        assert!(matches!(desired, DesiredGuest::Unaddressable(why) if why.contains("own domain")));
    }

    #[test]
    fn a_new_partner_is_invited_and_an_unlinked_guest_of_its_address_adopted() {
        let ops = plan_guest(guid(), &active(), None, Mode::Invite, None);
        assert_eq!(
            ops,
            [GuestOperation::Invite {
                address: "pat@fabrikam.com".into()
            }]
        );
        let ops = plan_guest(guid(), &active(), Some(&guest(None)), Mode::Invite, None);
        assert_eq!(ops, [GuestOperation::Adopt]);
        // Linked and equal: nothing.
        assert!(plan_guest(
            guid(),
            &active(),
            Some(&guest(Some(guid().link()))),
            Mode::Invite,
            None
        )
        .is_empty());
    }

    #[test]
    fn what_is_not_ours_is_a_conflict_and_left_alone() {
        let other = ObjectGuid::from_str("00000000-0000-4000-8000-000000000001").unwrap();
        let ops = plan_guest(
            guid(),
            &active(),
            Some(&guest(Some(other.link()))),
            Mode::Invite,
            None,
        );
        assert!(matches!(&ops[..], [GuestOperation::Conflict(r)] if r.contains("another account")));
        let member = ObservedGuest {
            user_type: "Member".into(),
            ..guest(None)
        };
        let ops = plan_guest(guid(), &active(), Some(&member), Mode::Invite, None);
        assert!(matches!(&ops[..], [GuestOperation::Conflict(r)] if r.contains("member")));
        // Gone: a guest that is not ours is never blocked or deleted.
        let gone = desired_guest(None, &scope(), None, now());
        assert!(plan_guest(guid(), &gone, Some(&guest(None)), Mode::Invite, None).is_empty());
    }

    #[test]
    fn attributes_state_and_address_follow_the_account() {
        let mut changed = account();
        changed.attributes[0].1 = Some("  Pat\u{7} Partner-Smith ".into());
        changed.attributes[2].1 = Some("x".repeat(200));
        changed.enabled = false;
        changed.mail = Some("pat@northwind.example".into());
        let desired = desired_guest(Some(&changed), &scope(), None, now());
        let ops = plan_guest(
            guid(),
            &desired,
            Some(&guest(Some(guid().link()))),
            Mode::Invite,
            None,
        );
        assert_eq!(
            ops,
            [
                GuestOperation::ResetRedemption {
                    address: "pat@northwind.example".into()
                },
                GuestOperation::Update(vec![
                    (
                        PartnerAttribute::DisplayName,
                        Some("Pat Partner-Smith".into())
                    ),
                    (PartnerAttribute::JobTitle, Some("x".repeat(128))),
                ]),
                GuestOperation::Block,
            ]
        );
        let blocked = ObservedGuest {
            account_enabled: false,
            ..guest(Some(guid().link()))
        };
        assert_eq!(
            plan_guest(guid(), &active(), Some(&blocked), Mode::Invite, None),
            [GuestOperation::Unblock]
        );
        // The address is on the guest, but it redeemed with another: reset (an earlier reset
        // that failed after its PATCH is done again).
        assert_eq!(
            plan_guest(
                guid(),
                &active(),
                Some(&guest(Some(guid().link()))),
                Mode::Invite,
                Some("pat@old.example")
            ),
            [GuestOperation::ResetRedemption {
                address: "pat@fabrikam.com".into()
            }]
        );
    }

    #[test]
    fn a_partner_gone_is_blocked_at_once_and_deleted_after_the_retention() {
        let ours = guest(Some(guid().link()));
        let moved = PartnerAccount {
            dn: "CN=Pat,OU=Staff,DC=corp,DC=example,DC=test".into(),
            ..account()
        };
        let gone = desired_guest(Some(&moved), &scope(), None, now());
        assert!(matches!(
            gone,
            DesiredGuest::Gone {
                reason: GoneReason::OutOfScope,
                delete: false,
                ..
            }
        ));
        assert_eq!(
            plan_guest(guid(), &gone, Some(&ours), Mode::Invite, None),
            [GuestOperation::Block]
        );

        let since = now() - chrono::Duration::days(30);
        let deleted = PartnerAccount {
            deleted: true,
            ..account()
        };
        let gone = desired_guest(Some(&deleted), &scope(), Some(since), now());
        let blocked = ObservedGuest {
            account_enabled: false,
            ..ours.clone()
        };
        assert_eq!(
            plan_guest(guid(), &gone, Some(&blocked), Mode::Invite, None),
            [GuestOperation::Delete]
        );
        let keep = PartnerScope {
            retention: None,
            ..scope()
        };
        let gone = desired_guest(
            None,
            &keep,
            Some(since - chrono::Duration::days(3650)),
            now(),
        );
        assert!(matches!(
            gone,
            DesiredGuest::Gone {
                reason: GoneReason::DeletedInAd,
                delete: false,
                ..
            }
        ));
    }

    #[test]
    fn a_synced_user_is_converted_once_its_preconditions_hold() {
        let synced = ObservedGuest {
            user_type: "Member".into(),
            external_user_state: None,
            on_premises_sync_enabled: true,
            link: None,
            ..guest(None)
        };
        assert_eq!(
            plan_guest(guid(), &active(), Some(&synced), Mode::Convert, None),
            [
                GuestOperation::Convert {
                    address: "pat@fabrikam.com".into()
                },
                GuestOperation::MakeGuest
            ]
        );
        let converted = ObservedGuest {
            external_user_state: Some("PendingAcceptance".into()),
            user_type: "Guest".into(),
            ..synced.clone()
        };
        assert!(plan_guest(guid(), &active(), Some(&converted), Mode::Convert, None).is_empty());
        let blocked_by_upn = ObservedGuest {
            on_premises_user_principal_name: Some("ppartner@partners.contoso.com".into()),
            ..synced.clone()
        };
        let ops = plan_guest(
            guid(),
            &active(),
            Some(&blocked_by_upn),
            Mode::Convert,
            None,
        );
        assert!(
            matches!(&ops[..], [GuestOperation::Conflict(r)] if r.contains("onPremisesUserPrincipalName"))
        );
        let no_mail = ObservedGuest {
            mail: None,
            ..synced
        };
        let ops = plan_guest(guid(), &active(), Some(&no_mail), Mode::Convert, None);
        assert!(matches!(&ops[..], [GuestOperation::AwaitSync(r)] if r.contains("mail")));
        let ops = plan_guest(guid(), &active(), None, Mode::Convert, None);
        assert!(matches!(&ops[..], [GuestOperation::AwaitSync(r)] if r.contains("Entra Connect")));
        // A new address: the reset waits for Connect to bring it, then happens once.
        let old = Some("pat@old.example");
        let without = ObservedGuest {
            mail: Some("pat@old.example".into()),
            other_mails: vec![],
            ..converted.clone()
        };
        let ops = plan_guest(guid(), &active(), Some(&without), Mode::Convert, old);
        assert!(
            matches!(&ops[..], [GuestOperation::AwaitSync(r)] if r.contains("pat@fabrikam.com"))
        );
        assert_eq!(
            plan_guest(guid(), &active(), Some(&converted), Mode::Convert, old),
            [GuestOperation::ResetRedemption {
                address: "pat@fabrikam.com".into()
            }]
        );
        assert!(plan_guest(
            guid(),
            &active(),
            Some(&converted),
            Mode::Convert,
            Some("PAT@fabrikam.com")
        )
        .is_empty());
    }
}
