//! The AD watcher of the partner direction: which partner accounts changed, as jobs.
//!
//! Each round asks AD for every user account and tombstone whose `uSNChanged` is past the
//! watermark, domain-wide: an account moved out of a partner OU is no longer under it, and only
//! a search of the whole domain by the indexed `uSNChanged` sees it leave. Of those, the
//! accounts in scope and the ones shadowsync has a record of become jobs (one group per
//! account); an employee's change costs nothing more.
//!
//! The watermark is the DC's `highestCommittedUSN`, read before the search, with its
//! `invocationId`: another DC (or a restored one) starts a full comparison. So does the first
//! round, and one every `full_every`: every account in scope, every record, and every guest
//! carrying a link (what a lost state store leaves), as the safety net.

use crate::error::{AppError, Doing};
use crate::partners::PartnerSettings;
use crate::reconcile::Batch;
use chrono::Utc;
use serde::{Deserialize, Serialize};
use shadowsync_core::partner::{Mode, ObjectGuid};
use shadowsync_core::{dn, Clock};
use shadowsync_ports::{GuestGraph, PartnerChanges, PartnerDirectory};
use shadowsync_queue::{Job, JobSource, Queue};
use shadowsync_state::records::{CHECKPOINTS, PARTNERS, PARTNER_WATERMARK};
use shadowsync_state::{get_json, keys, put_json, KeyValueStore, PartnerWatermark};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

pub struct PartnerWatcher {
    pub directory: Arc<dyn PartnerDirectory>,
    pub guests: Arc<dyn GuestGraph>,
    pub state: Arc<dyn KeyValueStore>,
    pub queue: Arc<dyn Queue>,
    pub settings: PartnerSettings,
    /// Between two full comparisons.
    pub full_every: Duration,
    pub clock: Arc<dyn Clock>,
}

/// What one round found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchReport {
    /// A full comparison (first round, another DC, or due).
    pub full: bool,
    /// Accounts AD reported changed (employees included).
    pub changed: usize,
    /// Partner jobs queued.
    pub queued: usize,
    /// The new watermark.
    pub usn: u64,
}

impl PartnerWatcher {
    /// One round: the changes since the watermark, or a full comparison when one is due.
    pub async fn round(&self) -> Result<WatchReport, AppError> {
        let s = &self.settings;
        let stored =
            get_json::<PartnerWatermark>(&*self.state, CHECKPOINTS, PARTNER_WATERMARK).await?;
        let now = self.clock.now();
        let full_every =
            chrono::Duration::from_std(self.full_every).unwrap_or(chrono::Duration::MAX);
        let mut full = stored
            .as_ref()
            .is_none_or(|w| now < w.value.full_at || now - w.value.full_at >= full_every);
        let after = match (&stored, full) {
            (Some(w), false) => w.value.usn,
            _ => 0,
        };
        let mut changes = self
            .directory
            .changed_accounts(s.filter.as_deref(), &[], after)
            .await?;
        if let Some(w) = stored.as_ref().filter(|_| !full) {
            if w.value.invocation_id != changes.invocation_id {
                tracing::warn!(was = %w.value.invocation_id, now = %changes.invocation_id,
                    "another domain controller (or a restored one) answers: a full comparison");
                full = true;
                changes = self
                    .directory
                    .changed_accounts(s.filter.as_deref(), &[], 0)
                    .await?;
            }
        }
        let guids = self.candidates(&changes, full).await?;
        let received_at = Utc::now();
        let mut batch = Batch::new(self.queue.as_ref());
        for guid in &guids {
            batch
                .push(Job::Partner {
                    guid: *guid,
                    received_at,
                    source: JobSource::Reconciler,
                })
                .await?;
        }
        batch.finish().await?;
        let watermark = PartnerWatermark {
            usn: changes.highest_usn,
            invocation_id: changes.invocation_id.clone(),
            full_at: match (full, &stored) {
                (false, Some(w)) => w.value.full_at,
                _ => now,
            },
        };
        match put_json(
            &*self.state,
            CHECKPOINTS,
            PARTNER_WATERMARK,
            &watermark,
            stored.as_ref().map(|w| w.version),
        )
        .await
        {
            // Another host's round moved it meanwhile: the next round starts from theirs,
            // and the jobs queued here are repeats at worst.
            Err(e) if e.is_conflict() => {}
            other => {
                other?;
            }
        }
        Ok(WatchReport {
            full,
            changed: changes.accounts.len(),
            queued: guids.len(),
            usn: changes.highest_usn,
        })
    }

    /// Every partner account, every account with a record, and (invite) every account a guest
    /// is linked to: what a full sync looks at.
    pub async fn everyone(&self) -> Result<BTreeSet<ObjectGuid>, AppError> {
        let s = &self.settings;
        let changes = self
            .directory
            .changed_accounts(s.filter.as_deref(), &[], 0)
            .await?;
        self.candidates(&changes, true).await
    }

    /// Of the accounts AD reported changed, the ones to converge: in scope (a tombstone: last
    /// seen in a partner OU), or known; a full comparison adds every record and, in invite
    /// mode, every account a guest carries the link of.
    async fn candidates(
        &self,
        changes: &PartnerChanges,
        full: bool,
    ) -> Result<BTreeSet<ObjectGuid>, AppError> {
        let s = &self.settings;
        let known = match full {
            true => Some(self.recorded().await?),
            false => None,
        };
        let mut guids = BTreeSet::new();
        for account in &changes.accounts {
            // A tombstone matches no filter: where it was decides (it may have had a guest
            // whose record is lost).
            let partner = match account.deleted {
                false => s.scope.includes(account),
                true => dn::parent(&account.dn)
                    .is_some_and(|parent| s.scope.ous.iter().any(|ou| dn::same(&parent, ou))),
            };
            let recorded = match &known {
                Some(known) => known.contains(&account.guid),
                None => !partner && self.is_recorded(&account.guid).await?,
            };
            if partner || recorded {
                guids.insert(account.guid);
            }
        }
        if let Some(known) = known {
            guids.extend(known);
            if s.mode == Mode::Invite {
                let linked = self
                    .guests
                    .linked_guests(&s.link_attribute)
                    .await
                    .doing("listing the guests linked to partner accounts")?;
                guids.extend(
                    linked
                        .iter()
                        .filter_map(|g| g.link.as_deref().and_then(ObjectGuid::from_link)),
                );
            }
        }
        Ok(guids)
    }

    async fn is_recorded(&self, guid: &ObjectGuid) -> Result<bool, AppError> {
        Ok(self.state.get(PARTNERS, &guid.to_string()).await?.is_some())
    }

    /// Every account shadowsync has a record of.
    async fn recorded(&self) -> Result<BTreeSet<ObjectGuid>, AppError> {
        Ok(keys(&*self.state, PARTNERS)
            .await?
            .iter()
            .filter_map(|key| key.parse::<ObjectGuid>().ok())
            .collect())
    }
}
