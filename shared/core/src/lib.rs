//! The pure core of shadowsync: what a guest looks like in Graph, who is in scope, what their shadow
//! account in Active Directory should look like, and the ordered operations that take an actual
//! account there. Nothing in this crate performs I/O; adapters live in their own crates.

pub mod account;
pub mod clock;
pub mod dn;
pub mod id;
pub mod names;
pub mod partner;
pub mod plan;
pub mod policy;
pub mod retry;
pub mod user;

pub use account::{
    desired_state, ActualAccount, DeleteReason, DesiredState, DisableReason, Location,
    ManagedAttributes, ShadowAccount,
};
pub use clock::{Clock, ManualClock, SystemClock};
pub use id::{InvalidObjectId, ObjectId};
pub use plan::{apply, plan, AttributeChange, Observation, Operation, Plan};
pub use policy::{Anchor, Policy};
pub use retry::Backoff;
pub use user::{GraphUser, UserLookup};
