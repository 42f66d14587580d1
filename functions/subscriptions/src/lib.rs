//! shadowsync's subscription keeper.
//!
//! Graph delivers change notifications only while a subscription exists, and a subscription on
//! users lives at most 41,760 minutes. [`SubscriptionKeeper`] keeps exactly one subscription on
//! `/users` (`updated,deleted`) alive: it creates it, renews it well before it expires, replaces
//! it when Graph dropped it or the configuration changed, reauthorizes it when Graph asks, and
//! adopts it after the state that recorded it was lost. The subscription is recorded in state
//! (table [`SUBSCRIPTIONS`], key [`USERS_KEY`]) with compare-and-set writes.
//!
//! Notifications lost while no subscription exists are not the keeper's concern: the delta
//! reconciler catches up.

mod config;
mod error;
mod keeper;
pub mod lambda;
mod record;

pub use config::{
    KeeperConfig, DEFAULT_LIFETIME_MINUTES, DEFAULT_RENEW_MARGIN_DAYS, MAX_CLIENT_STATE_CHARS,
    MAX_LIFETIME_MINUTES,
};
pub use error::KeeperError;
pub use keeper::{Ensured, IgnoreReason, Outcome, RecreateReason, SubscriptionKeeper};
pub use record::{SubscriptionRecord, SUBSCRIPTIONS, USERS_KEY};
pub use shadowsync_queue::LifecycleEvent;
