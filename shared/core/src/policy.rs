//! Who gets a shadow account, where it lives and how it is recognised as shadowsync's own.

use crate::id::ObjectId;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// How long a disabled account is kept by default before it is deleted.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(30 * 24 * 3600);

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    /// Only transitive members of this group are in scope, when set.
    pub scope_group_id: Option<ObjectId>,
    /// Only guests who accepted their invitation are in scope, when true.
    pub require_accepted: bool,
    /// How long a disabled account is kept before it is deleted; `None` keeps it for ever.
    pub retention: Option<Duration>,
    /// DN of the OU holding enabled shadow accounts.
    pub guests_ou: String,
    /// DN of the OU holding disabled shadow accounts.
    pub disabled_ou: String,
    pub anchor: Anchor,
    /// Where a partner account's guest keeps its link (`[partners] link_attribute`, invite
    /// mode): such a guest gets no shadow account.
    pub partner_link_attribute: Option<String>,
}

impl Policy {
    pub fn new(guests_ou: impl Into<String>, disabled_ou: impl Into<String>) -> Self {
        Self {
            scope_group_id: None,
            require_accepted: false,
            retention: Some(DEFAULT_RETENTION),
            guests_ou: guests_ou.into(),
            disabled_ou: disabled_ou.into(),
            anchor: Anchor::default(),
            partner_link_attribute: None,
        }
    }

    /// True when `dn` lies inside one of the managed OUs (the only places shadowsync writes).
    pub fn manages(&self, dn: &str) -> bool {
        crate::dn::is_within(dn, &self.guests_ou) || crate::dn::is_within(dn, &self.disabled_ou)
    }
}

/// The attribute and value that link an AD object to its guest. The default, `adminDescription`
/// with `User_<objectId>`, is also skipped by Entra Connect's default inbound rules, so shadow
/// accounts are never soft-matched back into the cloud.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Anchor {
    pub attribute: String,
    pub prefix: String,
}

impl Default for Anchor {
    fn default() -> Self {
        Self {
            attribute: "adminDescription".into(),
            prefix: "User_".into(),
        }
    }
}

impl Anchor {
    pub fn value_for(&self, object_id: &ObjectId) -> String {
        format!("{}{}", self.prefix, object_id)
    }

    /// The guest's objectId from an anchor value, if the value is one of ours: the prefix, then
    /// a GUID. Anything else is not shadowsync's, whatever it looks like.
    pub fn object_id(&self, value: &str) -> Option<ObjectId> {
        value
            .strip_prefix(&self.prefix)
            .and_then(|id| ObjectId::parse(id).ok())
    }
}
