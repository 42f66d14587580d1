//! The safety rails: what stands between a fault upstream and a mass disable or delete.
//!
//! A deleted or mistyped scope group, a configuration pointed at another tenant or a lost
//! permission each make every guest look gone or out of scope, and the next sweep would disable
//! every shadow account (and retention later delete them: their SIDs, and every ACL naming
//! them). Before a converge disables or deletes, it asks [`Safety::admit`]:
//!
//! 1. **Pre-flight:** the Graph tenant and application are the ones the accounts were made
//!    from, and the scope group (if any) exists. Otherwise the change is held with the reason.
//! 2. **The accidental-change threshold:** at most `max_disables_per_hour` disables and
//!    `max_deletes_per_hour` deletes in any rolling hour, counted in the state store so that
//!    every host of a deployment shares one count. The next one trips the threshold, and from
//!    then on every disable and delete is held until an administrator acts, as Entra Connect
//!    stops an export with too many deletes: a mass change does not trickle through at the
//!    threshold's pace.
//!
//! A held change is kept (table `held`, one per guest), not applied and not dropped; every
//! other change (creates, updates, enables) goes on. `shadowsync held release` lets held changes
//! through (and, released in full, resets the threshold and accepts the configured tenant);
//! `held discard` drops them and leaves the threshold as it is. A held change whose guest no
//! longer needs it (the group is back) is forgotten by the guest's next converge.

use crate::error::{AppError, Doing};
use chrono::{DateTime, Duration, Utc};
use shadowsync_core::partner::ObjectGuid;
use shadowsync_core::{Clock, ObjectId, Operation, Plan};
use shadowsync_ports::{Graph, GraphIdentity};
use shadowsync_state::records::{held_key, CHECKPOINTS, GRAPH_IDENTITY, HELD, SAFETY_GUARD};
use shadowsync_state::{
    count_keys, get_json, put_json, Destructive, HeldChange, KeyValueStore, RecordedIdentity,
    SafetyGuard, Tripped, Versioned,
};
use std::sync::{Arc, Mutex};

/// The threshold's window, counted in whole minutes (see [`SafetyGuard`]).
const WINDOW: Duration = Duration::hours(1);
/// How long a pre-flight answer is trusted: destructive changes come in bursts (a sweep), and
/// one check per minute is enough to notice a group deleted or restored.
const PREFLIGHT_TTL: Duration = Duration::seconds(60);
/// Attempts at the threshold's compare-and-set before giving up (retryably) for now.
const GUARD_ATTEMPTS: usize = 20;
/// Held changes read per step.
const PAGE: usize = 500;

/// The `[safety]` limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SafetyLimits {
    pub max_disables_per_hour: u32,
    pub max_deletes_per_hour: u32,
}

impl Default for SafetyLimits {
    fn default() -> Self {
        let section = shadowsync_config::SafetySection::default();
        Self::from(&section)
    }
}

impl From<&shadowsync_config::SafetySection> for SafetyLimits {
    fn from(s: &shadowsync_config::SafetySection) -> Self {
        Self {
            max_disables_per_hour: s.max_disables_per_hour,
            max_deletes_per_hour: s.max_deletes_per_hour,
        }
    }
}

impl SafetyLimits {
    fn of(&self, change: Destructive) -> u64 {
        match change {
            Destructive::Disable => u64::from(self.max_disables_per_hour),
            Destructive::Delete => u64::from(self.max_deletes_per_hour),
        }
    }
}

/// What a converge proposes that the rails judge.
#[derive(Debug, Clone)]
pub struct Proposal {
    pub object_id: ObjectId,
    /// The partner account whose guest it blocks or deletes (the partner direction).
    pub partner: Option<ObjectGuid>,
    pub user_principal_name: Option<String>,
    pub dn: Option<String>,
    pub change: Destructive,
    pub plan: String,
}

/// The rails' answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Go,
    /// Held, and why.
    Hold(String),
}

/// What `status` shows.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SafetyReport {
    pub tripped: Option<Tripped>,
    pub held: usize,
    pub disables_last_hour: u64,
    pub deletes_last_hour: u64,
}

pub struct Safety {
    pub graph: Arc<dyn Graph>,
    pub state: Arc<dyn KeyValueStore>,
    /// The local clock: the threshold's window (a clock jumping forward only empties it).
    pub clock: Arc<dyn Clock>,
    pub limits: SafetyLimits,
    pub scope_group: Option<ObjectId>,
    /// The last pre-flight answer and when it was found.
    preflight: Mutex<Option<Preflight>>,
}

/// A pre-flight answer: `Err` holds why destructive work must wait.
type Answer = Result<(), String>;

struct Preflight {
    at: DateTime<Utc>,
    answer: Answer,
}

/// The destructive change a plan makes, if any (a delete outranks a disable).
pub fn destructive(plan: &Plan) -> Option<Destructive> {
    let mut found = None;
    for op in plan {
        match op {
            Operation::Delete { .. } => return Some(Destructive::Delete),
            Operation::Disable { .. } => found = Some(Destructive::Disable),
            _ => {}
        }
    }
    found
}

impl Safety {
    pub fn new(
        graph: Arc<dyn Graph>,
        state: Arc<dyn KeyValueStore>,
        clock: Arc<dyn Clock>,
        limits: SafetyLimits,
        scope_group: Option<ObjectId>,
    ) -> Self {
        Self {
            graph,
            state,
            clock,
            limits,
            scope_group,
            preflight: Mutex::new(None),
        }
    }

    /// The held change of `user` (or, with `partner`, of that partner account's guest), if any.
    pub async fn held(
        &self,
        user: &ObjectId,
        partner: Option<&ObjectGuid>,
    ) -> Result<Option<Versioned<HeldChange>>, AppError> {
        Ok(get_json(&*self.state, HELD, &held_key(user, partner)).await?)
    }

    /// May `proposal` go ahead now? `held` is the guest's held change, as loaded. A hold is
    /// recorded before it is returned.
    pub async fn admit(
        &self,
        proposal: &Proposal,
        held: Option<&Versioned<HeldChange>>,
    ) -> Result<Verdict, AppError> {
        if held.is_some_and(|h| h.value.released_at.is_some()) {
            tracing::warn!(user_id = %proposal.object_id, change = proposal.change.as_str(),
                "applying a change an administrator released");
            return Ok(Verdict::Go);
        }
        if let Err(reason) = self.preflight(true).await? {
            return self.hold(proposal, held, reason).await;
        }
        match self.count(proposal.change).await? {
            Verdict::Go => Ok(Verdict::Go),
            Verdict::Hold(reason) => self.hold(proposal, held, reason).await,
        }
    }

    /// Why a disable or delete would be held now, changing nothing (a dry run): a held change not yet
    /// released, a failing pre-flight or a tripped threshold. The hour's count is not judged.
    pub async fn would_hold(
        &self,
        held: Option<&Versioned<HeldChange>>,
    ) -> Result<Option<String>, AppError> {
        match held {
            Some(h) if h.value.released_at.is_some() => return Ok(None),
            Some(h) => return Ok(Some(h.value.reason.clone())),
            None => {}
        }
        if let Err(reason) = self.preflight(false).await? {
            return Ok(Some(reason));
        }
        let guard = load_guard(&*self.state).await?;
        Ok(guard.and_then(|g| g.value.tripped).map(|t| t.reason))
    }

    /// The guest's held change is no longer wanted (applied, or the guest needs no disable or
    /// delete any more): forgets it.
    pub async fn forget(&self, held: &Versioned<HeldChange>) -> Result<(), AppError> {
        match self
            .state
            .delete(HELD, &held.value.key(), Some(held.version))
            .await
        {
            // Held again meanwhile by another worker: that one stands.
            Err(e) if e.is_conflict() => Ok(()),
            other => Ok(other?),
        }
    }

    /// The tenant and application are the ones the accounts were made from, and the scope
    /// group exists. `Ok(Err(reason))` when not; an error when Graph cannot be asked (retried,
    /// or parked if Graph refuses). Records the identity the first time (unless `dry`).
    async fn preflight(&self, record: bool) -> Result<Answer, AppError> {
        let now = self.clock.now();
        if let Some(last) = self.preflight.lock().unwrap().as_ref() {
            if now >= last.at && now - last.at < PREFLIGHT_TTL {
                return Ok(last.answer.clone());
            }
        }
        let answer = self.check(record).await?;
        if let Err(reason) = &answer {
            tracing::error!(%reason, "pre-flight failed: no account is disabled or deleted");
        }
        *self.preflight.lock().unwrap() = Some(Preflight {
            at: now,
            answer: answer.clone(),
        });
        Ok(answer)
    }

    async fn check(&self, record: bool) -> Result<Answer, AppError> {
        let identity = self.graph.identity();
        let recorded = get_json::<RecordedIdentity>(&*self.state, CHECKPOINTS, GRAPH_IDENTITY)
            .await?
            .map(|r| r.value);
        match recorded {
            Some(r) if r.tenant != identity.tenant || r.client_id != identity.client_id => {
                return Ok(Err(format!(
                    "the configuration now names {identity}, but the accounts were made from tenant {}, application {} \
                     (recorded {}): if that change is intended, `shadowsync held release` accepts it",
                    r.tenant, r.client_id, r.since.to_rfc3339()
                )));
            }
            Some(_) => {}
            None if record => self.record_identity().await?,
            None => {}
        }
        if let Some(group) = &self.scope_group {
            let exists = self
                .graph
                .group_exists(group)
                .await
                .doing("checking that the scope group exists")?;
            if !exists {
                return Ok(Err(format!(
                    "the scope group {group} does not exist in Graph (deleted, or a mistyped \
                     policy.scope_group_id?): every guest would look out of scope"
                )));
            }
        }
        Ok(Ok(()))
    }

    /// Records the configured tenant and application as the ones the accounts belong to.
    async fn record_identity(&self) -> Result<(), AppError> {
        let now = self.clock.now();
        match accept_identity(&*self.state, self.graph.identity(), now).await {
            // Another worker recorded it first: the same identity.
            Err(AppError::State(e)) if e.is_conflict() => Ok(()),
            other => other,
        }
    }

    /// Counts one `change` against the hour's limit, or trips the threshold.
    async fn count(&self, change: Destructive) -> Result<Verdict, AppError> {
        let mut attempts = 0;
        loop {
            attempts += 1;
            let stored = load_guard(&*self.state).await?;
            let version = stored.as_ref().map(|s| s.version);
            let mut guard = stored.map(|s| s.value).unwrap_or_default();
            if let Some(tripped) = &guard.tripped {
                return Ok(Verdict::Hold(tripped.reason.clone()));
            }
            let now = self.clock.now();
            let done = guard.count(change, now - WINDOW);
            let limit = self.limits.of(change);
            let verdict = if done >= limit {
                let reason = format!(
                    "accidental-change threshold: {done} {}s in the last hour already, and \
                     safety.max_{}s_per_hour is {limit}; every disable and delete is held until \
                     an administrator runs `shadowsync held release` or `held discard`",
                    change.as_str(),
                    change.as_str(),
                );
                guard.tripped = Some(Tripped {
                    at: now,
                    reason: reason.clone(),
                });
                Verdict::Hold(reason)
            } else {
                guard.add(change, now, now - WINDOW);
                Verdict::Go
            };
            match put_json(&*self.state, CHECKPOINTS, SAFETY_GUARD, &guard, version).await {
                // Another worker counted first: count again (a lost race stays retryable).
                Err(e) if e.is_conflict() && attempts < GUARD_ATTEMPTS => continue,
                Err(e) => return Err(e.into()),
                Ok(_) => {
                    if let Verdict::Hold(reason) = &verdict {
                        tracing::error!(%reason, "the accidental-change threshold tripped");
                    }
                    return Ok(verdict);
                }
            }
        }
    }

    async fn hold(
        &self,
        proposal: &Proposal,
        held: Option<&Versioned<HeldChange>>,
        reason: String,
    ) -> Result<Verdict, AppError> {
        let now = self.clock.now();
        let record = HeldChange {
            object_id: proposal.object_id.clone(),
            partner: proposal.partner,
            user_principal_name: proposal.user_principal_name.clone(),
            dn: proposal.dn.clone(),
            change: proposal.change,
            plan: proposal.plan.clone(),
            reason: reason.clone(),
            held_at: held.map_or(now, |h| h.value.held_at),
            released_at: None,
        };
        if held.map(|h| &h.value) != Some(&record) {
            match put_json(
                &*self.state,
                HELD,
                &record.key(),
                &record,
                held.map(|h| h.version),
            )
            .await
            {
                // Another worker held it meanwhile: one record is enough.
                Err(e) if e.is_conflict() => {}
                other => {
                    other?;
                }
            }
        }
        tracing::warn!(user_id = %proposal.object_id, change = proposal.change.as_str(), %reason, "held, not applied");
        Ok(Verdict::Hold(reason))
    }
}

/// Every held change (read from state alone).
pub async fn held_changes(state: &dyn KeyValueStore) -> Result<Vec<HeldChange>, AppError> {
    let mut changes = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = state.scan(HELD, after.as_deref(), PAGE).await?;
        let Some((last, _)) = page.last() else { break };
        after = Some(last.clone());
        for (key, raw) in page {
            let change: HeldChange = serde_json::from_slice(&raw.value).map_err(|e| {
                shadowsync_state::StateError::Corrupt {
                    table: HELD.into(),
                    key,
                    reason: e.to_string(),
                }
            })?;
            changes.push(change);
        }
    }
    Ok(changes)
}

/// The threshold's state as stored (`None`: nothing counted, not tripped).
pub(crate) async fn load_guard(
    state: &dyn KeyValueStore,
) -> Result<Option<Versioned<SafetyGuard>>, AppError> {
    Ok(get_json(state, CHECKPOINTS, SAFETY_GUARD).await?)
}

/// The threshold and the held changes, for `status` (read from state alone).
pub async fn report(
    state: &dyn KeyValueStore,
    now: DateTime<Utc>,
) -> Result<SafetyReport, AppError> {
    let guard = load_guard(state)
        .await?
        .map(|g| g.value)
        .unwrap_or_default();
    let recent = |c: Destructive| guard.count(c, now - WINDOW);
    let held = count_keys(state, HELD).await?;
    Ok(SafetyReport {
        disables_last_hour: recent(Destructive::Disable),
        deletes_last_hour: recent(Destructive::Delete),
        tripped: guard.tripped,
        held,
    })
}

/// Resets the threshold: nothing counted, not tripped.
pub(crate) async fn reset(state: &dyn KeyValueStore) -> Result<(), AppError> {
    let mut attempts = 0;
    while let Some(current) = state.get(CHECKPOINTS, SAFETY_GUARD).await? {
        attempts += 1;
        match state
            .delete(CHECKPOINTS, SAFETY_GUARD, Some(current.version))
            .await
        {
            // Counted meanwhile: reset what is there now.
            Err(e) if e.is_conflict() && attempts < GUARD_ATTEMPTS => continue,
            other => return Ok(other?),
        }
    }
    Ok(())
}

/// Accepts `identity` (the configured tenant and application) as the accounts' own.
pub(crate) async fn accept_identity(
    state: &dyn KeyValueStore,
    identity: GraphIdentity,
    now: DateTime<Utc>,
) -> Result<(), AppError> {
    let current = state.get(CHECKPOINTS, GRAPH_IDENTITY).await?;
    put_json(
        state,
        CHECKPOINTS,
        GRAPH_IDENTITY,
        &RecordedIdentity {
            tenant: identity.tenant,
            client_id: identity.client_id,
            since: now,
        },
        current.map(|c| c.version),
    )
    .await?;
    Ok(())
}
