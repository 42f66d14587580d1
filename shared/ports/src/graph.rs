//! Microsoft Graph, as the application needs it.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use secrecy::SecretString;
use serde::Deserialize;
use shadowsync_core::{Clock, GraphUser, ObjectId, UserLookup};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

#[async_trait]
pub trait Graph: Send + Sync {
    /// What Graph says about user `id` now: active, soft-deleted (in deleted items) or gone.
    async fn user(&self, id: &ObjectId) -> Result<UserLookup, GraphError>;

    /// The user whose userPrincipalName is `upn`, if any (the administrator's lookups).
    async fn user_by_principal_name(&self, upn: &str) -> Result<Option<GraphUser>, GraphError>;

    /// Whether `user` is a member of `group`, directly or through nested groups.
    async fn is_member_of(&self, user: &ObjectId, group: &ObjectId) -> Result<bool, GraphError>;

    /// Whether `group` exists. Graph's membership check answers "not a member" for a group
    /// that does not exist, so a deleted or mistyped scope group must be asked about itself.
    async fn group_exists(&self, group: &ObjectId) -> Result<bool, GraphError>;

    /// One page of users delta: the first page of a full round, or the page behind a link
    /// (a nextLink, or the deltaLink of the previous round).
    async fn users_delta(&self, from: &DeltaCursor) -> Result<Page<DeltaItem>, GraphError>;

    /// One page of the ids of every guest (`userType eq 'Guest'`): the first page, or the one
    /// behind a nextLink.
    async fn guests(&self, next: Option<&str>) -> Result<Page<ObjectId>, GraphError>;

    /// The direct members of `group` (users, groups and other objects), every page.
    async fn group_members(&self, group: &ObjectId) -> Result<Vec<Member>, GraphError>;

    /// One page of groups delta for `group` alone (`$filter=id eq`, `$select=members`): a full
    /// round lists its members as added, a round from the last deltaLink what changed since.
    async fn group_delta(
        &self,
        group: &ObjectId,
        from: &DeltaCursor,
    ) -> Result<Page<GroupChange>, GraphError>;

    /// Creates a subscription (Graph validates the notification URLs with a handshake first).
    async fn create_subscription(
        &self,
        request: &NewSubscription,
    ) -> Result<Subscription, GraphError>;

    /// One subscription; `None` if Graph does not know it (deleted or expired).
    async fn subscription(&self, id: &SubscriptionId) -> Result<Option<Subscription>, GraphError>;

    /// Every subscription of this application.
    async fn subscriptions(&self) -> Result<Vec<Subscription>, GraphError>;

    /// Asks for a new expiration; returns the one Graph granted, or `None` if Graph does not
    /// know the subscription any more.
    async fn renew_subscription(
        &self,
        id: &SubscriptionId,
        expiration: DateTime<Utc>,
    ) -> Result<Option<DateTime<Utc>>, GraphError>;

    /// Answers `reauthorizationRequired`; false if Graph does not know the subscription.
    async fn reauthorize_subscription(&self, id: &SubscriptionId) -> Result<bool, GraphError>;

    /// Deletes a subscription; one that is already gone is fine.
    async fn delete_subscription(&self, id: &SubscriptionId) -> Result<(), GraphError>;

    /// The tenant and application this client is configured for: what shadowsync's accounts
    /// were made from, and must not silently change.
    fn identity(&self) -> GraphIdentity;

    /// Graph's clock: decisions about Graph's objects (is a subscription about to expire?)
    /// are made against Graph's time, not the local one.
    fn clock(&self) -> Arc<dyn Clock>;

    /// How many times Graph throttled since the last call (for metrics).
    fn take_throttled(&self) -> u64 {
        0
    }
}

/// Who shadowsync is in Graph: the tenant it reads and the application it reads as.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct GraphIdentity {
    /// The configured tenant (a GUID or a domain name).
    pub tenant: String,
    pub client_id: String,
}

impl fmt::Display for GraphIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "tenant {}, application {}", self.tenant, self.client_id)
    }
}

/// Where a page of users delta starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeltaCursor {
    /// The first page of a full round (every user).
    Start,
    /// A link Graph gave: a nextLink within a round, or the deltaLink that ended the last one.
    /// Followed as given (it remembers the round's `$select`).
    Link(String),
}

/// One page of a Graph collection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// `@odata.nextLink`: more pages follow.
    pub next_link: Option<String>,
    /// `@odata.deltaLink`: the last page of a delta round; where the next round starts.
    pub delta_link: Option<String>,
    /// Items that were left out because they could not be read (no usable id, say).
    pub skipped: usize,
}

impl<T> Default for Page<T> {
    fn default() -> Self {
        Self {
            items: Vec::new(),
            next_link: None,
            delta_link: None,
            skipped: 0,
        }
    }
}

/// One item of a users delta page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeltaItem {
    /// Created or changed. Delta items may carry only the changed properties: `user_type` is
    /// `None` when Graph left it out (which says nothing about whether the user is a guest).
    Changed {
        id: ObjectId,
        user_type: Option<String>,
    },
    /// `@removed`: soft-deleted (`changed`, restorable for 30 days) or permanently deleted.
    Removed { id: ObjectId, permanently: bool },
}

impl DeltaItem {
    pub fn id(&self) -> &ObjectId {
        match self {
            Self::Changed { id, .. } | Self::Removed { id, .. } => id,
        }
    }
}

/// What kind of directory object a group member is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MemberKind {
    User,
    Group,
    /// A device, a service principal, a contact…: never a guest.
    Other,
}

impl MemberKind {
    /// From the member's `@odata.type` (`#microsoft.graph.user`, any case).
    pub fn from_odata_type(odata_type: &str) -> Self {
        match odata_type
            .trim_start_matches('#')
            .to_ascii_lowercase()
            .as_str()
        {
            "microsoft.graph.user" => Self::User,
            "microsoft.graph.group" => Self::Group,
            _ => Self::Other,
        }
    }
}

/// A member of a group.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Member {
    pub id: ObjectId,
    pub kind: MemberKind,
}

/// One group's item of a groups delta page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupChange {
    pub group: ObjectId,
    /// `@removed`: the group itself was deleted.
    pub deleted: bool,
    /// `members@delta` without `@removed`.
    pub added: Vec<Member>,
    /// `members@delta` with `@removed`: the membership ended, or the member was deleted.
    pub removed: Vec<Member>,
}

/// A Graph subscription id. Graph's are GUIDs; anything outside `[A-Za-z0-9_-]` (an id from a
/// corrupt record, say) is refused rather than allowed to steer a request elsewhere.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SubscriptionId(String);

impl SubscriptionId {
    pub fn parse(s: &str) -> Result<Self, GraphError> {
        let ok = !s.is_empty()
            && s.len() <= 128
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if ok {
            Ok(Self(s.to_string()))
        } else {
            Err(GraphError::Config(format!(
                "{:?} is not a Graph subscription id",
                s.chars().take(80).collect::<String>()
            )))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for SubscriptionId {
    type Error = GraphError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<SubscriptionId> for String {
    fn from(id: SubscriptionId) -> Self {
        id.0
    }
}

impl fmt::Display for SubscriptionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a new subscription asks for.
#[derive(Debug, Clone)]
pub struct NewSubscription {
    pub resource: String,
    pub change_type: String,
    pub notification_url: String,
    pub lifecycle_url: String,
    /// Echoed by Graph in every notification; the webhook checks it.
    pub client_state: SecretString,
    pub expiration: DateTime<Utc>,
}

/// A subscription as Graph returns it.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Subscription {
    pub id: SubscriptionId,
    #[serde(default)]
    pub resource: String,
    #[serde(default)]
    pub change_type: String,
    #[serde(default)]
    pub notification_url: String,
    #[serde(default)]
    pub lifecycle_notification_url: Option<String>,
    /// Graph may leave it out of what it returns.
    #[serde(default, deserialize_with = "secret")]
    pub client_state: Option<SecretString>,
    pub expiration_date_time: DateTime<Utc>,
}

fn secret<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<SecretString>, D::Error> {
    Ok(Option::<String>::deserialize(d)?.map(SecretString::from))
}

/// Everything that can go wrong talking to the identity platform or Microsoft Graph.
///
/// No variant ever carries a client secret, a private key or an access token.
#[derive(Debug, thiserror::Error)]
pub enum GraphError {
    /// The token endpoint refused or failed. `description` is Entra's `error_description`
    /// (it starts with the `AADSTS…` code), with any echo of the client secret removed.
    #[error("token request failed (status {status:?}): {error}: {description}")]
    Token {
        /// HTTP status of the token response (`None` if there was no usable response).
        status: Option<u16>,
        /// OAuth `error` (`invalid_client`, `unauthorized_client`, …).
        error: String,
        description: String,
    },
    /// Graph answered `429 Too Many Requests` and the retries ran out, or the requested wait
    /// (`Retry-After`) was longer than the client waits: the caller should come back later.
    #[error("throttled by Microsoft Graph (retry after {retry_after:?})")]
    Throttled { retry_after: Option<Duration> },
    /// Graph answered 5xx (after the retries, if any, ran out).
    #[error("Microsoft Graph server error {status}: {code}: {message}")]
    Server {
        status: u16,
        code: String,
        message: String,
    },
    /// Graph answered 4xx (other than 429). `404` is `Client { status: 404, .. }`.
    #[error("Microsoft Graph rejected the request with {status}: {code}: {message}")]
    Client {
        status: u16,
        code: String,
        message: String,
    },
    /// The request (connect, send or read of the body) took too long.
    #[error("request to Microsoft Graph or the identity platform timed out")]
    Timeout,
    /// Connection-level failure (DNS, refused, reset, TLS…).
    #[error("network error talking to Microsoft Graph or the identity platform: {0}")]
    Network(#[source] crate::BoxError),
    /// A success response whose body could not be decoded.
    #[error("could not decode the response: {0}")]
    Decode(#[source] crate::BoxError),
    /// Bad configuration (unreadable certificate or key, invalid endpoint…).
    #[error("Graph client configuration error: {0}")]
    Config(String),
    /// A link (a delta or next link, kept or received) outside the configured Graph endpoint:
    /// the token is never sent there. A kept delta link of an endpoint configured before is
    /// only stale.
    #[error("refusing to send the Graph token to {origin}, which is not under {endpoint}")]
    ForeignLink { origin: String, endpoint: String },
}

impl GraphError {
    /// Whether trying the same request later could succeed: throttling, 5xx, timeouts and
    /// network failures yes; 4xx (bad request, forbidden, not found…) and configuration no.
    pub fn is_retryable(&self) -> bool {
        match self {
            GraphError::Throttled { .. } | GraphError::Timeout | GraphError::Network(_) => true,
            GraphError::Server { status, .. } => is_retryable_server_status(*status),
            GraphError::Token { status, .. } => match status {
                Some(s) => *s == 429 || is_retryable_server_status(*s),
                None => false,
            },
            GraphError::Client { .. }
            | GraphError::Decode(_)
            | GraphError::Config(_)
            | GraphError::ForeignLink { .. } => false,
        }
    }

    /// The HTTP status Graph answered, for `Server`, `Client` and `Throttled`.
    pub fn status(&self) -> Option<u16> {
        match self {
            GraphError::Server { status, .. } | GraphError::Client { status, .. } => Some(*status),
            GraphError::Throttled { .. } => Some(429),
            _ => None,
        }
    }

    /// Graph's `error.code` (`Request_ResourceNotFound`, `syncStateNotFound`, …), if any.
    pub fn code(&self) -> Option<&str> {
        match self {
            GraphError::Server { code, .. } | GraphError::Client { code, .. } => Some(code),
            _ => None,
        }
    }

    /// Access refused: `403` (`Authorization_RequestDenied`: a permission removed, consent
    /// revoked), `401` even with a fresh token, or the token endpoint refusing the credential
    /// (an expired secret or certificate, the application disabled or deleted: `4xx` other
    /// than 429). Nothing can be known about the resource then, which is not its absence.
    pub fn is_access_denied(&self) -> bool {
        match self {
            GraphError::Client { status, .. } => matches!(status, 401 | 403),
            GraphError::Token {
                status: Some(status),
                ..
            } => (400..500).contains(status) && *status != 429,
            _ => false,
        }
    }

    /// `404 Not Found`.
    pub fn is_not_found(&self) -> bool {
        self.status() == Some(404)
    }

    /// Graph no longer knows a delta token: the documented answer is `410 Gone` with
    /// `syncStateNotFound` (the docs also mention the code with a plain 400, and
    /// `resyncRequired`).
    pub fn is_sync_state_lost(&self) -> bool {
        self.status() == Some(410)
            || self.code().is_some_and(|c| {
                c.eq_ignore_ascii_case("syncStateNotFound")
                    || c.eq_ignore_ascii_case("resyncRequired")
            })
    }

    /// A link outside the configured endpoint ([`GraphError::ForeignLink`]).
    pub fn is_foreign_link(&self) -> bool {
        matches!(self, GraphError::ForeignLink { .. })
    }

    /// `Server`, `Client` or `Throttled` from a non-success Graph response and its body
    /// (`{"error":{"code":"…","message":"…"}}`; anything else gives an empty code and a short
    /// excerpt of the body as the message).
    pub fn from_response(status: u16, body: &[u8], retry_after: Option<Duration>) -> Self {
        if status == 429 {
            return GraphError::Throttled { retry_after };
        }
        let (code, message) = parse_graph_error(body);
        if status >= 500 {
            GraphError::Server {
                status,
                code,
                message,
            }
        } else {
            GraphError::Client {
                status,
                code,
                message,
            }
        }
    }

    /// A Graph client error with its code, as Graph would answer it (for adapters and fakes).
    pub fn client(status: u16, code: &str, message: impl Into<String>) -> Self {
        GraphError::Client {
            status,
            code: code.into(),
            message: message.into(),
        }
    }
}

/// The 5xx statuses worth retrying.
pub fn is_retryable_server_status(status: u16) -> bool {
    matches!(status, 500 | 502 | 503 | 504)
}

fn parse_graph_error(body: &[u8]) -> (String, String) {
    #[derive(Deserialize)]
    struct Envelope {
        error: Inner,
    }
    #[derive(Deserialize)]
    struct Inner {
        #[serde(default)]
        code: String,
        #[serde(default)]
        message: String,
    }
    match serde_json::from_slice::<Envelope>(body) {
        Ok(Envelope { error }) => (error.code, error.message),
        Err(_) => {
            let text = String::from_utf8_lossy(body);
            (String::new(), text.chars().take(200).collect())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_graph_error_body() {
        let e = GraphError::from_response(
            404,
            br#"{"error":{"code":"Request_ResourceNotFound","message":"Resource 'x' does not exist","innerError":{}}}"#,
            None,
        );
        assert!(e.is_not_found());
        assert_eq!(e.code(), Some("Request_ResourceNotFound"));
        assert!(!e.is_retryable());
        assert!(e.to_string().contains("does not exist"));
    }

    #[test]
    fn classifies_statuses() {
        let e = GraphError::from_response(503, b"<html>busy</html>", None);
        assert!(matches!(e, GraphError::Server { status: 503, .. }));
        assert!(e.is_retryable());
        assert!(!GraphError::from_response(501, b"", None).is_retryable());
        assert!(!GraphError::from_response(400, b"", None).is_retryable());
        assert!(!GraphError::from_response(403, b"", None).is_retryable());
        let t = GraphError::from_response(429, b"", Some(Duration::from_secs(3)));
        assert!(matches!(t, GraphError::Throttled { retry_after: Some(d) } if d.as_secs() == 3));
        assert!(t.is_retryable());
        assert!(GraphError::Timeout.is_retryable());
        assert!(!GraphError::Config("x".into()).is_retryable());
    }

    #[test]
    fn expired_sync_state_is_recognised() {
        assert!(GraphError::client(410, "syncStateNotFound", "").is_sync_state_lost());
        assert!(GraphError::client(400, "SyncStateNotFound", "").is_sync_state_lost());
        assert!(GraphError::client(410, "resyncRequired", "").is_sync_state_lost());
        assert!(!GraphError::client(400, "Request_BadRequest", "").is_sync_state_lost());
        assert!(!GraphError::Timeout.is_sync_state_lost());
    }

    #[test]
    fn only_graph_ids_are_subscription_ids() {
        assert!(SubscriptionId::parse("7f105c7d-2dc5-4530-97cd-4e7ae6534c07").is_ok());
        for bad in ["", "..", "../users", "a?b", "a/b", "a%2F"] {
            assert!(SubscriptionId::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn parses_graphs_seven_digit_timestamps_and_hides_the_client_state() {
        let s: Subscription = serde_json::from_value(serde_json::json!({
            "id": "a", "clientState": "s3cret-state",
            "expirationDateTime": "2030-01-02T03:04:05.1234567Z"
        }))
        .unwrap();
        assert_eq!(
            s.expiration_date_time.to_rfc3339(),
            "2030-01-02T03:04:05.123456700+00:00"
        );
        assert!(!format!("{s:?}").contains("s3cret"));
        assert!(serde_json::from_value::<Subscription>(serde_json::json!({
            "id": "../x", "expirationDateTime": "2030-01-02T03:04:05Z"
        }))
        .is_err());
    }
}
