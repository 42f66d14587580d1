//! The application's one error type. Each leaf error (Graph, directory, state, queue) says
//! whether trying again can help; this type only adds what the application itself knows.

use shadowsync_ports::{DirectoryError, GraphError};
use shadowsync_queue::QueueError;
use shadowsync_state::StateError;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum AppError {
    /// A Graph call failed; `action` says which (`reading the user`, `creating the
    /// subscription`…). The message includes Graph's own.
    #[error("{action}: {source}")]
    Graph {
        action: &'static str,
        #[source]
        source: GraphError,
    },
    #[error("directory: {0}")]
    Directory(#[from] DirectoryError),
    #[error("state: {0}")]
    State(#[from] StateError),
    #[error("queue: {0}")]
    Queue(#[from] QueueError),
    /// Graph already has a subscription for our resource and change types (409) that is not
    /// ours (another notification URL), so we can neither create nor adopt one.
    #[error(
        "Graph already has subscription {existing_id} on {resource} (notificationUrl {existing_url}); \
         ours ({our_url}) cannot be created next to it. Delete it or configure shadowsync to use its URL"
    )]
    SubscriptionConflict {
        existing_id: String,
        existing_url: String,
        resource: String,
        our_url: String,
    },
    /// Graph answered successfully with something that cannot be used.
    #[error("unexpected answer from Microsoft Graph while {action}: {detail}")]
    Unexpected {
        action: &'static str,
        detail: String,
    },
    /// This host was built without a part the work needs (AD out of reach, no subscription
    /// configured): another host of the deployment does that work.
    #[error("{0} is not available in this host")]
    Missing(&'static str),
    /// A job needs a part this host lacks but another host of the deployment has (the
    /// connector reaches AD): it goes back on the queue for that host.
    #[error("{0} is not available in this host; left to another")]
    Elsewhere(&'static str),
    /// The configuration cannot work (found when the application is built).
    #[error("configuration: {0}")]
    Config(String),
    /// What the administrator asked about does not exist.
    #[error("{0}")]
    NotFound(String),
    /// Graph answers 404 for a user whose account exists, and has since `since`: acted on only
    /// once the 404 has lasted `confirm_after` (a replica behind answers 404 too).
    #[error("Graph answers 404 for this user since {since}; a read {confirm_after:?} after the first decides before the account changes")]
    NotFoundUnconfirmed {
        since: chrono::DateTime<chrono::Utc>,
        confirm_after: std::time::Duration,
        /// When the deciding read is due; `None`: read sooner (Graph just reported the user).
        retry_in: Option<std::time::Duration>,
    },
    /// A partner account to convert has no synced user in Entra ID yet: Entra Connect syncs it
    /// on its cycle (30 minutes by default), so the job waits and tries again.
    #[error("waiting for Entra Connect: {0}")]
    NotSyncedYet(String),
    /// Graph told us about a user it does not show yet (eventual consistency).
    #[error("Graph reported this user at {reported_at} but does not show it yet; reading again")]
    NotVisibleYet {
        reported_at: chrono::DateTime<chrono::Utc>,
    },
}

impl AppError {
    /// Can the same work succeed later without anyone changing anything? Decided by the leaf
    /// error; what the application finds itself (a conflict, a bad answer, a missing part, bad
    /// configuration) waits for a person.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Graph { source, .. } => source.is_retryable(),
            Self::Directory(e) => e.is_retryable(),
            Self::State(e) => e.is_retryable(),
            Self::Queue(e) => e.is_retryable(),
            // Waiting is the point: the next read decides.
            Self::NotFoundUnconfirmed { .. }
            | Self::NotVisibleYet { .. }
            | Self::NotSyncedYet(_) => true,
            Self::Elsewhere(_) => true,
            Self::SubscriptionConflict { .. }
            | Self::Unexpected { .. }
            | Self::Missing(_)
            | Self::Config(_)
            | Self::NotFound(_) => false,
        }
    }

    /// A short name of the kind of failure, for machines (Lambda's `errorType`, metrics).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Graph { .. } => "Graph",
            Self::Directory(_) => "Directory",
            Self::State(_) => "State",
            Self::Queue(_) => "Queue",
            Self::SubscriptionConflict { .. } => "SubscriptionConflict",
            Self::Unexpected { .. } => "Unexpected",
            Self::Missing(_) => "Missing",
            Self::Elsewhere(_) => "Elsewhere",
            Self::Config(_) => "Config",
            Self::NotFound(_) => "NotFound",
            Self::NotFoundUnconfirmed { .. } => "NotFoundUnconfirmed",
            Self::NotVisibleYet { .. } => "NotVisibleYet",
            Self::NotSyncedYet(_) => "NotSyncedYet",
        }
    }

    /// A dependency is down or overloaded (AD unreachable or busy, Graph failing or
    /// throttling past its budget): every job would fail the same way now, so the workers
    /// pause together, and what failed for this reason is tried again once it answers.
    pub fn is_unavailable(&self) -> bool {
        match self {
            Self::Directory(e) => e.is_retryable(),
            Self::Graph { source, .. } => matches!(
                source,
                GraphError::Throttled { .. }
                    | GraphError::Server { .. }
                    | GraphError::Timeout
                    | GraphError::Network(_)
            ),
            _ => false,
        }
    }

    /// When trying again is useful, where the application knows better than a backoff.
    pub fn retry_in(&self) -> Option<std::time::Duration> {
        match self {
            Self::NotFoundUnconfirmed { retry_in, .. } => *retry_in,
            _ => None,
        }
    }

    /// The Graph error underneath, if this is one.
    pub fn graph_error(&self) -> Option<&GraphError> {
        match self {
            Self::Graph { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// Names the Graph call a failure came from: `graph.user(id).await.doing("reading the user")?`.
pub trait Doing<T> {
    fn doing(self, action: &'static str) -> Result<T, AppError>;
}

impl<T> Doing<T> for Result<T, GraphError> {
    fn doing(self, action: &'static str) -> Result<T, AppError> {
        self.map_err(|source| AppError::Graph { action, source })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_leaf_decides_whether_to_retry() {
        let throttled: Result<(), _> = Err(GraphError::Throttled { retry_after: None });
        let e = throttled.doing("reading the user").unwrap_err();
        assert!(e.is_retryable());
        assert!(
            e.to_string().starts_with("reading the user: throttled"),
            "{e}"
        );
        let gone: Result<(), _> = Err(GraphError::client(403, "Authorization_RequestDenied", "x"));
        assert!(!gone.doing("x").unwrap_err().is_retryable());
        assert!(AppError::from(DirectoryError::Timeout).is_retryable());
        assert!(!AppError::from(DirectoryError::NoAccount).is_retryable());
        let conflict = StateError::Conflict {
            table: "t".into(),
            key: "k".into(),
            expected: None,
        };
        assert!(
            AppError::from(conflict).is_retryable(),
            "a lost compare-and-set"
        );
        assert!(!AppError::Missing("the directory").is_retryable());
    }

    #[test]
    fn an_outage_is_a_dependency_down_not_any_retryable_failure() {
        assert!(AppError::from(DirectoryError::server_down("refused")).is_unavailable());
        let down: Result<(), _> = Err(GraphError::Timeout);
        assert!(down.doing("reading the user").unwrap_err().is_unavailable());
        let lost = StateError::Conflict {
            table: "t".into(),
            key: "k".into(),
            expected: None,
        };
        assert!(!AppError::from(lost).is_unavailable());
        let waiting = AppError::NotVisibleYet {
            reported_at: chrono::Utc::now(),
        };
        assert!(waiting.is_retryable() && !waiting.is_unavailable());
    }
}
