//! The admin commands as the administrator sees them: where they run, and how they print.

use crate::admin::Remote;
use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use reqwest::Method;
use shadowsync_app::admin::{self, HeldSelection, StatusReport, SyncReport, UserReport};
use shadowsync_app::partners::PartnerReport;
use shadowsync_app::{describe, App, AppError, Outcome, PartnerOutcome, Settings, Storage};
use shadowsync_config::Config;
use shadowsync_core::Operation;
use shadowsync_queue::DeadLetter;
use shadowsync_state::{HeldChange, StateError};

/// Where a command runs: on the store itself, or through the `serve` that holds it.
pub enum Backend {
    Local {
        config: Box<Config>,
        storage: Storage,
    },
    /// The running `serve`, and whether its configuration has `[partners]`.
    Remote { remote: Remote, partners: bool },
}

impl Backend {
    pub fn open(config: Config) -> Result<Self> {
        match Storage::embedded(config.state_path()?, config.provisioner.max_attempts) {
            Ok((storage, _)) => Ok(Backend::Local {
                config: Box::new(config),
                storage,
            }),
            Err(AppError::State(StateError::InUse(_))) => Ok(Backend::Remote {
                remote: Remote::new(config.admin.listen, config.state_path()?)?,
                partners: config.partners.is_some(),
            }),
            Err(e) => Err(e).context("opening the state store"),
        }
    }

    /// The application on the local store, connected to Graph and the directory (only the
    /// commands that need them build it).
    async fn app(config: &Config, storage: Storage) -> Result<App> {
        App::build(&Settings::from_config(config), storage)
            .await
            .with_context(|| format!("connecting to the directory at {}", config.directory.url))
    }
}

fn progress_bar(message: &'static str) -> ProgressBar {
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} guests ({eta} left)")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar.set_message(message);
    bar
}

fn print_json(value: &impl serde::Serialize) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

pub async fn plan(backend: Backend, json: bool) -> Result<()> {
    let (outcomes, partners): (Vec<Outcome>, Option<Vec<PartnerOutcome>>) = match backend {
        Backend::Local { config, storage } => {
            let app = Backend::app(&config, storage).await?;
            let bar = progress_bar("planning");
            let outcomes = app
                .plan(|done, total| {
                    bar.set_length(total);
                    bar.set_position(done);
                })
                .await?;
            let partners = match config.partners.is_some() {
                true => Some(
                    app.plan_partners(|done, total| {
                        bar.set_length(total);
                        bar.set_position(done);
                    })
                    .await?,
                ),
                false => None,
            };
            bar.finish_and_clear();
            (outcomes, partners)
        }
        Backend::Remote { remote, partners } => {
            let outcomes = remote.call(Method::GET, &["plan"]).await?;
            let partners = match partners {
                true => Some(remote.call(Method::GET, &["plan", "partners"]).await?),
                false => None,
            };
            (outcomes, partners)
        }
    };
    if json {
        // The guests' array as before; with [partners], both directions side by side.
        return match partners {
            None => print_json(&outcomes),
            Some(partners) => print_json(&serde_json::json!({
                "guests": outcomes,
                "partners": partners,
            })),
        };
    }
    if let Some(partners) = &partners {
        print_partner_plan(partners);
    }
    let mut counts = std::collections::BTreeMap::<&str, u64>::new();
    for o in &outcomes {
        let who = o.user_principal_name.as_deref().unwrap_or(&o.user_id);
        for op in &o.plan {
            *counts.entry(kind(op)).or_insert(0) += 1;
        }
        if o.plan.is_empty() {
            *counts.entry("unchanged").or_insert(0) += 1;
        } else {
            println!("{who} ({})", o.user_id);
            for op in &o.plan {
                println!("    {op}");
            }
            if let Some(reason) = &o.held {
                *counts.entry("held").or_insert(0) += 1;
                println!("    HELD: {reason}");
            }
        }
    }
    let summary: Vec<String> = counts.iter().map(|(k, n)| format!("{n} {k}")).collect();
    println!(
        "\n{} guests: {}. Nothing was changed.",
        outcomes.len(),
        summary.join(", ")
    );
    Ok(())
}

fn print_partner_plan(outcomes: &[PartnerOutcome]) {
    let mut changing = 0;
    for o in outcomes
        .iter()
        .filter(|o| !o.plan.is_empty() || o.held.is_some())
    {
        changing += 1;
        println!("partner {} ({})", o.name(), o.guid);
        for op in &o.plan {
            println!("    {op}");
        }
        if let Some(reason) = &o.held {
            println!("    HELD: {reason}");
        }
    }
    println!(
        "{} partner accounts: {changing} to change, {} unchanged.\n",
        outcomes.len(),
        outcomes.len() - changing
    );
}

fn kind(op: &Operation) -> &'static str {
    match op {
        Operation::Create { .. } => "create",
        Operation::Update { .. } => "update",
        Operation::Disable { .. } => "disable",
        Operation::Enable { .. } => "enable",
        Operation::Move { .. } => "move",
        Operation::Delete { .. } => "delete",
        Operation::Conflict { .. } => "conflict",
    }
}

pub async fn sync(backend: Backend) -> Result<()> {
    match backend {
        Backend::Local { config, storage } => {
            let app = Backend::app(&config, storage).await?;
            let bar = progress_bar("syncing");
            let report: SyncReport = app
                .sync(|done, total| {
                    bar.set_length(total);
                    bar.set_position(done);
                })
                .await?;
            bar.finish_and_clear();
            print_sync("guests", &report);
            let mut errors = report.errors.len();
            if config.partners.is_some() {
                let bar = progress_bar("partners");
                let partners = app
                    .sync_partners(|done, total| {
                        bar.set_length(total);
                        bar.set_position(done);
                    })
                    .await?;
                bar.finish_and_clear();
                print_sync("partner accounts", &partners);
                errors += partners.errors.len();
            }
            anyhow::ensure!(
                errors == 0,
                "{errors} guests or partners could not be synced"
            );
        }
        Backend::Remote { remote, .. } => {
            let answer: serde_json::Value = remote.call(Method::POST, &["sync"]).await?;
            let enqueued = answer["enqueued"].as_u64().unwrap_or(0);
            let bar = progress_bar("syncing");
            bar.set_length(enqueued);
            loop {
                let status: StatusReport = remote.call(Method::GET, &["status"]).await?;
                bar.set_position(enqueued.saturating_sub(status.queue.depth));
                if status.queue.depth == 0 {
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
            bar.finish_and_clear();
            println!("{enqueued} guests synced by the running shadowsync serve. See `shadowsync status`.");
        }
    }
    Ok(())
}

/// A sync's summary: `what` counted, changed, by status; then each conflict, hold and error.
fn print_sync(what: &str, report: &SyncReport) {
    let by_status: Vec<String> = report
        .by_status
        .iter()
        .map(|(k, n)| format!("{n} {k}"))
        .collect();
    println!(
        "{} {what}, {} changed: {}.",
        report.guests,
        report.changed,
        by_status.join(", ")
    );
    for (id, reason) in &report.conflicts {
        println!("conflict {id}: {reason}");
    }
    for (id, reason) in &report.held {
        println!("held {id}: {reason}");
    }
    for (id, reason) in &report.waiting {
        println!("waiting {id}: {reason}");
    }
    for (id, error) in &report.errors {
        println!("error {id}: {error}");
    }
}

pub async fn status(backend: Backend, user: Option<String>, json: bool) -> Result<()> {
    if let Some(key) = user {
        // A partner account first (the name an administrator types may be either).
        let (partner, report): (Option<PartnerReport>, Option<UserReport>) = match backend {
            Backend::Local { config, storage } => {
                let app = Backend::app(&config, storage).await?;
                match app.partner_report(&key).await? {
                    Some(p) => (Some(p), None),
                    None => (None, Some(app.user_report(&key).await?)),
                }
            }
            Backend::Remote { remote, partners } => {
                let partner: Option<PartnerReport> = match partners {
                    true => remote.call(Method::GET, &["partners", &key]).await?,
                    false => None,
                };
                match partner {
                    Some(p) => (Some(p), None),
                    None => (
                        None,
                        Some(remote.call(Method::GET, &["users", &key]).await?),
                    ),
                }
            }
        };
        if let Some(p) = partner {
            return if json {
                print_json(&p)
            } else {
                print_partner(&p)
            };
        }
        let report = report.expect("one of the two");
        return if json {
            print_json(&report)
        } else {
            print_user(&report)
        };
    }
    let report: StatusReport = match backend {
        Backend::Local { storage, .. } => {
            admin::status(storage.state.as_ref(), storage.queue.as_ref()).await?
        }
        Backend::Remote { remote, .. } => remote.call(Method::GET, &["status"]).await?,
    };
    if json {
        return print_json(&report);
    }
    match &report.subscription {
        Some(s) => println!(
            "subscription   {} on {} expires {} ({} h left)",
            s.id,
            s.resource,
            s.expiration.to_rfc3339(),
            (s.expiration - chrono::Utc::now()).num_hours()
        ),
        None => println!("subscription   none recorded"),
    }
    match report.delta_checkpoint {
        Some(t) => println!(
            "delta          last round {} ({} min ago)",
            t.to_rfc3339(),
            (chrono::Utc::now() - t).num_minutes()
        ),
        None => println!("delta          no completed round yet"),
    }
    if let Some(r) = &report.delta_round_in_progress {
        println!(
            "delta          {} round in progress since {}: {} pages, {} users, {} jobs so far (saved {} min ago)",
            if r.full { "full" } else { "incremental" },
            r.started_at.to_rfc3339(),
            r.pages,
            r.users_seen,
            r.jobs_enqueued,
            (chrono::Utc::now() - r.saved_at).num_minutes()
        );
    }
    if let Some(a) = &report.anchor_lookup {
        println!(
            "AD anchor      accounts looked up by {} ({}): {}",
            a.lookup.attribute,
            match a.lookup.indexed {
                true => "indexed",
                false => "not indexed: every user object is read",
            },
            a.lookup.reason
        );
    }
    println!(
        "queue          {} waiting or in progress ({} in progress), {} dead letters",
        report.queue.depth, report.queue.in_flight, report.queue.dead_letters
    );
    let accounts: Vec<String> = report
        .accounts
        .iter()
        .map(|(k, n)| format!("{n} {k}"))
        .collect();
    println!(
        "accounts       {}",
        if accounts.is_empty() {
            "none yet".into()
        } else {
            accounts.join(", ")
        }
    );
    for (id, reason) in &report.conflicts {
        println!("conflict       {id}: {reason}");
    }
    if !report.partners.is_empty() || report.partner_watermark.is_some() {
        let partners: Vec<String> = report
            .partners
            .iter()
            .map(|(k, n)| format!("{n} {k}"))
            .collect();
        println!(
            "partners       {}",
            if partners.is_empty() {
                "none yet".into()
            } else {
                partners.join(", ")
            }
        );
    }
    if let Some(w) = &report.partner_watermark {
        println!(
            "AD watcher     past uSNChanged {} of DC {}; last full comparison {}",
            w.usn,
            w.invocation_id,
            w.full_at.to_rfc3339()
        );
    }
    for (guid, reason) in &report.partner_conflicts {
        println!("conflict       partner {guid}: {reason}");
    }
    if let Some(d) = &report.graph_access.denied {
        println!(
            "GRAPH REFUSES  access since {} ({} refusals, last {} while {}): {}",
            d.since.to_rfc3339(),
            d.refusals,
            d.last_at.to_rfc3339(),
            d.action,
            d.message
        );
    }
    if report.graph_access.denied.is_some() || report.graph_access.parked_jobs > 0 {
        println!(
            "parked         {} jobs wait for Graph to answer; nothing is changed in AD for them",
            report.graph_access.parked_jobs
        );
    }
    if let Some(w) = &report.webhook {
        let rejected: u64 = w.rejected.values().sum();
        println!(
            "webhook        since {}: {} notifications, {} jobs enqueued, {} folded into waiting jobs, {} rejected",
            w.since.to_rfc3339(),
            w.notifications_received,
            w.jobs_enqueued,
            w.folded,
            rejected
        );
        for (reason, n) in &w.rejected {
            println!("REJECTED       {n} {reason}");
        }
    }
    if let Some(offset) = report.clock_offset_seconds {
        let (ahead, by) = if offset < 0 {
            ("ahead of", -offset)
        } else {
            ("behind", offset)
        };
        println!(
            "CLOCK          this host's clock is {} {ahead} Microsoft Graph's: retention and subscriptions follow Graph's clock; set the host's time right (NTP)",
            humantime::format_duration(std::time::Duration::from_secs(by as u64))
        );
    }
    let safety = &report.safety;
    println!(
        "safety         {} disables and {} deletes in the last hour",
        safety.disables_last_hour, safety.deletes_last_hour
    );
    if let Some(t) = &safety.tripped {
        println!("THRESHOLD      tripped {}: {}", t.at.to_rfc3339(), t.reason);
    }
    if safety.held > 0 {
        println!(
            "held           {} disables or deletes wait for an administrator: `shadowsync held list`",
            safety.held
        );
    }
    Ok(())
}

pub enum HeldAction {
    List { json: bool },
    Release { users: Vec<String> },
    Discard { users: Vec<String> },
}

pub async fn held(backend: Backend, action: HeldAction) -> Result<()> {
    let (verb, changes): (&str, Vec<HeldChange>) = match (action, backend) {
        (HeldAction::List { json }, backend) => {
            let changes: Vec<HeldChange> = match backend {
                Backend::Local { storage, .. } => {
                    shadowsync_app::safety::held_changes(storage.state.as_ref()).await?
                }
                Backend::Remote { remote, .. } => remote.call(Method::GET, &["held"]).await?,
            };
            if json {
                return print_json(&changes);
            }
            if changes.is_empty() {
                println!("nothing held");
            }
            for c in &changes {
                println!(
                    "{} ({})  {} held {}{}\n    {}\n    why: {}",
                    c.user_principal_name.as_deref().unwrap_or("-"),
                    c.object_id,
                    c.change.as_str(),
                    c.held_at.to_rfc3339(),
                    match c.released_at {
                        Some(at) => format!(", released {}", at.to_rfc3339()),
                        None => String::new(),
                    },
                    c.plan,
                    c.reason
                );
            }
            return Ok(());
        }
        (HeldAction::Release { users }, Backend::Local { config, storage }) => {
            let identity = shadowsync_app::build::graph_client(&config.graph)?.identity();
            let selection = HeldSelection { users };
            let released = admin::release_held(
                storage.state.as_ref(),
                storage.queue.as_ref(),
                identity,
                &selection,
            )
            .await?;
            (
                "released (applied by the next run of the workers: `shadowsync serve`)",
                released,
            )
        }
        (HeldAction::Release { users }, Backend::Remote { remote, .. }) => {
            let selection = HeldSelection { users };
            let released = remote
                .send(Method::POST, &["held", "release"], &selection)
                .await?;
            ("released", released)
        }
        (HeldAction::Discard { users }, Backend::Local { storage, .. }) => {
            let selection = HeldSelection { users };
            let dropped = admin::discard_held(storage.state.as_ref(), &selection).await?;
            ("discarded", dropped)
        }
        (HeldAction::Discard { users }, Backend::Remote { remote, .. }) => {
            let selection = HeldSelection { users };
            let dropped = remote
                .send(Method::POST, &["held", "discard"], &selection)
                .await?;
            ("discarded", dropped)
        }
    };
    for c in &changes {
        println!(
            "{} ({}): {} {verb}",
            c.user_principal_name.as_deref().unwrap_or("-"),
            c.object_id,
            c.change.as_str()
        );
    }
    println!("{} held changes {verb}", changes.len());
    Ok(())
}

fn print_user(r: &UserReport) -> Result<()> {
    println!("guest {}\n", r.object_id);
    println!("Graph ({})", r.graph_state);
    match &r.graph {
        Some(u) => println!("{}", indent(&serde_json::to_string_pretty(u)?)),
        None => println!("    -"),
    }
    println!("\nActive Directory");
    if r.directory.is_empty() {
        println!("    no object carries this guest's anchor");
    }
    for a in &r.directory {
        println!("{}", indent(&serde_json::to_string_pretty(a)?));
    }
    println!("\nState");
    match &r.record {
        Some(rec) => println!("{}", indent(&serde_json::to_string_pretty(rec)?)),
        None => println!("    no record"),
    }
    println!("\nConverging now would: {}", describe(&r.plan));
    Ok(())
}

fn print_partner(r: &PartnerReport) -> Result<()> {
    let o = &r.outcome;
    println!("partner account {} ({})\n", o.name(), o.guid);
    println!("Active Directory");
    match (&o.dn, r.enabled) {
        (Some(dn), Some(enabled)) => println!(
            "    {dn}\n    {}, {}, mail {}",
            if enabled { "enabled" } else { "disabled" },
            if r.in_scope {
                "a partner (in scope)"
            } else {
                "out of the partner scope"
            },
            r.mail.as_deref().unwrap_or("-")
        ),
        (Some(dn), None) => println!("    deleted (tombstone, was {dn})"),
        (None, _) => println!("    no such account (deleted and purged)"),
    }
    println!("\nEntra ID");
    match &o.guest_id {
        Some(id) => println!("    guest {id}"),
        None => println!("    no guest"),
    }
    println!("\nState");
    match &r.record {
        Some(rec) => println!("{}", indent(&serde_json::to_string_pretty(rec)?)),
        None => println!("    no record"),
    }
    let plan = if o.plan.is_empty() {
        "nothing".to_string()
    } else {
        o.plan.join("; ")
    };
    println!("\nConverging now would: {plan}");
    if let Some(reason) = &o.held {
        println!("HELD: {reason}");
    }
    Ok(())
}

fn indent(text: &str) -> String {
    text.lines()
        .map(|l| format!("    {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

pub enum DeadLetterAction {
    List { json: bool },
    Retry { id: Option<String> },
    Drop { id: Option<String> },
}

pub async fn dead_letters(backend: Backend, action: DeadLetterAction) -> Result<()> {
    let letters: Vec<DeadLetter> = match &backend {
        Backend::Local { storage, .. } => storage.queue.dead_letters().await?,
        Backend::Remote { remote, .. } => remote.call(Method::GET, &["dead-letters"]).await?,
    };
    let chosen = |id: &Option<String>| -> Vec<String> {
        letters
            .iter()
            .filter(|l| id.as_ref().is_none_or(|id| &l.id == id))
            .map(|l| l.id.clone())
            .collect()
    };
    match action {
        DeadLetterAction::List { json: true } => print_json(&letters)?,
        DeadLetterAction::List { json: false } => {
            if letters.is_empty() {
                println!("no dead letters");
            }
            for l in &letters {
                let what = match &l.job {
                    shadowsync_queue::Job::Converge { user_id, .. } => {
                        format!("converge {user_id}")
                    }
                    shadowsync_queue::Job::Partner { guid, .. } => {
                        format!("partner account {guid}")
                    }
                    shadowsync_queue::Job::GroupChanged { group_id, .. } => {
                        format!("scope group {group_id} changed")
                    }
                    shadowsync_queue::Job::Lifecycle {
                        event,
                        subscription_id,
                        ..
                    } => {
                        format!("{event:?} for subscription {subscription_id}")
                    }
                };
                println!(
                    "{:>6}  {}  {} attempts  {what}\n        {}",
                    l.id,
                    l.dead_at.to_rfc3339(),
                    l.attempts,
                    l.reason
                );
            }
        }
        DeadLetterAction::Retry { id } | DeadLetterAction::Drop { id }
            if chosen(&id).is_empty() =>
        {
            anyhow::bail!("no dead letter {}", id.unwrap_or_default());
        }
        DeadLetterAction::Retry { id } => {
            for id in chosen(&id) {
                match &backend {
                    Backend::Local { storage, .. } => storage.queue.redrive(&id).await?,
                    Backend::Remote { remote: r, .. } => r
                        .call::<serde_json::Value>(Method::POST, &["dead-letters", &id, "retry"])
                        .await
                        .map(|_| ())?,
                }
                println!("{id} queued again");
            }
        }
        DeadLetterAction::Drop { id } => {
            for id in chosen(&id) {
                match &backend {
                    Backend::Local { storage, .. } => storage.queue.drop_dead_letter(&id).await?,
                    Backend::Remote { remote: r, .. } => r
                        .call::<serde_json::Value>(Method::DELETE, &["dead-letters", &id])
                        .await
                        .map(|_| ())?,
                }
                println!("{id} dropped");
            }
        }
    }
    Ok(())
}
