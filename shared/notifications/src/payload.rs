//! Graph's notification items: authentication and translation into queue jobs.
//!
//! Shape (changeNotification): `{subscriptionId, subscriptionExpirationDateTime, changeType,
//! resource, resourceData: {"@odata.type", "@odata.id", id}, clientState, tenantId}`; lifecycle
//! items carry `lifecycleEvent` instead of a resource.

use crate::metrics::RejectReason;
use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use shadowsync_core::ObjectId;
use shadowsync_queue::{ChangeType, Job, JobSource, LifecycleEvent};
use subtle::ConstantTimeEq;
use uuid::Uuid;

const USER_ODATA_TYPE: &str = "#microsoft.graph.user";
const GROUP_ODATA_TYPE: &str = "#microsoft.graph.group";

/// Graph's subscription ids are GUIDs (36 characters). A longer one is not Graph's; it would
/// travel on in the job, the queue and the logs.
const MAX_SUBSCRIPTION_ID_BYTES: usize = 64;

/// The body of a delivery. Items stay raw so that one odd item is discarded alone instead of
/// failing the whole batch.
#[derive(Debug, Deserialize)]
pub(crate) struct Collection {
    pub value: Vec<serde_json::Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawItem {
    subscription_id: Option<String>,
    change_type: Option<String>,
    resource: Option<String>,
    resource_data: Option<RawResourceData>,
    client_state: Option<String>,
    tenant_id: Option<String>,
    /// Some lifecycle deliveries name the tenant `organizationId` instead of `tenantId`.
    organization_id: Option<String>,
    lifecycle_event: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct RawResourceData {
    #[serde(rename = "@odata.type")]
    odata_type: Option<String>,
    id: Option<String>,
}

/// What the webhook checks every item against.
pub(crate) struct Expected<'a> {
    pub client_state: &'a SecretString,
    /// During a rotation, the client state being rotated out.
    pub previous_client_state: Option<&'a SecretString>,
    pub tenant_id: Uuid,
}

/// An authenticated, understood item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Item {
    Change {
        user_id: ObjectId,
        change_type: Option<ChangeType>,
        subscription_id: Option<String>,
    },
    /// A group changed (a scope group, or one nested in it): its job reads what changed.
    GroupChange {
        group_id: ObjectId,
        subscription_id: Option<String>,
    },
    Lifecycle {
        event: LifecycleEvent,
        subscription_id: String,
    },
}

impl Item {
    pub fn into_job(self, received_at: DateTime<Utc>) -> Job {
        match self {
            Item::Change {
                user_id,
                change_type,
                subscription_id,
            } => Job::Converge {
                user_id,
                change_type,
                subscription_id,
                received_at,
                source: JobSource::Notification,
            },
            Item::GroupChange { group_id, .. } => Job::GroupChanged {
                group_id,
                received_at,
                source: JobSource::Notification,
            },
            Item::Lifecycle {
                event,
                subscription_id,
            } => Job::Lifecycle {
                event,
                subscription_id,
                received_at,
            },
        }
    }

    pub fn subscription_id(&self) -> Option<&str> {
        match self {
            Item::Change {
                subscription_id, ..
            }
            | Item::GroupChange {
                subscription_id, ..
            } => subscription_id.as_deref(),
            Item::Lifecycle {
                subscription_id, ..
            } => Some(subscription_id),
        }
    }
}

/// A discarded item, with what is safe to log about it.
#[derive(Debug)]
pub(crate) struct Rejection {
    pub reason: RejectReason,
    /// As sent, shortened: it is untrusted input.
    pub subscription_id: Option<String>,
}

/// Authenticates one item, then translates it. Authentication comes first so that nothing
/// about an unauthenticated item's content influences what happens next beyond its discarding.
pub(crate) fn classify(raw: serde_json::Value, expected: &Expected<'_>) -> Result<Item, Rejection> {
    let item: RawItem = serde_json::from_value(raw).map_err(|_| Rejection {
        reason: RejectReason::MalformedItem,
        subscription_id: None,
    })?;
    let reject = |reason| Rejection {
        reason,
        subscription_id: item.subscription_id.as_deref().map(shorten),
    };

    let given = item.client_state.as_deref();
    let matches = client_state_matches(given, expected.client_state)
        | expected
            .previous_client_state
            .is_some_and(|previous| client_state_matches(given, previous));
    if !matches {
        return Err(reject(RejectReason::BadClientState));
    }
    let tenant = item
        .tenant_id
        .as_deref()
        .or(item.organization_id.as_deref());
    if !tenant_matches(tenant, expected.tenant_id) {
        return Err(reject(RejectReason::WrongTenant));
    }
    if item
        .subscription_id
        .as_deref()
        .is_some_and(|id| id.len() > MAX_SUBSCRIPTION_ID_BYTES)
    {
        return Err(reject(RejectReason::MalformedItem));
    }

    if let Some(event) = item.lifecycle_event.as_deref() {
        let event =
            lifecycle_event(event).ok_or_else(|| reject(RejectReason::UnknownLifecycleEvent))?;
        let subscription_id = item
            .subscription_id
            .clone()
            .filter(|s| !s.is_empty())
            .ok_or_else(|| reject(RejectReason::MalformedItem))?;
        return Ok(Item::Lifecycle {
            event,
            subscription_id,
        });
    }

    let data = item.resource_data.as_ref();
    let odata_type = data.and_then(|d| d.odata_type.as_deref());
    let path_group = item.resource.as_deref().and_then(group_id_from_resource);
    if odata_type.is_some_and(|t| t.eq_ignore_ascii_case(GROUP_ODATA_TYPE)) || path_group.is_some()
    {
        let group_id = data
            .and_then(|d| d.id.as_deref())
            .or(path_group)
            .and_then(|id| Uuid::parse_str(id).ok())
            .and_then(|id| ObjectId::parse(&id.hyphenated().to_string()).ok())
            .ok_or_else(|| reject(RejectReason::MalformedItem))?;
        return Ok(Item::GroupChange {
            group_id,
            subscription_id: item.subscription_id.clone().filter(|s| !s.is_empty()),
        });
    }
    let type_is_user = data
        .and_then(|d| d.odata_type.as_deref())
        .map(|t| t.eq_ignore_ascii_case(USER_ODATA_TYPE));
    // `Some(None)`: there is a resource, and it is not a single user.
    let path_user = item.resource.as_deref().map(user_id_from_resource);
    if type_is_user == Some(false) || matches!(path_user, Some(None)) {
        return Err(reject(RejectReason::UnsupportedResource));
    }
    let user_id = data
        .and_then(|d| d.id.as_deref())
        .or(path_user.flatten())
        // Entra object ids are GUIDs; normalising them keeps one queue group per user.
        .and_then(|id| Uuid::parse_str(id).ok())
        .and_then(|id| ObjectId::parse(&id.hyphenated().to_string()).ok())
        .ok_or_else(|| reject(RejectReason::MalformedItem))?;

    Ok(Item::Change {
        user_id,
        change_type: item.change_type.as_deref().and_then(change_type),
        subscription_id: item.subscription_id.clone().filter(|s| !s.is_empty()),
    })
}

/// Constant-time, so response timing reveals nothing about how much of a guess was right. A
/// missing or empty `clientState` never matches, even if the configured secret were empty.
fn client_state_matches(given: Option<&str>, secret: &SecretString) -> bool {
    match given {
        Some(given) if !given.is_empty() => given
            .as_bytes()
            .ct_eq(secret.expose_secret().as_bytes())
            .into(),
        _ => false,
    }
}

/// GUIDs compare case-insensitively; parsing handles that and rejects non-GUIDs.
fn tenant_matches(given: Option<&str>, expected: Uuid) -> bool {
    given.and_then(|t| Uuid::parse_str(t.trim()).ok()) == Some(expected)
}

/// `Users/{id}` (Graph's spelling) or `/users/{id}` → `Some(id)`; anything else (`Groups/…`,
/// `Users/{id}/messages`) → `None`.
fn user_id_from_resource(resource: &str) -> Option<&str> {
    let mut parts = resource.trim_start_matches('/').split('/');
    match (parts.next(), parts.next(), parts.next()) {
        (Some(kind), Some(id), None) if kind.eq_ignore_ascii_case("users") && !id.is_empty() => {
            Some(id)
        }
        _ => None,
    }
}

/// `Groups/{id}` (Graph's spelling) or `/groups/{id}` → `Some(id)`.
fn group_id_from_resource(resource: &str) -> Option<&str> {
    let mut parts = resource.trim_start_matches('/').split('/');
    match (parts.next(), parts.next(), parts.next()) {
        (Some(kind), Some(id), None) if kind.eq_ignore_ascii_case("groups") && !id.is_empty() => {
            Some(id)
        }
        _ => None,
    }
}

/// Only a hint (converge re-reads the user), so an unknown value is dropped rather than the item.
fn change_type(value: &str) -> Option<ChangeType> {
    match value.to_ascii_lowercase().as_str() {
        "created" => Some(ChangeType::Created),
        "updated" => Some(ChangeType::Updated),
        "deleted" => Some(ChangeType::Deleted),
        _ => None,
    }
}

fn lifecycle_event(value: &str) -> Option<LifecycleEvent> {
    [
        (
            "reauthorizationRequired",
            LifecycleEvent::ReauthorizationRequired,
        ),
        ("subscriptionRemoved", LifecycleEvent::SubscriptionRemoved),
        ("missed", LifecycleEvent::Missed),
    ]
    .into_iter()
    .find(|(name, _)| name.eq_ignore_ascii_case(value))
    .map(|(_, event)| event)
}

/// Untrusted strings go into logs shortened, so a forged item cannot flood them.
fn shorten(s: &str) -> String {
    s.chars().take(64).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const TENANT: &str = "84bd8158-6d4d-4958-8b9f-9d6445542f95";
    const USER: &str = "8e52ba0a-7a33-4e58-b2b1-7f3f6a3c2d11";

    fn check(item: serde_json::Value) -> Result<Item, RejectReason> {
        let secret = SecretString::from("secretClientValue");
        let expected = Expected {
            client_state: &secret,
            previous_client_state: None,
            tenant_id: TENANT.parse().unwrap(),
        };
        classify(item, &expected).map_err(|r| r.reason)
    }

    fn user_item() -> serde_json::Value {
        json!({
            "subscriptionId": "sub-1",
            "changeType": "updated",
            "resource": format!("Users/{USER}"),
            "resourceData": {"@odata.type": "#Microsoft.Graph.User", "id": USER},
            "clientState": "secretClientValue",
            "tenantId": TENANT,
        })
    }

    #[test]
    fn resource_paths() {
        assert_eq!(user_id_from_resource("Users/abc"), Some("abc"));
        assert_eq!(user_id_from_resource("/users/abc"), Some("abc"));
        assert_eq!(user_id_from_resource("Users/abc/messages"), None);
        assert_eq!(user_id_from_resource("Groups/abc"), None);
        assert_eq!(user_id_from_resource("Users/"), None);
        assert_eq!(user_id_from_resource("Users"), None);
    }

    #[test]
    fn valid_user_item() {
        assert_eq!(
            check(user_item()),
            Ok(Item::Change {
                user_id: ObjectId::parse(USER).unwrap(),
                change_type: Some(ChangeType::Updated),
                subscription_id: Some("sub-1".into()),
            })
        );
    }

    #[test]
    fn client_state_must_match_exactly() {
        for bad in [
            json!(null),
            json!(""),
            json!("secretClientValu"),
            json!("SECRETCLIENTVALUE"),
        ] {
            let mut item = user_item();
            item["clientState"] = bad;
            assert_eq!(check(item), Err(RejectReason::BadClientState));
        }
        let mut item = user_item();
        item.as_object_mut().unwrap().remove("clientState");
        assert_eq!(check(item), Err(RejectReason::BadClientState));
    }

    #[test]
    fn during_a_rotation_the_previous_client_state_is_accepted_too() {
        let (current, previous) = (
            SecretString::from("newClientValue"),
            SecretString::from("secretClientValue"),
        );
        let rotating = Expected {
            client_state: &current,
            previous_client_state: Some(&previous),
            tenant_id: TENANT.parse().unwrap(),
        };
        assert!(classify(user_item(), &rotating).is_ok(), "the old one");
        let mut item = user_item();
        item["clientState"] = json!("newClientValue");
        assert!(classify(item, &rotating).is_ok(), "the new one");
        let mut item = user_item();
        item["clientState"] = json!("neitherClientValue");
        assert_eq!(
            classify(item, &rotating).map_err(|r| r.reason),
            Err(RejectReason::BadClientState)
        );
        let done = Expected {
            previous_client_state: None,
            ..rotating
        };
        assert!(
            classify(user_item(), &done).is_err(),
            "refused once it is over"
        );
    }

    #[test]
    fn tenant_compares_as_guid() {
        let mut item = user_item();
        item["tenantId"] = json!(TENANT.to_uppercase());
        assert!(check(item).is_ok());
        for bad in [
            json!(null),
            json!("contoso"),
            json!("00000000-0000-0000-0000-000000000000"),
        ] {
            let mut item = user_item();
            item["tenantId"] = bad;
            assert_eq!(check(item), Err(RejectReason::WrongTenant));
        }
    }

    #[test]
    fn user_id_is_normalised_and_falls_back_to_resource() {
        let mut item = user_item();
        item.as_object_mut().unwrap().remove("resourceData");
        item["resource"] = json!(format!("Users/{}", USER.to_uppercase()));
        assert!(
            matches!(check(item), Ok(Item::Change { user_id, .. }) if user_id.as_str() == USER)
        );
    }

    #[test]
    fn a_group_change_becomes_the_group_s_job() {
        const GROUP: &str = "1b2c3d4e-5f60-4718-8293-a4b5c6d7e8f9";
        let mut group = user_item();
        group["resource"] = json!(format!("Groups/{}", GROUP.to_uppercase()));
        group["resourceData"]["@odata.type"] = json!("#Microsoft.Graph.Group");
        group["resourceData"]["id"] = json!(GROUP);
        let item = check(group.clone()).unwrap();
        assert!(
            matches!(&item, Item::GroupChange { group_id, subscription_id: Some(_) } if group_id.as_str() == GROUP),
            "{item:?}"
        );
        let job = item.into_job(Utc::now());
        assert!(matches!(
            job,
            Job::GroupChanged {
                source: JobSource::Notification,
                ..
            }
        ));
        // The resource alone names it too; a group id that is not a GUID is malformed.
        group.as_object_mut().unwrap().remove("resourceData");
        assert!(matches!(check(group.clone()), Ok(Item::GroupChange { .. })));
        group["resource"] = json!("Groups/not-a-guid");
        assert_eq!(check(group), Err(RejectReason::MalformedItem));
    }

    #[test]
    fn non_users_and_garbage() {
        let mut application = user_item();
        application["resource"] = json!("Applications/1b2c");
        application["resourceData"]["@odata.type"] = json!("#Microsoft.Graph.Application");
        assert_eq!(check(application), Err(RejectReason::UnsupportedResource));

        let mut not_guid = user_item();
        not_guid["resource"] = json!("Users/alice");
        not_guid["resourceData"]["id"] = json!("alice");
        assert_eq!(check(not_guid), Err(RejectReason::MalformedItem));

        assert_eq!(check(json!("a string")), Err(RejectReason::MalformedItem));
        let mut wrong_type = user_item();
        wrong_type["resource"] = json!(42);
        assert_eq!(check(wrong_type), Err(RejectReason::MalformedItem));
    }

    #[test]
    fn subscription_id_longer_than_a_guid_allows_is_malformed() {
        let mut item = user_item();
        item["subscriptionId"] = json!("s".repeat(MAX_SUBSCRIPTION_ID_BYTES));
        assert!(check(item).is_ok());
        for long in [
            "s".repeat(MAX_SUBSCRIPTION_ID_BYTES + 1),
            // Bytes, not characters: 33 two-byte characters are 66 bytes.
            "é".repeat(33),
        ] {
            let mut item = user_item();
            item["subscriptionId"] = json!(long);
            assert_eq!(check(item.clone()), Err(RejectReason::MalformedItem));
            item["lifecycleEvent"] = json!("missed");
            assert_eq!(check(item), Err(RejectReason::MalformedItem));
        }
    }

    #[test]
    fn unknown_change_type_is_only_a_missing_hint() {
        let mut item = user_item();
        item["changeType"] = json!("unknownFutureValue");
        assert!(matches!(
            check(item),
            Ok(Item::Change {
                change_type: None,
                ..
            })
        ));
    }
}
