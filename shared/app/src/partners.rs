//! The partner direction: converge one partner account's guest. Read the account from AD by its
//! `objectGUID`, find its guest in Entra (by the id remembered, the link on the guest, the
//! partner's address, or, converted, the immutable id), plan with the pure core, pass blocks and
//! deletes through the safety rails, apply, record. Idempotent, and works with an empty state
//! store: the link on the guest and the account in AD are the truth.

use crate::error::{AppError, Doing};
use crate::safety::{Proposal, Safety, Verdict};
use serde::{Deserialize, Serialize};
use shadowsync_config::{PartnerMode, PartnersSection};
use shadowsync_core::partner::{
    desired_guest, plan_guest, DesiredGuest, GuestOperation, Mode, ObjectGuid, ObservedGuest,
    PartnerAccount, PartnerAttribute, PartnerScope,
};
use shadowsync_core::{Clock, ObjectId, Policy};
use shadowsync_ports::{GuestChange, GuestGraph, Invitation, PartnerDirectory};
use shadowsync_state::records::PARTNERS;
use shadowsync_state::{
    Destructive, HeldChange, KeyValueStore, PartnerRecord, PartnerStatus, Versioned,
};
use std::sync::Arc;

/// How partner accounts become guests, from `[partners]` and the policy.
#[derive(Debug, Clone)]
pub struct PartnerSettings {
    pub mode: Mode,
    pub scope: PartnerScope,
    pub filter: Option<String>,
    pub link_attribute: String,
    pub attributes: Vec<PartnerAttribute>,
    pub redirect_url: String,
    pub send_invitation_message: bool,
    pub message_language: Option<String>,
}

impl PartnerSettings {
    /// From `[partners]`; the policy's managed OUs are never partner places.
    pub fn new(section: &PartnersSection, policy: &Policy) -> Self {
        Self {
            mode: match section.mode {
                PartnerMode::Invite => Mode::Invite,
                PartnerMode::Convert => Mode::Convert,
            },
            scope: PartnerScope {
                ous: section.ous.clone(),
                upn_suffixes: section.upn_suffixes.clone(),
                tenant_domains: vec![],
                retention: section.retention,
                excluded_ous: vec![policy.guests_ou.clone(), policy.disabled_ou.clone()],
            },
            filter: section.filter.clone(),
            link_attribute: section.link_attribute.clone(),
            attributes: section.attributes.clone(),
            redirect_url: section.redirect_url.to_string(),
            send_invitation_message: section.send_invitation_message,
            message_language: section.message_language.clone(),
        }
    }
}

/// What converging one partner account did (or, in a dry run, would do).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PartnerOutcome {
    pub guid: ObjectGuid,
    /// Where the account is in AD (where it was, for a deleted one).
    pub dn: Option<String>,
    pub sam_account_name: Option<String>,
    pub user_principal_name: Option<String>,
    pub guest_id: Option<ObjectId>,
    /// The address the guest was invited, converted or last reset with.
    #[serde(default)]
    pub address: Option<String>,
    /// The operations, in words.
    pub plan: Vec<String>,
    /// False for a dry run.
    pub applied: bool,
    pub status: PartnerStatus,
    pub conflict: Option<String>,
    /// Why a block or delete is held by the safety rails.
    pub held: Option<String>,
}

impl PartnerOutcome {
    /// Whether anything was (or would be) changed in Entra.
    pub fn changed(&self) -> bool {
        self.applied && !self.plan.is_empty() && self.conflict.is_none()
    }

    /// The account's best name for people: sAMAccountName, else the GUID.
    pub fn name(&self) -> String {
        self.sam_account_name
            .clone()
            .unwrap_or_else(|| self.guid.to_string())
    }
}

/// One partner account as AD, Entra and state see it, and what converging would do
/// (`shadowsync status PARTNER`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PartnerReport {
    /// A dry run: the account, its guest, the plan, and what the safety rails would hold.
    pub outcome: PartnerOutcome,
    pub mail: Option<String>,
    /// Whether the account is enabled in AD (`None`: it is gone).
    pub enabled: Option<bool>,
    /// Whether the account is a partner now (in the configured scope).
    pub in_scope: bool,
    pub record: Option<PartnerRecord>,
}

/// An operation in words, for logs, `plan` and held changes.
pub fn describe_operation(op: &GuestOperation) -> String {
    match op {
        GuestOperation::Invite { address } => format!("invite {address}"),
        GuestOperation::Adopt => "adopt the guest (link it to the account)".into(),
        GuestOperation::Convert { address } => format!("convert to B2B with {address}"),
        GuestOperation::MakeGuest => "set userType Guest".into(),
        GuestOperation::Update(changes) => format!(
            "update {}",
            changes
                .iter()
                .map(|(a, _)| a.graph_name())
                .collect::<Vec<_>>()
                .join(", ")
        ),
        GuestOperation::ResetRedemption { address } => format!("reset redemption to {address}"),
        GuestOperation::Block => "block sign-in".into(),
        GuestOperation::Unblock => "unblock sign-in".into(),
        GuestOperation::Delete => "delete the guest".into(),
        GuestOperation::Conflict(why) => format!("conflict: {why}"),
        GuestOperation::AwaitSync(why) => format!("waiting for Entra Connect: {why}"),
    }
}

/// The operations in words, `;`-separated.
pub fn describe_operations(ops: &[GuestOperation]) -> String {
    ops.iter()
        .map(describe_operation)
        .collect::<Vec<_>>()
        .join("; ")
}

pub struct PartnerConverger {
    pub guests: Arc<dyn GuestGraph>,
    pub directory: Arc<dyn PartnerDirectory>,
    pub state: Arc<dyn KeyValueStore>,
    pub settings: PartnerSettings,
    /// Graph's clock: retention counts by it.
    pub clock: Arc<dyn Clock>,
    pub safety: Arc<Safety>,
}

/// The guest found for an account, or why none can be trusted.
type Found = Result<Option<ObservedGuest>, String>;

impl PartnerConverger {
    /// Converges the guest of the account `guid`.
    pub async fn converge(&self, guid: &ObjectGuid) -> Result<PartnerOutcome, AppError> {
        self.run(guid, false).await
    }

    /// What converging would do, changing nothing.
    pub async fn dry_run(&self, guid: &ObjectGuid) -> Result<PartnerOutcome, AppError> {
        self.run(guid, true).await
    }

    /// The account `name` names (an objectGUID, a sAMAccountName, a userPrincipalName or a
    /// mail address) if it is a partner or has been one; `None` otherwise.
    pub async fn resolve(&self, name: &str) -> Result<Option<ObjectGuid>, AppError> {
        if let Ok(guid) = name.parse::<ObjectGuid>() {
            return Ok(Some(guid));
        }
        let s = &self.settings;
        let named = self
            .directory
            .partner_accounts_named(name, s.filter.as_deref(), &s.attributes)
            .await?;
        let mut partners = Vec::new();
        for account in named {
            let known = PartnerRecord::load(&*self.state, &account.guid)
                .await?
                .is_some();
            if known || s.scope.includes(&account) {
                partners.push(account);
            }
        }
        match partners.as_slice() {
            [] => Ok(None),
            [one] => Ok(Some(one.guid)),
            several => Err(AppError::NotFound(format!(
                "{name} names {} partner accounts: {}; name one by objectGUID",
                several.len(),
                several
                    .iter()
                    .map(|a| format!("{} ({})", a.dn, a.guid))
                    .collect::<Vec<_>>()
                    .join(", ")
            ))),
        }
    }

    /// The report of the partner account `name` names; `None` when it names none.
    pub async fn report(&self, name: &str) -> Result<Option<PartnerReport>, AppError> {
        let Some(guid) = self.resolve(name).await? else {
            return Ok(None);
        };
        let account = self.account(&guid).await?;
        let record = PartnerRecord::load(&*self.state, &guid)
            .await?
            .map(|r| r.value);
        let outcome = self.dry_run(&guid).await?;
        Ok(Some(PartnerReport {
            outcome,
            mail: account.as_ref().and_then(|a| a.mail.clone()),
            enabled: account.as_ref().filter(|a| !a.deleted).map(|a| a.enabled),
            in_scope: account
                .as_ref()
                .is_some_and(|a| !a.deleted && self.settings.scope.includes(a)),
            record,
        }))
    }

    /// The account as AD shows it now (`None`: neither it nor its tombstone exists).
    pub async fn account(&self, guid: &ObjectGuid) -> Result<Option<PartnerAccount>, AppError> {
        let s = &self.settings;
        Ok(self
            .directory
            .partner_account(guid, s.filter.as_deref(), &s.attributes)
            .await?)
    }

    async fn run(&self, guid: &ObjectGuid, dry: bool) -> Result<PartnerOutcome, AppError> {
        let s = &self.settings;
        let account = self.account(guid).await?;
        // `loaded` is what the decisions read; `stored` follows what this converge saves.
        let mut stored = PartnerRecord::load(&*self.state, guid).await?;
        let loaded = stored.clone();
        let record = loaded.as_ref().map(|r| &r.value);
        let now = self.clock.now();
        let desired = desired_guest(
            account.as_ref(),
            &s.scope,
            record.and_then(|r| r.gone_since),
            now,
        );
        // Converting, a non-partner without a record has no user of ours to look for (Entra
        // Connect masters every synced user): an employee's change costs no Graph query.
        let skip = s.mode == Mode::Convert
            && record.is_none()
            && matches!(desired, DesiredGuest::Gone { .. });
        let found = match skip {
            true => Ok(None),
            false => self.find(guid, record, &desired).await?,
        };
        let mut outcome = PartnerOutcome {
            guid: *guid,
            dn: account.as_ref().map(|a| a.dn.clone()),
            sam_account_name: account
                .as_ref()
                .map(|a| a.sam_account_name.clone())
                .or_else(|| record.and_then(|r| r.sam_account_name.clone())),
            user_principal_name: account
                .as_ref()
                .and_then(|a| a.user_principal_name.clone())
                .or_else(|| record.and_then(|r| r.user_principal_name.clone())),
            guest_id: None,
            address: record.and_then(|r| r.address.clone()),
            plan: vec![],
            applied: !dry,
            status: PartnerStatus::NotPartner,
            conflict: None,
            held: None,
        };
        let observed = match found {
            Ok(observed) => observed,
            Err(why) => {
                outcome.conflict = Some(why.clone());
                outcome.status = PartnerStatus::Conflict;
                outcome.plan = vec![describe_operation(&GuestOperation::Conflict(why))];
                outcome.guest_id = record.and_then(|r| r.guest_id.clone());
                if !dry {
                    self.record(&outcome, &desired, stored.as_ref()).await?;
                }
                return Ok(outcome);
            }
        };
        // Not a partner (or no longer one), no guest of it, nothing remembered: nothing to do
        // and nothing to keep (an employee's change costs no record).
        if record.is_none() && observed.is_none() && matches!(desired, DesiredGuest::Gone { .. }) {
            return Ok(outcome);
        }
        if let (None, Some(g), DesiredGuest::Active { address, .. }) =
            (&outcome.address, &observed, &desired)
        {
            // No record (a lost store): the address the guest holds is taken as its own.
            if g.mail
                .iter()
                .chain(&g.other_mails)
                .any(|m| m.eq_ignore_ascii_case(address))
            {
                outcome.address = Some(address.clone());
            }
        }
        let mut ops = plan_guest(
            *guid,
            &desired,
            observed.as_ref(),
            s.mode,
            outcome.address.as_deref(),
        );
        outcome.guest_id = observed.as_ref().map(|g| g.id.clone());
        let waiting = ops.iter().find_map(|op| match op {
            GuestOperation::AwaitSync(why) => Some(why.clone()),
            _ => None,
        });
        outcome.conflict = ops.iter().find_map(|op| match op {
            GuestOperation::Conflict(why) | GuestOperation::AwaitSync(why) => Some(why.clone()),
            _ => None,
        });
        let settled = self
            .judge(guid, &mut ops, observed.as_ref(), &mut outcome, dry)
            .await?;
        outcome.plan = ops.iter().map(describe_operation).collect();
        if !dry {
            if !ops.is_empty() {
                tracing::info!(%guid, plan = %describe_operations(&ops), "applying to the partner's guest");
            }
            // The record an invitation saved on the way, if it did.
            let saved = self
                .apply(
                    guid,
                    &ops,
                    &desired,
                    observed.as_ref(),
                    &mut outcome,
                    &stored,
                )
                .await?;
            if saved.is_some() {
                stored = saved;
            }
            // Applied, or no longer needed: a held change of this guest is settled.
            if let Some(held) = &settled {
                self.safety.forget(held).await?;
            }
        }
        outcome.status = status(&desired, observed.as_ref(), &ops, &outcome);
        // Nothing left on either side (the tombstone purged, the guest deleted): the record
        // goes too, or every full comparison would look at it for ever.
        let forgotten = account.is_none() && observed.is_none() && ops.is_empty();
        if let (false, true, Some(stored)) = (dry, forgotten, &stored) {
            match self
                .state
                .delete(PARTNERS, &guid.to_string(), Some(stored.version))
                .await
            {
                // Written meanwhile by another job of this account: that one stands.
                Err(e) if e.is_conflict() => {}
                other => other?,
            }
            return Ok(outcome);
        }
        if !dry {
            self.record(&outcome, &desired, stored.as_ref()).await?;
            // Waiting for Entra Connect is not an answer: what it brings appears on its next
            // cycle, and nothing in AD will change to say so. The job comes back.
            if let Some(why) = waiting {
                return Err(AppError::NotSyncedYet(why));
            }
        }
        Ok(outcome)
    }

    /// The guest of the account: the one remembered (if it still carries our link, or none
    /// yet), else the one carrying the link, else the user at the partner's address (invite);
    /// the user synced from the account (convert). `Err`: several candidates, none trusted.
    async fn find(
        &self,
        guid: &ObjectGuid,
        record: Option<&PartnerRecord>,
        desired: &DesiredGuest,
    ) -> Result<Found, AppError> {
        let s = &self.settings;
        let one = |mut users: Vec<ObservedGuest>, what: &str| -> Found {
            match users.len() {
                0 | 1 => Ok(users.pop()),
                _ => Err(format!(
                    "{} users {what}: {}; shadowsync changes none of them",
                    users.len(),
                    users
                        .iter()
                        .map(|u| u.id.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                )),
            }
        };
        if s.mode == Mode::Convert {
            let users = self
                .guests
                .users_by_immutable_id(&guid.immutable_id())
                .await
                .doing("looking up the user synced from the account")?;
            return Ok(one(users, "are synced from this account"));
        }
        let link = guid.link();
        // The id first: a guest just invited may not be found by a query yet (advanced
        // queries are eventually consistent), and reading by id is cheaper.
        if let Some(id) = record.and_then(|r| r.guest_id.as_ref()) {
            let guest = self
                .guests
                .guest(id, &s.link_attribute)
                .await
                .doing("reading the partner's guest")?;
            if let Some(g) = guest.filter(|g| g.link.is_none() || g.link.as_deref() == Some(&link))
            {
                return Ok(Ok(Some(g)));
            }
        }
        let linked = self
            .guests
            .guests_by_link(&s.link_attribute, &link)
            .await
            .doing("looking up the guest linked to the account")?;
        if !linked.is_empty() {
            return Ok(one(linked, "carry this account's link"));
        }
        match desired {
            DesiredGuest::Active { address, .. } => {
                let users = self
                    .guests
                    .users_by_address(address, &s.link_attribute)
                    .await
                    .doing("looking up the partner's address")?;
                Ok(one(users, &format!("hold {address}")))
            }
            _ => Ok(Ok(None)),
        }
    }

    /// Passes a block or delete through the safety rails: held, it is taken out of `ops`.
    /// Returns the guest's held change that applying `ops` settles (released, or no longer
    /// needed).
    async fn judge(
        &self,
        guid: &ObjectGuid,
        ops: &mut Vec<GuestOperation>,
        observed: Option<&ObservedGuest>,
        outcome: &mut PartnerOutcome,
        dry: bool,
    ) -> Result<Option<Versioned<HeldChange>>, AppError> {
        let Some(guest) = observed else {
            return Ok(None);
        };
        let change = if ops.contains(&GuestOperation::Delete) {
            Some(Destructive::Delete)
        } else if ops.contains(&GuestOperation::Block) {
            Some(Destructive::Disable)
        } else {
            None
        };
        let held = self.safety.held(&guest.id, Some(guid)).await?;
        let Some(change) = change else {
            return Ok(held);
        };
        let reason = if dry {
            self.safety.would_hold(held.as_ref()).await?
        } else {
            let proposal = Proposal {
                object_id: guest.id.clone(),
                partner: Some(*guid),
                user_principal_name: outcome
                    .user_principal_name
                    .clone()
                    .or_else(|| outcome.sam_account_name.clone()),
                dn: outcome.dn.clone(),
                change,
                plan: describe_operations(ops),
            };
            match self.safety.admit(&proposal, held.as_ref()).await? {
                Verdict::Go => None,
                Verdict::Hold(reason) => Some(reason),
            }
        };
        match reason {
            Some(reason) => {
                ops.retain(|op| !matches!(op, GuestOperation::Block | GuestOperation::Delete));
                outcome.held = Some(reason);
                Ok(None)
            }
            None => Ok(held),
        }
    }

    async fn apply(
        &self,
        guid: &ObjectGuid,
        ops: &[GuestOperation],
        desired: &DesiredGuest,
        observed: Option<&ObservedGuest>,
        outcome: &mut PartnerOutcome,
        stored: &Option<Versioned<PartnerRecord>>,
    ) -> Result<Option<Versioned<PartnerRecord>>, AppError> {
        let s = &self.settings;
        let invitation = |address: &str, invited_user: Option<ObjectId>, reset: bool| Invitation {
            address: address.to_string(),
            redirect_url: s.redirect_url.clone(),
            send_message: s.send_invitation_message,
            message_language: s.message_language.clone(),
            invited_user,
            reset_redemption: reset,
        };
        let mut id = observed.map(|g| g.id.clone());
        let mut change = GuestChange::default();
        let mut reset = None;
        let mut delete = false;
        let mut invited = false;
        let mut saved = None;
        for op in ops {
            match op {
                GuestOperation::Invite { address } => {
                    let new = match self
                        .send(&invitation(address, None, false), "inviting the partner")
                        .await?
                    {
                        Ok(new) => new,
                        Err(refused) => {
                            outcome.conflict = Some(refused);
                            return Ok(saved);
                        }
                    };
                    // Remembered at once: a retry reads this guest by id instead of
                    // looking for it with a query that may not see it yet.
                    outcome.guest_id = Some(new.clone());
                    outcome.address = Some(address.clone());
                    outcome.status = PartnerStatus::Active;
                    let previous = stored.as_ref().map(|r| &r.value);
                    let mut record = new_record(guid, outcome, desired, previous);
                    record.guest_id = Some(new.clone());
                    let version = record
                        .save(&*self.state, stored.as_ref().map(|r| r.version))
                        .await?;
                    saved = Some(Versioned {
                        value: record,
                        version,
                    });
                    id = Some(new);
                    invited = true;
                    change.link = Some((s.link_attribute.clone(), guid.link()));
                    if let DesiredGuest::Active {
                        properties,
                        enabled,
                        ..
                    } = desired
                    {
                        change.properties = properties
                            .iter()
                            .filter(|(_, v)| v.is_some())
                            .cloned()
                            .collect();
                        if !enabled {
                            change.account_enabled = Some(false);
                        }
                    }
                }
                GuestOperation::Adopt => {
                    change.link = Some((s.link_attribute.clone(), guid.link()));
                    if let DesiredGuest::Active { address, .. } = desired {
                        outcome.address = Some(address.clone());
                    }
                }
                GuestOperation::Convert { address } => {
                    let converting = invitation(address, id.clone(), false);
                    if let Err(refused) = self
                        .send(
                            &converting,
                            "converting the synced user to B2B collaboration",
                        )
                        .await?
                    {
                        outcome.conflict = Some(refused);
                        return Ok(saved);
                    }
                    outcome.address = Some(address.clone());
                }
                GuestOperation::MakeGuest => change.user_type = Some("Guest".into()),
                GuestOperation::Update(properties) => change.properties = properties.clone(),
                GuestOperation::ResetRedemption { address } => {
                    // A synced user's mail is Entra Connect's: it is there already.
                    if s.mode == Mode::Invite {
                        change.address = Some(address.clone());
                    }
                    reset = Some(address.clone());
                }
                GuestOperation::Block => change.account_enabled = Some(false),
                GuestOperation::Unblock => change.account_enabled = Some(true),
                GuestOperation::Delete => delete = true,
                GuestOperation::Conflict(_) | GuestOperation::AwaitSync(_) => {}
            }
        }
        let Some(id) = id else { return Ok(saved) };
        if !change.is_empty() {
            match self.guests.update_guest(&id, &change).await {
                // A guest just invited may not be on the replica that answers yet: the job
                // comes back, finds it by id, and sets what is missing.
                Err(e) if invited && e.is_not_found() => {
                    return Err(AppError::NotVisibleYet {
                        reported_at: self.clock.now(),
                    })
                }
                other => other.doing("updating the partner's guest")?,
            }
        }
        if let Some(address) = reset {
            let resetting = invitation(&address, Some(id.clone()), true);
            match self
                .send(&resetting, "resetting the guest's redemption")
                .await?
            {
                Ok(_) => outcome.address = Some(address),
                Err(refused) => outcome.conflict = Some(refused),
            }
        }
        if delete {
            self.guests
                .delete_user(&id)
                .await
                .doing("deleting the partner's guest")?;
        }
        outcome.guest_id = Some(id);
        Ok(saved)
    }

    /// Sends an invitation; `Ok(Err(reason))` when Graph refuses it for what it holds (400: an
    /// address in one of the tenant's verified domains, a precondition of the conversion):
    /// reported as a conflict, not retried, not dead-lettered.
    async fn send(
        &self,
        invitation: &Invitation,
        doing: &'static str,
    ) -> Result<Result<ObjectId, String>, AppError> {
        match self.guests.invite(invitation).await {
            Ok(id) => Ok(Ok(id)),
            Err(e) if e.status() == Some(400) => Ok(Err(format!(
                "Graph refused the invitation of {}: {e}",
                invitation.address
            ))),
            Err(e) => Err(e).doing(doing),
        }
    }

    /// Saves what was done over `current` (the record as loaded, or as an invitation saved it
    /// during this converge), when it differs.
    async fn record(
        &self,
        outcome: &PartnerOutcome,
        desired: &DesiredGuest,
        current: Option<&Versioned<PartnerRecord>>,
    ) -> Result<(), AppError> {
        let version = current.map(|r| r.version);
        let mut record = new_record(&outcome.guid, outcome, desired, current.map(|r| &r.value));
        if let Some(current) = current {
            let mut same = record.clone();
            same.updated_at = current.value.updated_at;
            if same == current.value {
                return Ok(());
            }
        }
        record.updated_at = self.clock.now();
        record.save(&*self.state, version).await?;
        Ok(())
    }
}

/// The record `outcome` leaves, from the previous one.
fn new_record(
    guid: &ObjectGuid,
    outcome: &PartnerOutcome,
    desired: &DesiredGuest,
    previous: Option<&PartnerRecord>,
) -> PartnerRecord {
    PartnerRecord {
        guid: *guid,
        sam_account_name: outcome.sam_account_name.clone(),
        user_principal_name: outcome.user_principal_name.clone(),
        address: outcome
            .address
            .clone()
            .or_else(|| previous.and_then(|p| p.address.clone())),
        guest_id: outcome
            .guest_id
            .clone()
            .or_else(|| previous.and_then(|p| p.guest_id.clone())),
        status: outcome.status,
        gone_since: match desired {
            DesiredGuest::Gone { since, .. } => Some(*since),
            _ => None,
        },
        conflict: outcome.conflict.clone(),
        updated_at: previous.map_or_else(chrono::Utc::now, |p| p.updated_at),
    }
}

/// Where the guest stands after `ops` (or would, in a dry run).
fn status(
    desired: &DesiredGuest,
    observed: Option<&ObservedGuest>,
    ops: &[GuestOperation],
    outcome: &PartnerOutcome,
) -> PartnerStatus {
    if outcome.conflict.is_some() {
        return PartnerStatus::Conflict;
    }
    let exists = observed.is_some()
        || ops
            .iter()
            .any(|op| matches!(op, GuestOperation::Invite { .. }));
    match desired {
        DesiredGuest::Unaddressable(_) => PartnerStatus::Conflict,
        _ if ops.contains(&GuestOperation::Delete) => PartnerStatus::Deleted,
        DesiredGuest::Gone { .. } if exists => PartnerStatus::Gone,
        DesiredGuest::Gone { .. } => PartnerStatus::Deleted,
        DesiredGuest::Active { enabled, .. } => {
            let blocked = match observed {
                Some(g) => {
                    let mut enabled_now = g.account_enabled;
                    for op in ops {
                        match op {
                            GuestOperation::Block => enabled_now = false,
                            GuestOperation::Unblock => enabled_now = true,
                            _ => {}
                        }
                    }
                    !enabled_now
                }
                None => !enabled,
            };
            if blocked {
                PartnerStatus::Blocked
            } else {
                PartnerStatus::Active
            }
        }
    }
}
