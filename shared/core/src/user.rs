//! The Microsoft Graph user as shadowsync sees it.

use crate::id::ObjectId;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize};

/// The `$select` list every Graph read of a user uses: exactly the properties the core needs.
/// Graph's default property set lacks `userType`, `accountEnabled` and others, so it must be explicit.
pub const USER_SELECT: &str = "id,userPrincipalName,displayName,givenName,surname,mail,otherMails,\
userType,externalUserState,accountEnabled,creationType,deletedDateTime,onPremisesSyncEnabled,\
onPremisesExtensionAttributes";

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GraphUser {
    pub id: ObjectId,
    #[serde(default)]
    pub user_principal_name: Option<String>,
    #[serde(default)]
    pub display_name: Option<String>,
    #[serde(default)]
    pub given_name: Option<String>,
    #[serde(default)]
    pub surname: Option<String>,
    #[serde(default)]
    pub mail: Option<String>,
    #[serde(default, deserialize_with = "null_as_empty")]
    pub other_mails: Vec<String>,
    #[serde(default)]
    pub user_type: Option<String>,
    #[serde(default)]
    pub external_user_state: Option<String>,
    #[serde(default)]
    pub account_enabled: Option<bool>,
    #[serde(default)]
    pub creation_type: Option<String>,
    #[serde(default)]
    pub deleted_date_time: Option<DateTime<Utc>>,
    /// True for a user Entra Connect syncs from on-premises AD: it has an AD account already.
    #[serde(default)]
    pub on_premises_sync_enabled: Option<bool>,
    /// `extensionAttribute1` … `15`; on a partner's guest, one holds the link to its AD account.
    #[serde(default)]
    pub on_premises_extension_attributes:
        Option<std::collections::BTreeMap<String, Option<String>>>,
}

impl GraphUser {
    pub fn is_guest(&self) -> bool {
        self.user_type
            .as_deref()
            .is_some_and(|t| t.eq_ignore_ascii_case("Guest"))
    }

    /// Synced from on-premises AD by Entra Connect (a partner account converted to B2B, or a
    /// user Connect's rules sync as `Guest`): the user has an AD account of its own.
    pub fn is_synced_from_ad(&self) -> bool {
        self.on_premises_sync_enabled == Some(true)
    }

    /// The value of one of the fifteen `onPremisesExtensionAttributes`.
    pub fn extension_attribute(&self, name: &str) -> Option<&str> {
        self.on_premises_extension_attributes
            .as_ref()?
            .get(name)?
            .as_deref()
    }

    pub fn has_accepted_invitation(&self) -> bool {
        self.external_user_state
            .as_deref()
            .is_some_and(|s| s.eq_ignore_ascii_case("Accepted"))
    }

    /// Graph omits `accountEnabled` only when it was not selected; treat unknown as enabled so a
    /// missing property never disables anyone.
    pub fn is_enabled(&self) -> bool {
        self.account_enabled.unwrap_or(true)
    }

    /// `mail`, else the first of `otherMails`.
    pub fn preferred_mail(&self) -> Option<&str> {
        non_blank(self.mail.as_deref())
            .or_else(|| self.other_mails.iter().find_map(|m| non_blank(Some(m))))
    }
}

fn non_blank(s: Option<&str>) -> Option<&str> {
    s.filter(|s| !s.trim().is_empty())
}

fn null_as_empty<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    Ok(Option::<Vec<String>>::deserialize(d)?.unwrap_or_default())
}

/// What Graph says about a user id right now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserLookup {
    /// `GET /users/{id}` found the user.
    Active(GraphUser),
    /// The user is in `directory/deletedItems`: soft-deleted, restorable for 30 days.
    SoftDeleted(GraphUser),
    /// Neither: permanently deleted (or never existed).
    Gone,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_graph_json_with_nulls() {
        let u: GraphUser = serde_json::from_str(
            r#"{"id":"4f8a2c1e-9b3d-4e5f-8a7b-6c5d4e3f2a1b","userPrincipalName":"al_x.com#EXT#@t.onmicrosoft.com","mail":null,
                "otherMails":null,"userType":"Guest","accountEnabled":false,
                "deletedDateTime":"2026-01-02T03:04:05Z","@odata.context":"ignored"}"#,
        )
        .unwrap();
        assert!(u.is_guest());
        assert!(!u.is_enabled());
        assert!(u.other_mails.is_empty());
        assert_eq!(u.preferred_mail(), None);
        assert!(u.deleted_date_time.is_some());
    }

    #[test]
    fn preferred_mail_falls_back_to_other_mails() {
        let u = GraphUser {
            mail: Some("  ".into()),
            other_mails: vec!["".into(), "b@x.com".into()],
            ..Default::default()
        };
        assert_eq!(u.preferred_mail(), Some("b@x.com"));
    }
}
