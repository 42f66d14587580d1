//! Groups as scope-group changes need them: a group's direct members, and groups delta for one
//! group with its membership changes (`members@delta`).

use crate::GraphClient;
use serde::Deserialize;
use serde_json::Value;
use shadowsync_core::ObjectId;
use shadowsync_ports::{DeltaCursor, GraphError, GroupChange, Member, MemberKind, Page};
use tracing::warn;

/// A member as Graph lists it (`/members`, `members@delta`).
#[derive(Deserialize)]
struct RawMember {
    id: String,
    #[serde(rename = "@odata.type", default)]
    odata_type: String,
    #[serde(rename = "@removed")]
    removed: Option<Value>,
}

impl RawMember {
    /// `None` (logged) for an id that is not a GUID: nothing can be done with it.
    fn member(&self) -> Option<Member> {
        match ObjectId::parse(&self.id) {
            Ok(id) => Some(Member {
                id,
                kind: MemberKind::from_odata_type(&self.odata_type),
            }),
            Err(_) => {
                warn!("a group member without a usable id; skipped");
                None
            }
        }
    }
}

/// A groups delta item.
#[derive(Deserialize)]
struct RawGroupItem {
    id: ObjectId,
    #[serde(rename = "@removed")]
    removed: Option<Value>,
    #[serde(rename = "members@delta", default)]
    members: Vec<RawMember>,
}

impl From<RawGroupItem> for GroupChange {
    fn from(raw: RawGroupItem) -> Self {
        let (removed, added): (Vec<_>, Vec<_>) =
            raw.members.iter().partition(|m| m.removed.is_some());
        GroupChange {
            group: raw.id,
            deleted: raw.removed.is_some(),
            added: added.into_iter().filter_map(RawMember::member).collect(),
            removed: removed.into_iter().filter_map(RawMember::member).collect(),
        }
    }
}

impl GraphClient {
    /// Every direct member of `group`, following nextLinks.
    pub async fn group_members(&self, group: &ObjectId) -> Result<Vec<Member>, GraphError> {
        let mut url = self.segments_url(&["v1.0", "groups", group, "members"]);
        url.set_query(Some("$select=id&$top=999"));
        let mut next = url.to_string();
        let mut members = Vec::new();
        loop {
            let page = self.page::<RawMember>(&next).await?;
            members.extend(page.items.iter().filter_map(RawMember::member));
            match page.next_link {
                Some(link) => next = link,
                None => return Ok(members),
            }
        }
    }

    /// One page of groups delta for `group` alone.
    pub async fn group_delta(
        &self,
        group: &ObjectId,
        from: &DeltaCursor,
    ) -> Result<Page<GroupChange>, GraphError> {
        let url = match from {
            DeltaCursor::Start => {
                let mut url = self.segments_url(&["v1.0", "groups", "delta"]);
                url.query_pairs_mut()
                    .append_pair("$select", "members")
                    .append_pair("$filter", &format!("id eq '{group}'"));
                url.to_string()
            }
            // The link remembers the round's `$select` and `$filter`.
            DeltaCursor::Link(link) => link.clone(),
        };
        let page = self.page::<RawGroupItem>(&url).await?;
        Ok(Page {
            items: page.items.into_iter().map(GroupChange::from).collect(),
            next_link: page.next_link,
            delta_link: page.delta_link,
            skipped: page.skipped,
        })
    }
}
