//! In-memory fakes of shadowsync's ports, for tests of the application that run in
//! milliseconds: [`FakeDirectory`] (Active Directory, with AD's rules and result codes) and
//! [`FakeGraph`] (Microsoft Graph: users, groups, delta, subscriptions), and
//! [`FakeGuestGraph`] (Graph as the partner direction uses it: invitations, links, conversions).
//! Each can be made to
//! fail, call by call, and count what was asked of them. A dev-dependency only: nothing here is
//! built into shadowsync. Samba and the Graph simulator stay the proof end to end.

mod directory;
mod faults;
mod graph;
mod guests;
mod partners;

pub use directory::{DirOp, FakeDirectory, NewObject, Object, ObjectClass};
pub use faults::MakeError;
pub use graph::{
    epoch, FakeGraph, GraphOp, DELTA_TOKEN_DAYS, MAX_SUBSCRIPTION_MINUTES, TENANT_DOMAIN,
};
pub use guests::{FakeGuestGraph, GuestOp};
pub use partners::INVOCATION_ID;
