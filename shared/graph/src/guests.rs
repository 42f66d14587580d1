//! The partner direction's calls ([`GuestGraph`]): users found by link, address or immutable id
//! (Graph's advanced queries), invitations, changes to a guest, deletion.

use crate::{GraphClient, GraphError};
use async_trait::async_trait;
use reqwest::Method;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use shadowsync_core::partner::{ObservedGuest, PartnerAttribute, LINK_PREFIX};
use shadowsync_core::ObjectId;
use shadowsync_ports::{GuestChange, GuestGraph, Invitation};

/// What is read of a (possible) guest.
const GUEST_SELECT: &str = "id,userType,mail,otherMails,accountEnabled,displayName,givenName,surname,companyName,jobTitle,department,onPremisesExtensionAttributes,externalUserState,onPremisesSyncEnabled,onPremisesUserPrincipalName";

/// Filters on `onPremisesExtensionAttributes`, `otherMails` with `or`, and
/// `onPremisesImmutableId` are served as Graph's *advanced queries*: this header and
/// `$count=true`, or 400 `Request_UnsupportedQuery`.
const EVENTUAL: [(&str, &str); 1] = [("ConsistencyLevel", "eventual")];

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawGuest {
    id: String,
    user_type: Option<String>,
    mail: Option<String>,
    #[serde(default)]
    other_mails: Vec<String>,
    account_enabled: Option<bool>,
    #[serde(flatten)]
    rest: Map<String, Value>,
    on_premises_extension_attributes: Option<Map<String, Value>>,
    external_user_state: Option<String>,
    on_premises_sync_enabled: Option<bool>,
    on_premises_user_principal_name: Option<String>,
}

impl RawGuest {
    fn observed(self, link_attribute: &str) -> Result<ObservedGuest, GraphError> {
        let id = ObjectId::parse(&self.id).map_err(|e| GraphError::Decode(Box::new(e)))?;
        let text = |name: &str| {
            self.rest
                .get(name)
                .and_then(Value::as_str)
                .map(str::to_string)
        };
        Ok(ObservedGuest {
            id,
            user_type: self.user_type.unwrap_or_default(),
            mail: self.mail,
            other_mails: self.other_mails,
            // Graph omits nothing it was asked for; a missing value is not a blocked user.
            account_enabled: self.account_enabled.unwrap_or(true),
            properties: PartnerAttribute::ALL
                .into_iter()
                .map(|a| (a, text(a.graph_name())))
                .collect(),
            link: self
                .on_premises_extension_attributes
                .as_ref()
                .and_then(|attributes| attributes.get(link_attribute))
                .and_then(Value::as_str)
                .map(str::to_string),
            external_user_state: self.external_user_state,
            on_premises_sync_enabled: self.on_premises_sync_enabled.unwrap_or(false),
            on_premises_user_principal_name: self.on_premises_user_principal_name,
        })
    }
}

/// An OData string literal: quotes doubled.
fn literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

impl GraphClient {
    /// The users `filter` selects, every page (the advanced-query header goes with each
    /// `@odata.nextLink` too, or Graph refuses it).
    async fn users_where(
        &self,
        filter: &str,
        link_attribute: &str,
    ) -> Result<Vec<ObservedGuest>, GraphError> {
        #[derive(Deserialize)]
        struct Users {
            value: Vec<RawGuest>,
            #[serde(rename = "@odata.nextLink")]
            next_link: Option<String>,
        }
        let mut url = self.segments_url(&["v1.0", "users"]);
        url.query_pairs_mut()
            .append_pair("$filter", filter)
            .append_pair("$select", GUEST_SELECT)
            .append_pair("$count", "true");
        let mut found = Vec::new();
        loop {
            let bytes = self
                .execute_with(Method::GET, &url, None, &EVENTUAL)
                .await?;
            let users: Users =
                serde_json::from_slice(&bytes).map_err(|e| GraphError::Decode(Box::new(e)))?;
            for user in users.value {
                found.push(user.observed(link_attribute)?);
            }
            match users.next_link {
                Some(next) => url = self.resolve(&next)?,
                None => return Ok(found),
            }
        }
    }
}

#[async_trait]
impl GuestGraph for GraphClient {
    async fn guests_by_link(
        &self,
        link_attribute: &str,
        link: &str,
    ) -> Result<Vec<ObservedGuest>, GraphError> {
        let filter = format!(
            "onPremisesExtensionAttributes/{link_attribute} eq {}",
            literal(link)
        );
        self.users_where(&filter, link_attribute).await
    }

    async fn guest(
        &self,
        id: &ObjectId,
        link_attribute: &str,
    ) -> Result<Option<ObservedGuest>, GraphError> {
        let mut url = self.segments_url(&["v1.0", "users", id]);
        url.query_pairs_mut().append_pair("$select", GUEST_SELECT);
        match self.execute_json::<RawGuest>(Method::GET, &url, None).await {
            Ok(user) => user.observed(link_attribute).map(Some),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn linked_guests(&self, link_attribute: &str) -> Result<Vec<ObservedGuest>, GraphError> {
        let filter = format!(
            "startsWith(onPremisesExtensionAttributes/{link_attribute},{})",
            literal(LINK_PREFIX)
        );
        self.users_where(&filter, link_attribute).await
    }

    async fn users_by_address(
        &self,
        address: &str,
        link_attribute: &str,
    ) -> Result<Vec<ObservedGuest>, GraphError> {
        let a = literal(address);
        let filter = format!("mail eq {a} or otherMails/any(x:x eq {a})");
        self.users_where(&filter, link_attribute).await
    }

    async fn users_by_immutable_id(
        &self,
        immutable_id: &str,
    ) -> Result<Vec<ObservedGuest>, GraphError> {
        let filter = format!("onPremisesImmutableId eq {}", literal(immutable_id));
        // A synced user's extension attributes are AD's, never our link.
        self.users_where(&filter, "").await
    }

    async fn invite(&self, invitation: &Invitation) -> Result<ObjectId, GraphError> {
        let mut body = json!({
            "invitedUserEmailAddress": invitation.address,
            "inviteRedirectUrl": invitation.redirect_url,
            "sendInvitationMessage": invitation.send_message,
        });
        if let Some(language) = &invitation.message_language {
            body["invitedUserMessageInfo"] = json!({ "messageLanguage": language });
        }
        if let Some(id) = &invitation.invited_user {
            body["invitedUser"] = json!({ "id": id.as_str() });
        }
        if invitation.reset_redemption {
            body["resetRedemption"] = json!(true);
        }
        let answer = self
            .send(Method::POST, "/v1.0/invitations", Some(&body))
            .await?;
        let id = answer["invitedUser"]["id"].as_str().unwrap_or_default();
        ObjectId::parse(id).map_err(|e| GraphError::Decode(Box::new(e)))
    }

    async fn update_guest(&self, id: &ObjectId, change: &GuestChange) -> Result<(), GraphError> {
        if change.is_empty() {
            return Ok(());
        }
        let mut body = Map::new();
        for (attribute, value) in &change.properties {
            body.insert(attribute.graph_name().into(), json!(value));
        }
        if let Some((attribute, value)) = &change.link {
            body.insert(
                "onPremisesExtensionAttributes".into(),
                json!({ attribute.as_str(): value }),
            );
        }
        if let Some(enabled) = change.account_enabled {
            body.insert("accountEnabled".into(), json!(enabled));
        }
        if let Some(user_type) = &change.user_type {
            body.insert("userType".into(), json!(user_type));
        }
        if let Some(address) = &change.address {
            body.insert("mail".into(), json!(address));
            body.insert("otherMails".into(), json!([address]));
        }
        let url = self.segments_url(&["v1.0", "users", id]);
        self.send(Method::PATCH, url.as_str(), Some(&Value::Object(body)))
            .await
            .map(drop)
    }

    async fn delete_user(&self, id: &ObjectId) -> Result<(), GraphError> {
        let url = self.segments_url(&["v1.0", "users", id]);
        match self.send(Method::DELETE, url.as_str(), None).await {
            // Already gone: what was asked.
            Err(e) if e.is_not_found() => Ok(()),
            other => other.map(drop),
        }
    }
}
