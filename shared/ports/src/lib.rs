//! What shadowsync's application needs from the outside world, and nothing about how it gets it.
//!
//! - [`Graph`]: Microsoft Graph as the application uses it: a user now, pages of users delta,
//!   guests, group membership, change-notification subscriptions, and Graph's clock.
//! - [`Directory`]: Active Directory as the application uses it: accounts by anchor, names
//!   taken, one account by DN, the accounts of a managed OU, and applying a plan.
//! - For the partner direction: [`PartnerDirectory`] (partner accounts by objectGUID, changed
//!   since a `uSNChanged` watermark, and deleted) and [`GuestGraph`] (a partner's guest by its
//!   link, address or immutable id; invitations, changes, deletion).
//!
//! The application (`shadowsync-app`) depends only on these traits. Their adapters are the Graph
//! client (`shadowsync-graph`, reqwest) and the LDAP directory (`shadowsync-directory`, ldap3);
//! the test kit (`shadowsync-testkit`) has in-memory fakes that keep the same rules, so every
//! branch of the application can be driven, fault by fault, in milliseconds.

pub mod directory;
pub mod graph;
pub mod guests;
pub mod partners;

pub use directory::{ensure_owned, AnchorLookup, Directory, DirectoryError, DirectoryObject};
pub use graph::{
    DeltaCursor, DeltaItem, Graph, GraphError, GraphIdentity, GroupChange, Member, MemberKind,
    NewSubscription, Page, Subscription, SubscriptionId,
};
pub use guests::{GuestChange, GuestGraph, Invitation};
pub use partners::{PartnerChanges, PartnerDirectory};

/// A boxed error cause, kept as the `source` of the errors here so no cause is lost to a string.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
