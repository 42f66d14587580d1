//! The keeper's error type.

use shadowsync_graph::GraphError;
use shadowsync_state::StateError;

/// Why the keeper could not keep the subscription. Never carries the client state.
#[derive(Debug, thiserror::Error)]
pub enum KeeperError {
    /// The keeper's configuration is unusable.
    #[error("subscription keeper configuration: {0}")]
    Config(String),
    /// Graph refused or failed a request; `action` says which (`creating the subscription`, …).
    /// The message includes Graph's own (for a failed validation handshake:
    /// "Subscription validation request failed. …").
    #[error("{action}: {source}")]
    Graph {
        action: &'static str,
        #[source]
        source: GraphError,
    },
    /// Graph already has a subscription for our resource and change types (409) that is not
    /// ours (another notification URL), so we can neither create nor adopt one.
    #[error(
        "Graph already has subscription {existing_id} on {resource} (notificationUrl {existing_url}); \
         ours ({our_url}) cannot be created next to it. Delete it or configure shadowsync to use its URL"
    )]
    Conflict {
        existing_id: String,
        existing_url: String,
        resource: String,
        our_url: String,
    },
    /// Graph answered successfully with something we cannot read.
    #[error("unexpected answer from Microsoft Graph while {action}: {detail}")]
    Unexpected {
        action: &'static str,
        detail: String,
    },
    #[error("subscription state: {0}")]
    State(#[from] StateError),
}

impl KeeperError {
    pub(crate) fn graph(action: &'static str, source: GraphError) -> Self {
        KeeperError::Graph { action, source }
    }

    /// Whether running the keeper again later could succeed without anyone changing anything:
    /// throttling, Graph 5xx, timeouts, network errors and lost compare-and-set races yes;
    /// configuration, conflicts, Graph 4xx (a failed handshake among them) no.
    pub fn is_retryable(&self) -> bool {
        match self {
            KeeperError::Graph { source, .. } => source.is_retryable(),
            KeeperError::State(StateError::Conflict { .. } | StateError::Storage(_)) => true,
            KeeperError::State(StateError::Corrupt { .. } | StateError::InUse(_)) => false,
            KeeperError::Config(_)
            | KeeperError::Conflict { .. }
            | KeeperError::Unexpected { .. } => false,
        }
    }
}
