//! Users and groups: the typed calls the application makes about people.

use crate::{GraphClient, GraphError};
use reqwest::Method;
use serde::Deserialize;
use shadowsync_core::user::{GraphUser, UserLookup, USER_SELECT};
use shadowsync_core::ObjectId;
use shadowsync_ports::{DeltaCursor, DeltaItem, Page};

/// Every guest, ids only (the most a page may hold: 999).
pub const GUESTS_QUERY: &str = "/v1.0/users?$filter=userType%20eq%20'Guest'&$select=id&$top=999";

impl GraphClient {
    /// What Graph says about user `id` now: active, soft-deleted or gone.
    pub async fn user(&self, id: &ObjectId) -> Result<UserLookup, GraphError> {
        if let Some(user) = self.get_user(&["v1.0", "users", id]).await? {
            return Ok(UserLookup::Active(user));
        }
        let deleted = [
            "v1.0",
            "directory",
            "deletedItems",
            "microsoft.graph.user",
            id,
        ];
        Ok(match self.get_user(&deleted).await? {
            Some(user) => UserLookup::SoftDeleted(user),
            None => UserLookup::Gone,
        })
    }

    /// The user whose userPrincipalName is `upn`, if any. `/users/{upn}` is the one place a
    /// name, not an id, goes into a Graph URL: on purpose, for the administrator's lookups.
    pub async fn user_by_principal_name(&self, upn: &str) -> Result<Option<GraphUser>, GraphError> {
        if upn.trim().is_empty() {
            return Err(GraphError::Config("userPrincipalName is empty".into()));
        }
        self.get_user(&["v1.0", "users", upn]).await
    }

    /// `GET` the user at `segments` with the core's `$select`; `None` on 404.
    async fn get_user(&self, segments: &[&str]) -> Result<Option<GraphUser>, GraphError> {
        let url = self.select_user(self.segments_url(segments));
        match self.execute_json(Method::GET, &url, None).await {
            Ok(user) => Ok(Some(user)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Whether `user` is a member of `group`, directly or through nested groups.
    pub async fn is_member_of(
        &self,
        user: &ObjectId,
        group: &ObjectId,
    ) -> Result<bool, GraphError> {
        #[derive(Deserialize)]
        struct Ids {
            value: Vec<String>,
        }
        let url = self.segments_url(&["v1.0", "users", user, "checkMemberGroups"]);
        let body = serde_json::json!({ "groupIds": [group.as_str()] });
        let ids: Ids = self.execute_json(Method::POST, &url, Some(&body)).await?;
        Ok(ids.value.iter().any(|g| g.eq_ignore_ascii_case(group)))
    }

    /// Whether `group` exists (`GET /groups/{id}?$select=id`; 404: no).
    pub async fn group_exists(&self, group: &ObjectId) -> Result<bool, GraphError> {
        let mut url = self.segments_url(&["v1.0", "groups", group]);
        url.set_query(Some("$select=id"));
        match self
            .execute_json::<serde_json::Value>(Method::GET, &url, None)
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// One page of users delta.
    pub async fn users_delta(&self, from: &DeltaCursor) -> Result<Page<DeltaItem>, GraphError> {
        let url = match from {
            DeltaCursor::Start => format!("/v1.0/users/delta?$select={USER_SELECT}"),
            // The link remembers the `$select` of the round that produced it.
            DeltaCursor::Link(link) => link.clone(),
        };
        let page = self.page::<RawDeltaItem>(&url).await?;
        Ok(Page {
            items: page.items.into_iter().map(DeltaItem::from).collect(),
            next_link: page.next_link,
            delta_link: page.delta_link,
            skipped: page.skipped,
        })
    }

    /// One page of the ids of every guest.
    pub async fn guests(&self, next: Option<&str>) -> Result<Page<ObjectId>, GraphError> {
        #[derive(Deserialize)]
        struct Id {
            id: ObjectId,
        }
        let page = self.page::<Id>(next.unwrap_or(GUESTS_QUERY)).await?;
        Ok(Page {
            items: page.items.into_iter().map(|u| u.id).collect(),
            next_link: page.next_link,
            delta_link: page.delta_link,
            skipped: page.skipped,
        })
    }
}

/// A users delta item as Graph sends it. Only what the reconciler looks at is read: Graph may
/// send only the changed properties, so everything but the id is optional.
#[derive(Deserialize)]
struct RawDeltaItem {
    id: ObjectId,
    #[serde(rename = "userType")]
    user_type: Option<String>,
    #[serde(rename = "@removed")]
    removed: Option<Removed>,
}

#[derive(Deserialize)]
struct Removed {
    /// `changed` (soft-deleted, restorable) or `deleted` (permanently).
    #[serde(default)]
    reason: String,
}

impl From<RawDeltaItem> for DeltaItem {
    fn from(item: RawDeltaItem) -> Self {
        match item.removed {
            Some(removed) => DeltaItem::Removed {
                id: item.id,
                permanently: removed.reason.eq_ignore_ascii_case("deleted"),
            },
            None => DeltaItem::Changed {
                id: item.id,
                user_type: item.user_type,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(json: serde_json::Value) -> DeltaItem {
        serde_json::from_value::<RawDeltaItem>(json).unwrap().into()
    }

    #[test]
    fn delta_items_are_typed() {
        let id = "4f8a2c1e-9b3d-4e5f-8a7b-6c5d4e3f2a1b";
        let oid = ObjectId::parse(id).unwrap();
        assert_eq!(
            item(serde_json::json!({"id": id, "userType": "Guest", "displayName": "x"})),
            DeltaItem::Changed {
                id: oid.clone(),
                user_type: Some("Guest".into())
            }
        );
        assert_eq!(
            item(serde_json::json!({"id": id})),
            DeltaItem::Changed {
                id: oid.clone(),
                user_type: None
            },
            "a partial item"
        );
        assert_eq!(
            item(serde_json::json!({"id": id, "@removed": {"reason": "deleted"}})),
            DeltaItem::Removed {
                id: oid.clone(),
                permanently: true
            }
        );
        assert_eq!(
            item(serde_json::json!({"id": id, "@removed": {"reason": "changed"}})),
            DeltaItem::Removed {
                id: oid,
                permanently: false
            }
        );
        assert!(
            serde_json::from_value::<RawDeltaItem>(serde_json::json!({"id": "alice@x.com"}))
                .is_err()
        );
        assert!(
            serde_json::from_value::<RawDeltaItem>(serde_json::json!({"userType": "Guest"}))
                .is_err()
        );
    }
}
