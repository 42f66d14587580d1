//! Scope-group changes in seconds: the scope group and every group nested in it (the tree),
//! each with its own groups delta link, and what a change in one of them means for guests.
//!
//! A member added to or removed from a group of the tree becomes a converge job for that user
//! (converge asks Graph whether the user is still in scope, through any path, so a user still in
//! scope another way stays enabled). A group added to the tree joins it (its first round lists
//! its members: each a converge job, its own nested groups joining in turn); a group removed
//! leaves it, with a converge job for every user it brought in. A notification of a group that
//! is not in the tree is ignored. The tree is checked against Graph from the scope group down
//! ([`ScopeGroups::ensure_tree`]) at start and with the subscriptions, so a change missed (or a
//! lost state store) is caught up. Disables that follow go through the safety rails like every
//! other: an emptied or deleted scope group is held by the threshold and the pre-flight.

use crate::error::{AppError, Doing};
use crate::reconcile::{reconciler_job, Batch};
use chrono::Utc;
use serde::{Deserialize, Serialize};
use shadowsync_core::{Clock, ObjectId};
use shadowsync_ports::{DeltaCursor, Graph, MemberKind};
use shadowsync_queue::{Job, JobSource, Queue};
use shadowsync_state::records::SCOPE_GROUPS;
use shadowsync_state::{get_json, keys, put_json, KeyValueStore, ScopeGroupRecord};
use std::collections::{BTreeSet, VecDeque};
use std::sync::Arc;

pub struct ScopeGroups {
    pub graph: Arc<dyn Graph>,
    pub state: Arc<dyn KeyValueStore>,
    pub queue: Arc<dyn Queue>,
    /// The scope group: the tree's root.
    pub root: ObjectId,
    pub clock: Arc<dyn Clock>,
}

/// What one group's change did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupReport {
    /// The group is not in the tree (a stale notification): nothing was read.
    pub ignored: bool,
    /// Converge jobs queued (users added or removed, directly or with a group).
    pub users: usize,
    pub groups_joined: usize,
    pub groups_left: usize,
    /// The round started over (the group's delta link was lost or expired).
    pub full_round: bool,
}

impl ScopeGroups {
    /// Reads what changed in `group` since its last round and queues what that means.
    pub async fn changed(&self, group: &ObjectId) -> Result<GroupReport, AppError> {
        let key = group.to_string();
        let stored = get_json::<ScopeGroupRecord>(&*self.state, SCOPE_GROUPS, &key).await?;
        if stored.is_none() && *group != self.root {
            return Ok(GroupReport {
                ignored: true,
                ..GroupReport::default()
            });
        }
        let mut report = GroupReport::default();
        let start = stored
            .as_ref()
            .and_then(|s| s.value.delta_link.clone())
            .map_or(DeltaCursor::Start, DeltaCursor::Link);
        report.full_round = start == DeltaCursor::Start;
        let (changes, delta_link) = match self.round(group, start).await {
            // Graph forgot the link (7 days, or a reset): a full round lists every member.
            Err(AppError::Graph { source, .. }) if source.is_sync_state_lost() => {
                tracing::warn!(%group, "the group's delta link expired: reading all its members");
                report.full_round = true;
                self.round(group, DeltaCursor::Start).await?
            }
            other => other?,
        };
        let mut users = BTreeSet::new();
        let mut left = Vec::new();
        for change in &changes {
            if change.deleted && change.group == self.root {
                tracing::error!(%group, "the scope group was deleted: the pre-flight holds every disable until it is back or the configuration changes");
            }
            for m in change.added.iter().chain(&change.removed) {
                if m.kind == MemberKind::User {
                    users.insert(m.id.clone());
                }
            }
            for m in change.added.iter().filter(|m| m.kind == MemberKind::Group) {
                if self.join(&m.id).await? {
                    report.groups_joined += 1;
                }
            }
            left.extend(
                change
                    .removed
                    .iter()
                    .filter(|m| m.kind == MemberKind::Group)
                    .map(|m| m.id.clone()),
            );
        }
        // A group that left brings its users' scope into question; whether it is still in the
        // tree another way, the tree check decides.
        for gone in &left {
            users.extend(self.users_under(gone).await?);
        }
        if !left.is_empty() {
            report.groups_left = self.ensure_tree().await?.left;
        }
        report.users = users.len();
        self.converge(users).await?;
        let record = ScopeGroupRecord {
            delta_link: Some(delta_link),
            updated_at: self.clock.now(),
        };
        // The group may have left the tree in this very job: its record stays gone.
        let still_in = *group == self.root
            || get_json::<ScopeGroupRecord>(&*self.state, SCOPE_GROUPS, &key)
                .await?
                .is_some();
        if still_in {
            let current = self.state.get(SCOPE_GROUPS, &key).await?;
            put_json(
                &*self.state,
                SCOPE_GROUPS,
                &key,
                &record,
                current.map(|c| c.version),
            )
            .await?;
        }
        Ok(report)
    }

    /// The tree as Graph has it now, from the scope group down: groups new to it join (a job
    /// each, whose first round lists their members), groups no longer in it leave.
    pub async fn ensure_tree(&self) -> Result<TreeReport, AppError> {
        let live = match self.groups_under(&self.root).await {
            Ok(live) => live,
            // A deleted scope group: the tree stays as it is (the pre-flight holds disables).
            Err(AppError::Graph { source, .. }) if source.is_not_found() => {
                tracing::error!(root = %self.root, "the scope group does not exist: the tree is kept as it was");
                return Ok(TreeReport::default());
            }
            Err(e) => return Err(e),
        };
        let recorded = self.recorded().await?;
        let mut report = TreeReport::default();
        for group in live.difference(&recorded) {
            if self.join(group).await? {
                report.joined += 1;
            }
        }
        for group in recorded.difference(&live) {
            if let Some(current) = self.state.get(SCOPE_GROUPS, group.as_str()).await? {
                match self
                    .state
                    .delete(SCOPE_GROUPS, group.as_str(), Some(current.version))
                    .await
                {
                    Err(e) if e.is_conflict() => {}
                    other => other?,
                }
                report.left += 1;
            }
        }
        report.groups = live.len();
        Ok(report)
    }

    /// A job for every group of the tree: each reads what changed since its last round. The
    /// safety net under the notifications, run with every check of the tree.
    pub async fn poll_all(&self) -> Result<usize, AppError> {
        let groups = self.recorded().await?;
        let now = Utc::now();
        let mut batch = Batch::new(self.queue.as_ref());
        for group_id in &groups {
            batch
                .push(Job::GroupChanged {
                    group_id: group_id.clone(),
                    received_at: now,
                    source: JobSource::Reconciler,
                })
                .await?;
        }
        batch.finish().await?;
        Ok(groups.len())
    }

    /// Every group of the tree as recorded.
    pub async fn recorded(&self) -> Result<BTreeSet<ObjectId>, AppError> {
        recorded_groups(&*self.state).await
    }

    /// A group joins the tree: recorded without a link, and a job that reads its members.
    /// False when it was there already.
    async fn join(&self, group: &ObjectId) -> Result<bool, AppError> {
        let record = ScopeGroupRecord {
            delta_link: None,
            updated_at: self.clock.now(),
        };
        match put_json(&*self.state, SCOPE_GROUPS, group.as_str(), &record, None).await {
            Err(e) if e.is_conflict() => return Ok(false),
            other => {
                other?;
            }
        }
        let mut batch = Batch::new(self.queue.as_ref());
        batch
            .push(Job::GroupChanged {
                group_id: group.clone(),
                received_at: Utc::now(),
                source: JobSource::Reconciler,
            })
            .await?;
        batch.finish().await?;
        Ok(true)
    }

    /// One whole groups delta round of `group` from `from`.
    async fn round(
        &self,
        group: &ObjectId,
        from: DeltaCursor,
    ) -> Result<(Vec<shadowsync_ports::GroupChange>, String), AppError> {
        let mut changes = Vec::new();
        let mut cursor = from;
        loop {
            let page = self
                .graph
                .group_delta(group, &cursor)
                .await
                .doing("reading the group's changes")?;
            changes.extend(page.items.into_iter().filter(|c| c.group == *group));
            match (page.next_link, page.delta_link) {
                (Some(next), _) => cursor = DeltaCursor::Link(next),
                (None, Some(link)) => return Ok((changes, link)),
                (None, None) => {
                    return Err(AppError::Unexpected {
                        action: "reading the group's changes",
                        detail: "a groups delta page with neither a nextLink nor a deltaLink"
                            .into(),
                    })
                }
            }
        }
    }

    /// `root` and every group nested in it (cycles allowed, each group once).
    async fn groups_under(&self, root: &ObjectId) -> Result<BTreeSet<ObjectId>, AppError> {
        let (groups, _) = self.walk(root).await?;
        Ok(groups)
    }

    /// Every user in `group`, directly or through nested groups.
    async fn users_under(&self, group: &ObjectId) -> Result<BTreeSet<ObjectId>, AppError> {
        match self.walk(group).await {
            Ok((_, users)) => Ok(users),
            // Deleted with its memberships: its users are found by the sweep.
            Err(AppError::Graph { source, .. }) if source.is_not_found() => Ok(BTreeSet::new()),
            Err(e) => Err(e),
        }
    }

    async fn walk(
        &self,
        root: &ObjectId,
    ) -> Result<(BTreeSet<ObjectId>, BTreeSet<ObjectId>), AppError> {
        let mut groups = BTreeSet::from([root.clone()]);
        let mut users = BTreeSet::new();
        let mut next = VecDeque::from([root.clone()]);
        while let Some(group) = next.pop_front() {
            let members = match self.graph.group_members(&group).await {
                // A nested group deleted meanwhile is simply no longer there.
                Err(e) if e.is_not_found() && group != *root => continue,
                other => other.doing("reading the group's members")?,
            };
            for m in members {
                match m.kind {
                    MemberKind::User => {
                        users.insert(m.id);
                    }
                    MemberKind::Group if groups.insert(m.id.clone()) => next.push_back(m.id),
                    _ => {}
                }
            }
        }
        Ok((groups, users))
    }

    async fn converge(&self, users: BTreeSet<ObjectId>) -> Result<(), AppError> {
        // Stamped by the system clock, as a notification's job is: each change's jobs are
        // distinct from an earlier one's for the queue's deduplication.
        let now = Utc::now();
        let mut batch = Batch::new(self.queue.as_ref());
        for user_id in users {
            batch.push(reconciler_job(user_id, None, now)).await?;
        }
        batch.finish().await?;
        Ok(())
    }
}

/// Every group of the scope tree as recorded in state (read from state alone: the subscription
/// keeper has no policy of its own on AWS).
pub async fn recorded_groups(state: &dyn KeyValueStore) -> Result<BTreeSet<ObjectId>, AppError> {
    Ok(keys(state, SCOPE_GROUPS)
        .await?
        .iter()
        .filter_map(|key| ObjectId::parse(key).ok())
        .collect())
}

/// What a check of the tree found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TreeReport {
    /// Groups in the tree now.
    pub groups: usize,
    pub joined: usize,
    pub left: usize,
}
