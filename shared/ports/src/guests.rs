//! Microsoft Graph as the partner direction uses it: the user that is (or could be) a partner
//! account's guest, found by its link, its address or its immutable id; invitations; changes
//! to the guest; deletion.

use crate::GraphError;
use async_trait::async_trait;
use shadowsync_core::partner::{ObservedGuest, PartnerAttribute};
use shadowsync_core::ObjectId;

/// `POST /invitations`: a new guest for `address`, or (with `invited_user`) an existing user
/// converted to B2B collaboration or (with `reset_redemption` too) made to redeem again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invitation {
    pub address: String,
    pub redirect_url: String,
    pub send_message: bool,
    pub message_language: Option<String>,
    pub invited_user: Option<ObjectId>,
    pub reset_redemption: bool,
}

/// What one `PATCH /users/{id}` changes; `None`/empty leaves a property alone.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GuestChange {
    /// Values to set (`None` clears the property).
    pub properties: Vec<(PartnerAttribute, Option<String>)>,
    /// `(extensionAttributeN, value)`: the link to the AD account.
    pub link: Option<(String, String)>,
    pub account_enabled: Option<bool>,
    /// `Guest` (a converted user keeps its `userType` until told).
    pub user_type: Option<String>,
    /// `mail` and `otherMails`: the address a redemption reset needs on the user first.
    pub address: Option<String>,
}

impl GuestChange {
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

#[async_trait]
pub trait GuestGraph: Send + Sync {
    /// Users whose `link_attribute` (one of `onPremisesExtensionAttributes`) is `link`.
    async fn guests_by_link(
        &self,
        link_attribute: &str,
        link: &str,
    ) -> Result<Vec<ObservedGuest>, GraphError>;

    /// The user with this id, `None` when Graph has none (deleted, or not replicated yet).
    async fn guest(
        &self,
        id: &ObjectId,
        link_attribute: &str,
    ) -> Result<Option<ObservedGuest>, GraphError>;

    /// Every user whose `link_attribute` holds a partner link (`Partner_…`): what a full
    /// comparison checks when the state store has lost its records.
    async fn linked_guests(&self, link_attribute: &str) -> Result<Vec<ObservedGuest>, GraphError>;

    /// Users holding `address` in `mail` or `otherMails`.
    async fn users_by_address(
        &self,
        address: &str,
        link_attribute: &str,
    ) -> Result<Vec<ObservedGuest>, GraphError>;

    /// Users synced from the AD account whose source anchor is `immutable_id`.
    async fn users_by_immutable_id(
        &self,
        immutable_id: &str,
    ) -> Result<Vec<ObservedGuest>, GraphError>;

    /// Sends the invitation; the invited (or converted) user's id.
    async fn invite(&self, invitation: &Invitation) -> Result<ObjectId, GraphError>;

    async fn update_guest(&self, id: &ObjectId, change: &GuestChange) -> Result<(), GraphError>;

    /// Deletes the user (restorable from deleted items for 30 days).
    async fn delete_user(&self, id: &ObjectId) -> Result<(), GraphError>;
}
