//! Section 2, end to end: from the simulator's notification POST (and from the invitation) to the
//! account being visible in AD, through a real `shadowsync serve` process.

use crate::ldap;
use crate::report::{Measure, Row, Section};
use crate::stats::summarize;
use crate::Ctx;
use anyhow::{bail, Context, Result};
use chrono::{DateTime, Utc};
use graph_sim::{RunningSim, SimClient, SimConfig};
use ldap3::{ldap_escape, Ldap, Scope, SearchEntry};
use shadowsync_app::{App, Hint, Parts};
use shadowsync_core::account::uac;
use shadowsync_core::{ObjectId, Policy};
use shadowsync_directory::LdapDirectory;
use shadowsync_e2e::serve::{wait_until, ServeProcess};
use shadowsync_queue::EmbeddedQueue;
use shadowsync_state::EmbeddedStore;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often AD is read while waiting for an account (the resolution of the figures).
const AD_POLL: Duration = Duration::from_millis(10);
const SETTLE: Duration = Duration::from_secs(60);

/// The bench's OUs for this section.
struct Ous {
    serve_guests: String,
    serve_disabled: String,
    bare: String,
    converge_guests: String,
    converge_disabled: String,
}

impl Ous {
    fn all(&self) -> [&String; 5] {
        [
            &self.serve_guests,
            &self.serve_disabled,
            &self.bare,
            &self.converge_guests,
            &self.converge_disabled,
        ]
    }
}

pub async fn run(ctx: &Ctx) -> Result<Section> {
    let samba = ctx.samba;
    let mut ldap = ldap::connect(samba).await?;
    let name = |what: &str| format!("bench-{}-e2e-{what}", ctx.tag);
    let base = &samba.base_dn;
    let ous = Ous {
        serve_guests: ldap::create_ou(&mut ldap, base, &name("guests")).await?,
        serve_disabled: ldap::create_ou(&mut ldap, base, &name("disabled")).await?,
        bare: ldap::create_ou(&mut ldap, base, &name("bare")).await?,
        converge_guests: ldap::create_ou(&mut ldap, base, &name("conv-guests")).await?,
        converge_disabled: ldap::create_ou(&mut ldap, base, &name("conv-disabled")).await?,
    };
    let result = measure(ctx, &mut ldap, &ous).await;
    let mut deleted = 0;
    let cleanup = Instant::now();
    // A fresh connection: Samba drops LDAP connections idle for 15 minutes.
    let ldap = ldap::connect(samba).await?;
    for ou in ous.all() {
        deleted += ldap::delete_ou(&ldap, ou).await?.0;
    }
    println!(
        "    (deleted the section's {deleted} entries in {:.1} s)",
        cleanup.elapsed().as_secs_f64()
    );
    result
}

/// When the simulator started the notification POST that carried `user_id`, and how long the
/// webhook took to answer it; `None` until it has been delivered.
fn delivery_of(sim: &RunningSim, user_id: &str) -> Option<(DateTime<Utc>, Duration)> {
    let shared = sim.sim();
    let world = shared.world();
    world.delivery.log.iter().rev().find_map(|r| {
        let carries = r.kind == "notification"
            && r.outcome == "delivered"
            && r.body["value"]
                .as_array()
                .is_some_and(|items| items.iter().any(|i| i["resourceData"]["id"] == user_id));
        if !carries {
            return None;
        }
        let answered = DateTime::parse_from_rfc3339(&r.time)
            .ok()?
            .with_timezone(&Utc);
        let latency = Duration::from_millis(r.latency_ms.unwrap_or(0));
        Some((
            answered - chrono::Duration::from_std(latency).ok()?,
            latency,
        ))
    })
}

/// Reads AD every [`AD_POLL`] until the account holding `upn` is enabled; returns when the read
/// that first saw it was sent.
pub(crate) async fn wait_visible(ldap: &mut Ldap, ou: &str, upn: &str) -> Result<DateTime<Utc>> {
    let filter = format!("(userPrincipalName={})", ldap_escape(upn));
    let started = Instant::now();
    while started.elapsed() < SETTLE {
        let sent = Utc::now();
        let (entries, _) = ldap
            .search(ou, Scope::OneLevel, &filter, vec!["userAccountControl"])
            .await?
            .success()?;
        let enabled = entries.into_iter().any(|e| {
            SearchEntry::construct(e)
                .attrs
                .get("userAccountControl")
                .and_then(|v| v.first())
                .and_then(|v| v.parse::<u32>().ok())
                == Some(uac::ENABLED)
        });
        if enabled {
            return Ok(sent);
        }
        tokio::time::sleep(AD_POLL).await;
    }
    bail!("no enabled account for {upn} within {SETTLE:?}")
}

fn since(later: DateTime<Utc>, earlier: DateTime<Utc>) -> Duration {
    (later - earlier).to_std().unwrap_or_default()
}

async fn measure(ctx: &Ctx, ldap: &mut Ldap, ous: &Ous) -> Result<Section> {
    let samba = ctx.samba;
    let n = ctx.e2e_guests();
    // The baseline and the converge step alone run for every `stride`-th guest, interleaved
    // with the end-to-end guests so that all three see the same machine.
    let stride = 4;
    let mut section = Section::new(
        "e2e",
        "End to end: notification → account in AD, invitation → account",
    );

    let sim = graph_sim::start(SimConfig::default(), "127.0.0.1:0".parse()?).await?;
    let graph = SimClient::new(sim.base_url(), sim.config());
    let dir = tempfile::tempdir()?;
    let mut serve = ServeProcess::start_in(
        &ctx.shadowsync_bin,
        &sim,
        samba,
        (&ous.serve_guests, &ous.serve_disabled),
        dir.path(),
        "[reconciler]\ninterval = \"1h\"\n",
    )
    .await?;
    let shared = sim.sim();
    wait_until(Duration::from_secs(30), || {
        let shared = shared.clone();
        async move { !shared.world().subscriptions.is_empty() }
    })
    .await
    .context("serve did not create its subscription")?;
    // Let serve's first (empty) delta round and sweep finish.
    tokio::time::sleep(Duration::from_millis(500)).await;

    // The converge step alone, in this process, on a simulator with no subscription (so serve
    // never hears of these guests).
    let sim2 = graph_sim::start(SimConfig::default(), "127.0.0.1:0".parse()?).await?;
    let graph2 = SimClient::new(sim2.base_url(), sim2.config());
    let policy = Policy::new(&ous.converge_guests, &ous.converge_disabled);
    let store = EmbeddedStore::open(dir.path().join("converge.redb"))?;
    let queue = Arc::new(EmbeddedQueue::new(&store, 10)?);
    let directory = LdapDirectory::connect(samba.directory_config(), &policy).await?;
    let app = App::from_parts(
        Parts::new(
            Arc::new(shadowsync_e2e::graph_client(&sim2)?),
            Arc::new(store),
            queue,
        )
        .directory(Arc::new(directory), policy),
    );
    let converger = app.converger()?;

    // Warm-up, not counted: the converger's first Graph token, first searches and writes.
    let warm = graph2
        .invite(&format!("w.{}@e2e.example", ctx.tag), "Warm-up Guest")
        .await?;
    let warm_id = ObjectId::parse(warm["id"].as_str().context("user id")?)?;
    converger.converge(&warm_id, Hint::default()).await?;
    let warm = ldap::synthetic_account(&ous.bare, &format!("{}w", ctx.tag), 0);
    ldap::create_one_add(ldap, &warm).await?;

    let mut post_to_visible = Vec::new();
    let mut invite_to_visible = Vec::new();
    let mut webhook_answer = Vec::new();
    let mut bare = Vec::new();
    let mut three_writes = Vec::new();
    let mut converge = Vec::new();
    let tag = &ctx.tag;
    for i in 0..n {
        let invited_at = Utc::now();
        let user = graph
            .invite(
                &format!("e{i}.{tag}@e2e.example"),
                &format!("E2E Guest {i}"),
            )
            .await?;
        let id = user["id"].as_str().context("user id")?.to_string();
        let upn = user["userPrincipalName"]
            .as_str()
            .context("upn")?
            .to_string();
        let waiting = Instant::now();
        let (posted_at, answered_in) = loop {
            if let Some(d) = delivery_of(&sim, &id) {
                break d;
            }
            if waiting.elapsed() > SETTLE {
                bail!("the simulator never delivered a notification for {id}");
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        };
        let visible_at = wait_visible(ldap, &ous.serve_guests, &upn).await?;
        post_to_visible.push(since(visible_at, posted_at));
        invite_to_visible.push(since(visible_at, invited_at));
        webhook_answer.push(answered_in);

        if i % stride == 0 {
            // Let serve finish with this guest (it re-reads the account and records it after
            // enabling it), so the samples below have the DC to themselves as it had.
            tokio::time::sleep(Duration::from_millis(200)).await;
            let account = ldap::synthetic_account(&ous.bare, tag, i);
            bare.push(ldap::create_one_add(ldap, &account).await?);
            let account = ldap::synthetic_account(&ous.bare, &format!("{tag}t"), i);
            three_writes.push(ldap::create_three_writes(ldap, &account).await?);

            let guest = graph2
                .invite(
                    &format!("c{i}.{tag}@e2e.example"),
                    &format!("Converge Guest {i}"),
                )
                .await?;
            let gid = ObjectId::parse(guest["id"].as_str().context("user id")?)?;
            let started = Instant::now();
            let outcome = converger.converge(&gid, Hint::default()).await?;
            converge.push(started.elapsed());
            if outcome.dn.is_none() {
                bail!("converge created no account for {gid}: {outcome:?}");
            }
        }
        if (i + 1) % 50 == 0 {
            println!("    {}/{n} guests", i + 1);
        }
    }
    let status = serve.stop().await?;
    if !status.success() {
        bail!("serve exited with {status}");
    }
    let accounts = ldap::count_enabled(ldap, &ous.serve_guests).await?;
    if accounts != n {
        bail!("{accounts} accounts in {} instead of {n}", ous.serve_guests);
    }
    sim2.shutdown().await;
    sim.shutdown().await;

    let e2e = summarize(post_to_visible);
    let inv = summarize(invite_to_visible);
    let base = summarize(bare);
    let three = summarize(three_writes);
    let conv = summarize(converge);
    let answer = summarize(webhook_answer);
    let bare_name = "ldap3 one add";
    section.setup = format!(
        "{n} guests invited one at a time through the simulator's Graph API (`POST \
         /v1.0/invitations`); the simulator delivers each change notification to a real \
         `shadowsync serve` process (release build, {} workers, embedded store and queue) with \
         its own managed OUs on the shared Samba DC. The next guest is invited when the previous \
         one's account is enabled in AD, so these are latencies with an idle pipeline. \"POST\" is \
         when the simulator started the notification POST (its delivery log); \"visible\" is when \
         the bench's read that first found the enabled account was sent (AD read every {} ms by \
         the indexed userPrincipalName). Baseline: the same account created directly with \
         ldap3 over LDAPS in an OU of its own, in one add carrying the password and the final \
         userAccountControl (the least AD needs for an enabled account), {} samples interleaved \
         with the guests. \
         \"converge step alone\": `Converger::converge` called in the bench process for {} fresh \
         guests of a second simulator (no webhook, no queue).",
        4,
        AD_POLL.as_millis(),
        base.n,
        conv.n,
    );
    section.push(
        Row::new("notification POST → account: p50", Measure::ms(e2e.p50))
            .against(format!("{bare_name} p50"), Measure::ms(base.p50))
            .headline(),
    );
    section.push(
        Row::new("notification POST → account: p95", Measure::ms(e2e.p95))
            .against(format!("{bare_name} p95"), Measure::ms(base.p95)),
    );
    section.push(
        Row::new("notification POST → account: max", Measure::ms(e2e.max))
            .against(format!("{bare_name} max"), Measure::ms(base.max)),
    );
    section.push(
        Row::new("invitation → account: p50", Measure::ms(inv.p50))
            .against(format!("{bare_name} p50"), Measure::ms(base.p50)),
    );
    section.push(
        Row::new("invitation → account: p95", Measure::ms(inv.p95))
            .against(format!("{bare_name} p95"), Measure::ms(base.p95)),
    );
    section.push(
        Row::new("invitation → account: max", Measure::ms(inv.max))
            .against(format!("{bare_name} max"), Measure::ms(base.max)),
    );
    section.push(
        Row::new("converge step alone: p50", Measure::ms(conv.p50))
            .against(format!("{bare_name} p50"), Measure::ms(base.p50))
            .note("Graph read, 3 LDAP searches, 1 add, a read by DN, state record"),
    );
    section.push(
        Row::new(
            "ldap3 add disabled, set password, enable: p50",
            Measure::ms(three.p50),
        )
        .against(format!("{bare_name} p50"), Measure::ms(base.p50))
        .note("the same account in three writes, as shadowsync made it before this benchmark"),
    );
    section.push(
        Row::new(
            "webhook's answer to the simulator: p50",
            Measure::ms(answer.p50),
        )
        .note(format!("p99 {}", Measure::ms(answer.p99))),
    );

    let pipeline = if e2e.p50 > conv.p50 {
        format!("about {}", Measure::ms(e2e.p50 - conv.p50))
    } else {
        "lost in the noise of this run".to_string()
    };
    section.bounds = format!(
        "The DC. From POST to account takes {} (p50); the converge step alone takes {}, and \
         the one add that creates the enabled account takes {} when made bare (made in three \
         writes, as before this benchmark, it takes {}); the rest of converge is one Graph \
         read, three LDAP searches (the anchor, which is not indexed and reads every user object \
         of the domain, the sAMAccountName, the UPN), a read of the new DN and a state write. \
         The difference between the end-to-end time and converge alone, {}, is the \
         pipeline: the webhook's durable enqueue ({} p50 to answer), the provisioner's poll of \
         an empty queue (every 50 ms, so 25 ms on average), and this bench's {} ms AD polling. From the \
         invitation, add the simulator's batching window (100 ms) and its 20 ms delivery tick; \
         Graph's own notification delay (typically seconds) comes on top in production. The \
         maximum is where the shared, noisy machine shows: one slow DC write or fsync.",
        Measure::ms(e2e.p50),
        Measure::ms(conv.p50),
        Measure::ms(base.p50),
        Measure::ms(three.p50),
        pipeline,
        Measure::ms(answer.p50),
        AD_POLL.as_millis(),
    );
    Ok(section)
}
