//! Converge one guest: read the user from Graph, read their account from AD by its anchor,
//! check for conflicts, plan, apply, record. Idempotent: running it twice changes nothing the
//! second time, whatever notification (or none) caused it. Works with an empty state store: AD's
//! anchors and Graph are the truth, state only remembers what was done.

use crate::error::{AppError, Doing};
use crate::safety::{destructive, Proposal, Safety, Verdict};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use shadowsync_core::names::sam_account_name_candidates;
use shadowsync_core::{
    desired_state, plan, ActualAccount, Clock, DesiredState, ObjectId, Observation, Operation,
    Plan, Policy, UserLookup,
};
use shadowsync_ports::{Directory, DirectoryError, Graph};
use shadowsync_state::{
    AccountStatus, GuestRecord, HeldChange, KeyValueStore, StateError, Versioned,
};
use std::sync::Arc;

/// How long a user Graph has just told us about may answer 404 before it counts: Entra is
/// eventually consistent, and a user just created or changed can be missing on the replica that
/// answers a read. Within this window after the report the job is retried (the workers' backoff
/// fits several reads into it).
pub const NEW_USER_VISIBILITY: std::time::Duration = std::time::Duration::from_secs(60);

/// How long a 404 must last before it may disable (or, past the retention, delete) an account:
/// a second read at least this long after the first, each looking in deleted items too. A 404
/// can be a replica behind, a wrong tenant or a lost permission as well as a deleted user.
pub const NOT_FOUND_CONFIRMATION: std::time::Duration = std::time::Duration::from_secs(30);

/// What the job that asked for a converge knew. Only a hint: Graph is read again either way.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Hint {
    /// Graph reported the user permanently deleted (a `deleted` change notification, or a
    /// delta `@removed` with reason `deleted`). With Graph then answering 404, the account is
    /// deleted at once; a 404 without this only disables it, once confirmed.
    pub deleted_in_graph: bool,
    /// When Graph reported this user (a notification, a delta item): a 404 soon after is more
    /// likely a replica behind than a user gone. `None` when nothing from Graph asked (a sweep,
    /// an administrator).
    pub reported_at: Option<DateTime<Utc>>,
}

/// What converging one guest did (or, in a dry run, would do).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Outcome {
    pub user_id: ObjectId,
    pub user_principal_name: Option<String>,
    pub plan: Plan,
    /// False for a dry run.
    pub applied: bool,
    pub status: AccountStatus,
    pub dn: Option<String>,
    /// Why the plan's disable or delete is held by the safety rails (not applied, kept for an
    /// administrator: `shadowsync held`).
    #[serde(default)]
    pub held: Option<String>,
}

impl Outcome {
    pub fn conflict(&self) -> Option<&str> {
        self.plan.iter().find_map(|op| match op {
            Operation::Conflict { reason } => Some(reason.as_str()),
            _ => None,
        })
    }

    /// Whether the converge wrote to AD.
    pub fn changed(&self) -> bool {
        self.applied
            && self
                .plan
                .iter()
                .any(|op| !matches!(op, Operation::Conflict { .. }))
    }
}

/// The converge step with its ports, built once and shared by every job.
pub struct Converger {
    pub graph: Arc<dyn Graph>,
    pub directory: Arc<dyn Directory>,
    pub state: Arc<dyn KeyValueStore>,
    pub policy: Policy,
    pub clock: Arc<dyn Clock>,
    /// Judges every disable and delete before it is applied.
    pub safety: Arc<Safety>,
}

/// Who finds out that the `sAMAccountName` a new account needs is held by another object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Checks {
    /// AD, by refusing the add (see [`Converger::converge`]).
    ByDirectory,
    /// Converge, by searching before it plans (after a refusal, and in a dry run).
    Searched,
}

/// Everything read for one guest, before deciding.
struct Situation {
    lookup: UserLookup,
    desired: DesiredState,
    observation: Observation,
    record: Option<Versioned<GuestRecord>>,
    disabled_since: Option<DateTime<Utc>>,
    /// Graph's time when the user was read: retention is judged, and counted from, by it.
    graph_now: DateTime<Utc>,
    /// Set when a new account is needed but every `sAMAccountName` candidate is taken.
    names_taken: Option<Vec<String>>,
    /// The guest's change the safety rails hold, if any.
    held: Option<Versioned<HeldChange>>,
}

impl Situation {
    /// The disable or delete `plan` makes, for the safety rails to judge.
    fn proposal(&self, user_id: &ObjectId, plan: &Plan) -> Option<Proposal> {
        destructive(plan).map(|change| Proposal {
            partner: None,
            object_id: user_id.clone(),
            user_principal_name: upn(&self.lookup),
            dn: self.observation.accounts.first().map(|a| a.dn.clone()),
            change,
            plan: describe(plan),
        })
    }

    /// The plan for this situation.
    fn decide(&self, policy: &Policy) -> Plan {
        match &self.names_taken {
            Some(names) => vec![Operation::Conflict {
                reason: format!(
                    "every sAMAccountName candidate is taken: {}",
                    names.join(", ")
                ),
            }],
            None => plan(&self.desired, &self.observation, policy),
        }
    }
}

impl Converger {
    /// Makes AD agree with Graph for `user_id` and records the outcome.
    ///
    /// A new account is added under its first `sAMAccountName` candidate without searching for
    /// a holder first: every DC refuses a name in use (68), and only then does converge search,
    /// take the next free candidate or report the conflict. Where the account already exists,
    /// nothing is searched but its anchor, unless its UPN changes. A new guest costs four LDAP
    /// operations (anchor, UPN, add, base read), a converged one a single search.
    pub async fn converge(&self, user_id: &ObjectId, hint: Hint) -> Result<Outcome, AppError> {
        match self.converge_once(user_id, hint, Checks::ByDirectory).await {
            Err(AppError::Directory(DirectoryError::AlreadyExists(text))) => {
                tracing::debug!(%user_id, %text, "AD refused the name; looking for its holder");
                self.converge_checked(user_id, hint).await
            }
            other => other,
        }
    }

    /// Converges with every holder looked for before writing.
    async fn converge_checked(&self, user_id: &ObjectId, hint: Hint) -> Result<Outcome, AppError> {
        match self.converge_once(user_id, hint, Checks::Searched).await {
            // Someone took the name between our check and our create: look again, once.
            Err(AppError::Directory(DirectoryError::AlreadyExists(text))) => {
                tracing::info!(%user_id, %text, "name taken concurrently; converging again");
                match self.converge_once(user_id, hint, Checks::Searched).await {
                    // Still taken: not a race but an object we do not own at the name the account
                    // needs (its DN, say). Retrying cannot help; a person must look.
                    Err(AppError::Directory(DirectoryError::AlreadyExists(text))) => {
                        self.record_conflict(
                            user_id,
                            format!("AD refused the account: the name already exists: {text}"),
                        )
                        .await
                    }
                    other => other,
                }
            }
            other => other,
        }
    }

    /// Records a conflict found while applying (the plan looked right, AD said no).
    async fn record_conflict(
        &self,
        user_id: &ObjectId,
        reason: String,
    ) -> Result<Outcome, AppError> {
        tracing::warn!(%user_id, %reason, "conflict: nothing done");
        let stored = GuestRecord::load(self.state.as_ref(), user_id).await?;
        let now = self.clock.now();
        let record = match &stored {
            Some(r) => GuestRecord {
                status: AccountStatus::Conflict,
                conflict: Some(reason.clone()),
                updated_at: now,
                ..r.value.clone()
            },
            None => GuestRecord {
                conflict: Some(reason.clone()),
                ..GuestRecord::new(user_id.clone(), AccountStatus::Conflict, now)
            },
        };
        self.record(record, stored.map(|r| r.version)).await?;
        Ok(Outcome {
            user_id: user_id.clone(),
            user_principal_name: None,
            plan: vec![Operation::Conflict { reason }],
            applied: true,
            status: AccountStatus::Conflict,
            dn: None,
            held: None,
        })
    }

    /// What converging `user_id` would do, changing nothing.
    pub async fn dry_run(&self, user_id: &ObjectId, hint: Hint) -> Result<Outcome, AppError> {
        // Nothing is written, so AD cannot refuse anything: every holder is looked for.
        let situation = self.observe(user_id, hint, Checks::Searched).await?;
        let plan = situation.decide(&self.policy);
        let account = situation.observation.accounts.first();
        let held = match destructive(&plan) {
            Some(_) => self.safety.would_hold(situation.held.as_ref()).await?,
            None => None,
        };
        Ok(Outcome {
            user_id: user_id.clone(),
            user_principal_name: upn(&situation.lookup),
            status: match held {
                Some(_) => status_now(account),
                None => status_after(&situation.desired, &plan, account),
            },
            dn: account.map(|a| a.dn.clone()),
            plan,
            applied: false,
            held,
        })
    }

    async fn converge_once(
        &self,
        user_id: &ObjectId,
        hint: Hint,
        checks: Checks,
    ) -> Result<Outcome, AppError> {
        let situation = self.observe(user_id, hint, checks).await?;
        let account = situation.observation.accounts.first();
        let plan = situation.decide(&self.policy);
        self.confirm_not_found(user_id, hint, &situation, &plan)
            .await?;
        if let Some(proposal) = situation.proposal(user_id, &plan) {
            let verdict = self
                .safety
                .admit(&proposal, situation.held.as_ref())
                .await?;
            if let Verdict::Hold(reason) = verdict {
                return Ok(Outcome {
                    user_id: user_id.clone(),
                    user_principal_name: upn(&situation.lookup),
                    plan,
                    applied: false,
                    status: status_now(account),
                    dn: account.map(|a| a.dn.clone()),
                    held: Some(reason),
                });
            }
        }
        if plan.is_empty() {
            tracing::debug!(%user_id, "already converged");
        } else {
            tracing::info!(%user_id, plan = %describe(&plan), "applying");
        }
        let writes = plan
            .iter()
            .any(|op| !matches!(op, Operation::Conflict { .. }));
        let dn_after = if writes {
            self.directory.apply(account, &plan, &self.policy).await?
        } else {
            None
        };
        for op in &plan {
            if let Operation::Conflict { reason } = op {
                tracing::warn!(%user_id, %reason, "conflict: nothing done");
            }
        }
        // Applied, or no longer needed: a held change of this guest is settled.
        if let Some(held) = &situation.held {
            self.safety.forget(held).await?;
        }

        let status = status_after(&situation.desired, &plan, account);
        let after = match status {
            AccountStatus::Deleted | AccountStatus::NotProvisioned => None,
            _ if !writes => account.cloned(),
            // Read back where apply left the account, not by anchor: a base read costs the same
            // whatever the domain, and the anchor is unindexed on older schemas.
            _ => match dn_after {
                Some(dn) => self.directory.read_account(&dn).await?,
                None => None,
            },
        };
        if plan.is_empty() && after.is_none() && situation.record.is_none() {
            // No account, none before, nothing done: an employee, or a guest out of scope who
            // never had one. Nothing worth remembering, and a record would make every later
            // change to this user look like a former guest's.
            return Ok(Outcome {
                user_id: user_id.clone(),
                user_principal_name: upn(&situation.lookup),
                plan,
                applied: true,
                status,
                dn: None,
                held: None,
            });
        }
        let now = self.clock.now();
        let record = GuestRecord {
            object_id: user_id.clone(),
            dn: after.as_ref().map(|a| a.dn.clone()),
            object_guid: after.as_ref().and_then(|a| a.object_guid.clone()),
            sam_account_name: after.as_ref().map(|a| a.sam_account_name.clone()),
            status,
            disabled_at: match status {
                AccountStatus::Disabled => {
                    Some(situation.disabled_since.unwrap_or(situation.graph_now))
                }
                _ => None,
            },
            applied_fingerprint: match &situation.desired {
                DesiredState::Enabled(account) => Some(account.fingerprint()),
                _ => None,
            },
            conflict: plan.iter().find_map(|op| match op {
                Operation::Conflict { reason } => Some(reason.clone()),
                _ => None,
            }),
            not_found_since: None,
            updated_at: now,
        };
        self.record(record, situation.record.map(|r| r.version))
            .await?;
        Ok(Outcome {
            user_id: user_id.clone(),
            user_principal_name: upn(&situation.lookup),
            plan,
            applied: true,
            status,
            dn: after.map(|a| a.dn),
            held: None,
        })
    }

    /// Graph answered 404 (and deleted items too) without having said it deleted the user.
    /// Before that counts: a user Graph just reported without an account gets
    /// [`NEW_USER_VISIBILITY`] to become visible; an account gets a second read
    /// [`NOT_FOUND_CONFIRMATION`] after the first (remembered in the record) before it is
    /// disabled or deleted, and reads in between, soon, while the report is fresh (a replica
    /// behind). Meanwhile the job fails, retryably, and nothing is written.
    async fn confirm_not_found(
        &self,
        user_id: &ObjectId,
        hint: Hint,
        situation: &Situation,
        plan: &Plan,
    ) -> Result<(), AppError> {
        if situation.lookup != UserLookup::Gone || hint.deleted_in_graph {
            return Ok(());
        }
        let now = self.clock.now();
        let elapsed = |since: DateTime<Utc>| (now - since).to_std().unwrap_or_default();
        // Graph just told us about this user: most likely a replica behind, so read again soon
        // (the backoff) rather than when a confirmation is due.
        let recent = hint
            .reported_at
            .filter(|at| elapsed(*at) < NEW_USER_VISIBILITY);
        let destructive = plan
            .iter()
            .any(|op| !matches!(op, Operation::Conflict { .. }));
        if !destructive {
            return match recent {
                Some(at) => Err(AppError::NotVisibleYet { reported_at: at }),
                None => Ok(()),
            };
        }
        let retry_in = |remaining| match recent {
            Some(_) => None,
            None => Some(confirmation_due(remaining)),
        };
        let record = situation.record.as_ref();
        match record.and_then(|r| r.value.not_found_since) {
            Some(since) if elapsed(since) >= NOT_FOUND_CONFIRMATION => Ok(()),
            Some(since) => Err(AppError::NotFoundUnconfirmed {
                since,
                confirm_after: NOT_FOUND_CONFIRMATION,
                retry_in: retry_in(NOT_FOUND_CONFIRMATION - elapsed(since)),
            }),
            None => {
                // The first 404: remember it, change nothing.
                let first = match record {
                    Some(r) => GuestRecord {
                        not_found_since: Some(now),
                        ..r.value.clone()
                    },
                    None => GuestRecord {
                        not_found_since: Some(now),
                        ..GuestRecord::new(user_id.clone(), AccountStatus::Enabled, now)
                    },
                };
                first
                    .save(self.state.as_ref(), record.map(|r| r.version))
                    .await?;
                tracing::warn!(%user_id, "Graph answers 404 for a user with an account; reading again before acting");
                Err(AppError::NotFoundUnconfirmed {
                    since: now,
                    confirm_after: NOT_FOUND_CONFIRMATION,
                    retry_in: retry_in(NOT_FOUND_CONFIRMATION),
                })
            }
        }
    }

    /// Reads Graph, state and AD, and decides what AD should hold.
    async fn observe(
        &self,
        user_id: &ObjectId,
        hint: Hint,
        checks: Checks,
    ) -> Result<Situation, AppError> {
        let lookup = self.graph.user(user_id).await.doing("reading the user")?;
        let in_scope_group = match (&self.policy.scope_group_id, &lookup) {
            (Some(group), UserLookup::Active(user)) if user.is_guest() => self
                .graph
                .is_member_of(user_id, group)
                .await
                .doing("checking the scope group")?,
            _ => false,
        };
        let record = GuestRecord::load(self.state.as_ref(), user_id).await?;
        // Graph reporting a change to a member (an employee) shadowsync never made an account
        // for costs no search of AD (on a schema without the indexed anchor every user object
        // would be read) and no further state read. A guest who became a member has a record, and is
        // looked up as before; an account whose record was lost is found by the sweep of the
        // managed OUs, whose jobs (like an administrator's) always look.
        let employee = hint.reported_at.is_some()
            && record.is_none()
            && matches!(&lookup, UserLookup::Active(user) if !user.is_guest());
        let held = match employee {
            true => None,
            false => self.safety.held(user_id, None).await?,
        };
        let found = match employee {
            true => Vec::new(),
            false => {
                self.directory
                    .find_by_anchor(&self.policy.anchor.value_for(user_id))
                    .await?
            }
        };
        // An object outside the managed OUs carrying the anchor as well (copied by hand, or
        // planted) must not keep the guest's own account enabled: with exactly one account of
        // ours, disabling and deleting it go ahead and the other is left alone. Anything else
        // it might mean (which one is the guest's?) waits for a person, as a conflict.
        let (ours, foreign): (Vec<_>, Vec<_>) =
            found.into_iter().partition(|a| self.policy.manages(&a.dn));
        let (mut accounts, set_aside) = match (ours.len(), foreign.is_empty()) {
            (1, false) => (ours, foreign),
            _ => (ours.into_iter().chain(foreign).collect(), Vec::new()),
        };
        // Retention is judged by Graph's clock, like subscription expiry: a local clock jumping
        // forward must not delete anything. It counts from when shadowsync disabled the
        // account; with no record of that (a lost store, or an account disabled by hand) it
        // counts from now: later, never earlier.
        let graph_now = self.graph.clock().now();
        let disabled_since = match accounts.as_slice() {
            [account] if !account.is_enabled() => Some(
                record
                    .as_ref()
                    .and_then(|r| r.value.disabled_at)
                    .unwrap_or(graph_now),
            ),
            _ => None,
        };
        let mut desired = desired_state(
            &lookup,
            in_scope_group,
            hint.deleted_in_graph,
            &self.policy,
            disabled_since,
            graph_now,
        );
        if !set_aside.is_empty() {
            match &desired {
                DesiredState::Enabled(_) => accounts.extend(set_aside),
                _ => tracing::warn!(%user_id,
                    foreign = ?set_aside.iter().map(|a| a.dn.as_str()).collect::<Vec<_>>(),
                    "objects outside the managed OUs carry this guest's anchor; left alone"),
            }
        }
        let mut observation = Observation {
            accounts,
            foreign_upn_holder: None,
        };
        let mut names_taken = None;
        if let DesiredState::Enabled(account) = &mut desired {
            let own = observation.accounts.first();
            if own.is_none() {
                let candidates = sam_account_name_candidates(user_id, upn(&lookup).as_deref());
                match checks {
                    Checks::ByDirectory => account.sam_account_name = candidates[0].clone(),
                    Checks::Searched => {
                        match self.first_free_sam_account_name(&candidates).await? {
                            Some(sam) => account.sam_account_name = sam,
                            None => names_taken = Some(candidates),
                        }
                    }
                }
            }
            // Another object holding the UPN matters only where the plan writes it. AD is not
            // left to refuse it: a DC before Windows Server 2012 R2, or a forest whose
            // dsHeuristics turn the check off, accepts a second holder.
            let writes_upn = own.is_none_or(|a| {
                a.attributes.user_principal_name != account.attributes.user_principal_name
            });
            if let (true, Some(upn)) = (writes_upn, &account.attributes.user_principal_name) {
                if let Some(holder) = self.directory.find_by_user_principal_name(upn).await? {
                    let ours = own.is_some_and(|a| {
                        (a.object_guid.is_some() && a.object_guid == holder.object_guid)
                            || shadowsync_core::dn::same(&a.dn, &holder.dn)
                    });
                    if !ours {
                        observation.foreign_upn_holder = Some(holder.dn);
                    }
                }
            }
        }
        Ok(Situation {
            lookup,
            desired,
            observation,
            record,
            disabled_since,
            graph_now,
            names_taken,
            held,
        })
    }

    /// The first `sAMAccountName` candidate nobody holds.
    async fn first_free_sam_account_name(
        &self,
        candidates: &[String],
    ) -> Result<Option<String>, AppError> {
        for candidate in candidates {
            if self
                .directory
                .find_by_sam_account_name(candidate)
                .await?
                .is_none()
            {
                return Ok(Some(candidate.clone()));
            }
        }
        Ok(None)
    }

    /// Saves the record; if another worker wrote it meanwhile, ours is newer: write over theirs.
    async fn record(&self, record: GuestRecord, expected: Option<u64>) -> Result<(), AppError> {
        match record.save(self.state.as_ref(), expected).await {
            Err(StateError::Conflict { .. }) => {
                let current = GuestRecord::load(self.state.as_ref(), &record.object_id).await?;
                record
                    .save(self.state.as_ref(), current.map(|c| c.version))
                    .await?;
                Ok(())
            }
            other => other.map(|_| ()).map_err(Into::into),
        }
    }
}

fn upn(lookup: &UserLookup) -> Option<String> {
    match lookup {
        UserLookup::Active(u) | UserLookup::SoftDeleted(u) => u.user_principal_name.clone(),
        UserLookup::Gone => None,
    }
}

/// The account's status as it is (a held change leaves it so).
fn status_now(account: Option<&ActualAccount>) -> AccountStatus {
    match account {
        Some(a) if a.is_enabled() => AccountStatus::Enabled,
        Some(_) => AccountStatus::Disabled,
        None => AccountStatus::NotProvisioned,
    }
}

/// The account's status once the plan has run.
fn status_after(
    desired: &DesiredState,
    plan: &Plan,
    account: Option<&ActualAccount>,
) -> AccountStatus {
    if plan
        .iter()
        .any(|op| matches!(op, Operation::Conflict { .. }))
    {
        return AccountStatus::Conflict;
    }
    match desired {
        DesiredState::Enabled(_) => AccountStatus::Enabled,
        DesiredState::Disabled(_) if account.is_some() => AccountStatus::Disabled,
        DesiredState::Disabled(_) => AccountStatus::NotProvisioned,
        DesiredState::Deleted(_) => AccountStatus::Deleted,
    }
}

/// A plan in one line, for logs.
pub fn describe(plan: &Plan) -> String {
    if plan.is_empty() {
        return "nothing to do".into();
    }
    plan.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// The second read a little after it is due: queues count delays in whole seconds, and a read
/// a moment early only asks again.
fn confirmation_due(remaining: std::time::Duration) -> std::time::Duration {
    remaining + std::time::Duration::from_secs(1)
}
