//! [`FakeGuestGraph`]: the partner direction's Graph ([`GuestGraph`]) in memory, answering as
//! the simulator (and Graph) does: inviting an address a guest has answers that guest; an
//! address a member holds is refused; `invitedUser` converts an internal user whose `mail` is
//! the address (not one whose `onPremisesUserPrincipalName` is set); a redemption reset needs
//! the address on the user first; a synced user's AD-mastered properties are refused. Every
//! call can be made to fail.

use crate::faults::{lock, Faults, MakeError};
use async_trait::async_trait;
use shadowsync_core::partner::{ObservedGuest, PartnerAttribute};
use shadowsync_core::ObjectId;
use shadowsync_ports::{GraphError, GuestChange, GuestGraph, Invitation};
use std::collections::BTreeMap;
use std::sync::Mutex;

/// The port's methods, for fault injection and call counts. `Any` matches every method.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GuestOp {
    Any,
    Find,
    Invite,
    Update,
    Delete,
}

#[derive(Default)]
struct World {
    /// Each user, and (synced ones) their immutable id and AD extension attributes.
    users: BTreeMap<ObjectId, (ObservedGuest, Option<String>)>,
    /// The link attribute each user carries, by attribute name.
    links: BTreeMap<ObjectId, BTreeMap<String, String>>,
    next_id: u64,
    faults: Faults<GuestOp, GraphError>,
    calls: Vec<GuestOp>,
}

/// The partner direction's Graph in memory.
#[derive(Default)]
pub struct FakeGuestGraph {
    world: Mutex<World>,
}

fn bad_request(message: &str) -> GraphError {
    GraphError::client(400, "BadRequest", message)
}

impl FakeGuestGraph {
    pub fn new() -> Self {
        Self::default()
    }

    /// A user Entra Connect synced from an AD account (a member until converted).
    pub fn add_synced_user(
        &self,
        immutable_id: &str,
        mail: Option<&str>,
        on_premises_upn: Option<&str>,
    ) -> ObjectId {
        let mut w = lock(&self.world);
        let id = Self::next_id(&mut w);
        let user = ObservedGuest {
            id: id.clone(),
            user_type: "Member".into(),
            mail: mail.map(str::to_string),
            other_mails: vec![],
            account_enabled: true,
            properties: PartnerAttribute::ALL.map(|a| (a, None)).to_vec(),
            link: None,
            external_user_state: None,
            on_premises_sync_enabled: true,
            on_premises_user_principal_name: on_premises_upn.map(str::to_string),
        };
        w.users
            .insert(id.clone(), (user, Some(immutable_id.into())));
        id
    }

    /// Entra Connect brings a new `mail` (and `otherMails`) from AD to a synced user.
    pub fn sync_mail(&self, id: &ObjectId, mail: &str) {
        let mut w = lock(&self.world);
        if let Some((user, _)) = w.users.get_mut(id) {
            user.mail = Some(mail.into());
            user.other_mails = vec![mail.into()];
        }
    }

    /// A member (an employee) with `mail`.
    pub fn add_member(&self, mail: &str) -> ObjectId {
        let mut w = lock(&self.world);
        let id = Self::next_id(&mut w);
        let user = ObservedGuest {
            id: id.clone(),
            user_type: "Member".into(),
            mail: Some(mail.into()),
            other_mails: vec![],
            account_enabled: true,
            properties: PartnerAttribute::ALL.map(|a| (a, None)).to_vec(),
            link: None,
            external_user_state: None,
            on_premises_sync_enabled: false,
            on_premises_user_principal_name: None,
        };
        w.users.insert(id.clone(), (user, None));
        id
    }

    /// The user as Graph holds it now (`link` read from `link_attribute`).
    pub fn user(&self, id: &ObjectId, link_attribute: &str) -> Option<ObservedGuest> {
        let w = lock(&self.world);
        w.users
            .get(id)
            .map(|(u, _)| Self::view(&w, u, link_attribute))
    }

    /// Every user id held.
    pub fn user_ids(&self) -> Vec<ObjectId> {
        lock(&self.world).users.keys().cloned().collect()
    }

    /// The next `times` calls of `op` fail with what `make` returns.
    pub fn fail(
        &self,
        op: GuestOp,
        times: usize,
        make: impl Fn() -> GraphError + Send + Sync + 'static,
    ) {
        let make: MakeError<GraphError> = std::sync::Arc::new(make);
        lock(&self.world).faults.add(op, 0, times, make);
    }

    /// How many calls of `op` were made (`Any`: all).
    pub fn calls(&self, op: GuestOp) -> usize {
        lock(&self.world)
            .calls
            .iter()
            .filter(|c| op == GuestOp::Any || **c == op)
            .count()
    }

    fn next_id(w: &mut World) -> ObjectId {
        w.next_id += 1;
        ObjectId::from_label(&format!("fake-guest-{}", w.next_id))
    }

    fn begin(&self, op: GuestOp) -> Result<std::sync::MutexGuard<'_, World>, GraphError> {
        let mut w = lock(&self.world);
        w.calls.push(op);
        match w.faults.check(&[op, GuestOp::Any]) {
            Some(e) => Err(e),
            None => Ok(w),
        }
    }

    fn view(w: &World, user: &ObservedGuest, link_attribute: &str) -> ObservedGuest {
        let mut user = user.clone();
        user.link = w
            .links
            .get(&user.id)
            .and_then(|l| l.get(link_attribute))
            .cloned();
        user
    }

    /// Users whose `link_attribute` holds a value `matches` accepts (a find call).
    fn linked(
        &self,
        link_attribute: &str,
        matches: impl Fn(&str) -> bool,
    ) -> Result<Vec<ObservedGuest>, GraphError> {
        let w = self.begin(GuestOp::Find)?;
        Ok(w.users
            .values()
            .map(|(u, _)| Self::view(&w, u, link_attribute))
            .filter(|u| u.link.as_deref().is_some_and(&matches))
            .collect())
    }

    fn holds(user: &ObservedGuest, address: &str) -> bool {
        user.mail
            .iter()
            .chain(&user.other_mails)
            .any(|m| m.eq_ignore_ascii_case(address))
    }
}

#[async_trait]
impl GuestGraph for FakeGuestGraph {
    async fn guests_by_link(
        &self,
        link_attribute: &str,
        link: &str,
    ) -> Result<Vec<ObservedGuest>, GraphError> {
        self.linked(link_attribute, |l| l.eq_ignore_ascii_case(link))
    }

    async fn guest(
        &self,
        id: &ObjectId,
        link_attribute: &str,
    ) -> Result<Option<ObservedGuest>, GraphError> {
        let w = self.begin(GuestOp::Find)?;
        Ok(w.users
            .get(id)
            .map(|(u, _)| Self::view(&w, u, link_attribute)))
    }

    async fn linked_guests(&self, link_attribute: &str) -> Result<Vec<ObservedGuest>, GraphError> {
        self.linked(link_attribute, |l| {
            l.starts_with(shadowsync_core::partner::LINK_PREFIX)
        })
    }

    async fn users_by_address(
        &self,
        address: &str,
        link_attribute: &str,
    ) -> Result<Vec<ObservedGuest>, GraphError> {
        let w = self.begin(GuestOp::Find)?;
        Ok(w.users
            .values()
            .filter(|(u, _)| Self::holds(u, address))
            .map(|(u, _)| Self::view(&w, u, link_attribute))
            .collect())
    }

    async fn users_by_immutable_id(
        &self,
        immutable_id: &str,
    ) -> Result<Vec<ObservedGuest>, GraphError> {
        let w = self.begin(GuestOp::Find)?;
        Ok(w.users
            .values()
            .filter(|(_, i)| i.as_deref() == Some(immutable_id))
            .map(|(u, _)| u.clone())
            .collect())
    }

    async fn invite(&self, invitation: &Invitation) -> Result<ObjectId, GraphError> {
        let mut w = self.begin(GuestOp::Invite)?;
        let address = invitation.address.as_str();
        if let Some(id) = &invitation.invited_user {
            let (user, _) = w.users.get_mut(id).ok_or_else(|| {
                GraphError::client(404, "Request_ResourceNotFound", "no such user")
            })?;
            if invitation.reset_redemption || user.external_user_state.is_some() {
                if !Self::holds(user, address) {
                    return Err(bad_request("The email you're using to invite this user doesn't match any emails on the user object."));
                }
            } else {
                if user.on_premises_user_principal_name.is_some() {
                    return Err(bad_request(
                        "The user cannot be converted: onPremisesUserPrincipalName is set.",
                    ));
                }
                if !user
                    .mail
                    .as_deref()
                    .is_some_and(|m| m.eq_ignore_ascii_case(address))
                {
                    return Err(bad_request("The email you're using to invite this user doesn't match any emails on the user object."));
                }
            }
            user.external_user_state = Some("PendingAcceptance".into());
            return Ok(id.clone());
        }
        if let Some((user, _)) = w.users.values().find(|(u, _)| Self::holds(u, address)) {
            return match user.user_type.as_str() {
                "Guest" => Ok(user.id.clone()),
                _ => Err(bad_request(&format!(
                    "The invited user already exists in the directory as objectID: {}.",
                    user.id
                ))),
            };
        }
        let id = Self::next_id(&mut w);
        let guest = ObservedGuest {
            id: id.clone(),
            user_type: "Guest".into(),
            mail: Some(address.into()),
            other_mails: vec![address.into()],
            account_enabled: true,
            properties: PartnerAttribute::ALL.map(|a| (a, None)).to_vec(),
            link: None,
            external_user_state: Some("PendingAcceptance".into()),
            on_premises_sync_enabled: false,
            on_premises_user_principal_name: None,
        };
        w.users.insert(id.clone(), (guest, None));
        Ok(id)
    }

    async fn update_guest(&self, id: &ObjectId, change: &GuestChange) -> Result<(), GraphError> {
        let mut w = self.begin(GuestOp::Update)?;
        let Some((user, _)) = w.users.get_mut(id) else {
            return Err(GraphError::client(
                404,
                "Request_ResourceNotFound",
                "no such user",
            ));
        };
        let mastered = !change.properties.is_empty()
            || change.link.is_some()
            || change.account_enabled.is_some()
            || change.address.is_some();
        if user.on_premises_sync_enabled && mastered {
            return Err(GraphError::client(400, "Request_BadRequest", "Unable to update the specified properties for on-premises mastered Directory Sync objects or objects currently undergoing migration."));
        }
        for (attribute, value) in &change.properties {
            if let Some(slot) = user.properties.iter_mut().find(|(a, _)| a == attribute) {
                slot.1 = value.clone();
            }
        }
        if let Some(enabled) = change.account_enabled {
            user.account_enabled = enabled;
        }
        if let Some(user_type) = &change.user_type {
            user.user_type = user_type.clone();
        }
        if let Some(address) = &change.address {
            user.mail = Some(address.clone());
            user.other_mails = vec![address.clone()];
        }
        if let Some((attribute, value)) = &change.link {
            w.links
                .entry(id.clone())
                .or_default()
                .insert(attribute.clone(), value.clone());
        }
        Ok(())
    }

    async fn delete_user(&self, id: &ObjectId) -> Result<(), GraphError> {
        let mut w = self.begin(GuestOp::Delete)?;
        w.users.remove(id);
        w.links.remove(id);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn invitation(address: &str) -> Invitation {
        Invitation {
            address: address.into(),
            redirect_url: "https://myapplications.microsoft.com".into(),
            send_message: false,
            message_language: None,
            invited_user: None,
            reset_redemption: false,
        }
    }

    #[tokio::test]
    async fn answers_as_graph_does() {
        let g = FakeGuestGraph::new();
        let id = g.invite(&invitation("pat@fabrikam.com")).await.unwrap();
        assert_eq!(
            g.invite(&invitation("PAT@fabrikam.com")).await.unwrap(),
            id,
            "the same guest"
        );
        let link = GuestChange {
            link: Some(("extensionAttribute15".into(), "Partner_x".into())),
            ..GuestChange::default()
        };
        g.update_guest(&id, &link).await.unwrap();
        let found = g
            .guests_by_link("extensionAttribute15", "Partner_x")
            .await
            .unwrap();
        assert_eq!(found.len(), 1);
        assert!(g
            .guests_by_link("extensionAttribute14", "Partner_x")
            .await
            .unwrap()
            .is_empty());

        g.add_member("emp@contoso.com");
        assert!(
            g.invite(&invitation("emp@contoso.com")).await.is_err(),
            "a member's address"
        );

        let synced = g.add_synced_user("PloLHy18j06aawwdLj9KWw==", Some("sam@fabrikam.com"), None);
        let convert = Invitation {
            invited_user: Some(synced.clone()),
            ..invitation("other@fabrikam.com")
        };
        assert!(
            g.invite(&convert).await.is_err(),
            "mail must hold the address"
        );
        let convert = Invitation {
            invited_user: Some(synced.clone()),
            ..invitation("sam@fabrikam.com")
        };
        assert_eq!(g.invite(&convert).await.unwrap(), synced);
        let blocked = GuestChange {
            account_enabled: Some(false),
            ..GuestChange::default()
        };
        assert!(
            g.update_guest(&synced, &blocked).await.is_err(),
            "AD-mastered"
        );
        let guest = GuestChange {
            user_type: Some("Guest".into()),
            ..GuestChange::default()
        };
        g.update_guest(&synced, &guest).await.unwrap();
        let found = g
            .users_by_immutable_id("PloLHy18j06aawwdLj9KWw==")
            .await
            .unwrap();
        assert_eq!(found[0].user_type, "Guest");

        g.fail(GuestOp::Delete, 1, || GraphError::Timeout);
        assert!(g.delete_user(&id).await.is_err());
        g.delete_user(&id).await.unwrap();
        assert_eq!(g.calls(GuestOp::Delete), 2);
        assert!(g.user(&id, "extensionAttribute15").is_none());
    }
}
