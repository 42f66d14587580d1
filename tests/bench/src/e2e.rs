//! Section 2, end to end: from a notification POST (and from an invitation) to the account being
//! visible in AD, through a real `shadowsync serve` process.
//!
//! Both ends of every figure are read on the bench's own monotonic clock: from just before the
//! bench sends the POST (or the invitation) to the return of the AD read that finds the account.
//! Not when that read was sent: the DC answers one request at a time, so a read sent while it
//! is still making the account waits behind the add and finds it, which dates the account at
//! the add's start and made the end-to-end time shorter than the converge step it contains.

use crate::ldap;
use crate::report::{Measure, Row, Section};
use crate::stats::summarize;
use crate::Ctx;
use anyhow::{bail, ensure, Context, Result};
use graph_sim::{SimClient, SimConfig};
use ldap3::{ldap_escape, Ldap, Scope, SearchEntry};
use rand::Rng;
use shadowsync_app::{App, Hint, Parts};
use shadowsync_core::account::uac;
use shadowsync_core::{ObjectId, Policy};
use shadowsync_directory::LdapDirectory;
use shadowsync_e2e::serve::{wait_until, ServeProcess, CLIENT_STATE};
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

/// Reads AD every [`AD_POLL`] until the account holding `upn` is enabled; returns when the read
/// that first saw it returned (see the module's comment for why not when it was sent).
pub(crate) async fn wait_visible(ldap: &mut Ldap, ou: &str, upn: &str) -> Result<Instant> {
    let filter = format!("(userPrincipalName={})", ldap_escape(upn));
    let started = Instant::now();
    while started.elapsed() < SETTLE {
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
            return Ok(Instant::now());
        }
        tokio::time::sleep(AD_POLL).await;
    }
    bail!("no enabled account for {upn} within {SETTLE:?}")
}

/// POSTs a users change notification for `user_id` to serve's webhook as Graph would (the
/// subscription's id and clientState); returns once it is answered 202.
async fn notify(
    http: &reqwest::Client,
    serve: &ServeProcess,
    subscription_id: &str,
    user_id: &str,
    tenant_id: &str,
) -> Result<()> {
    let body = serde_json::json!({"value": [{
        "subscriptionId": subscription_id,
        "subscriptionExpirationDateTime": "2030-01-01T00:00:00Z",
        "changeType": "updated",
        "resource": format!("Users/{user_id}"),
        "resourceData": {
            "@odata.type": "#Microsoft.Graph.User",
            "@odata.id": format!("Users/{user_id}"),
            "id": user_id,
            "organizationId": tenant_id,
        },
        "clientState": CLIENT_STATE,
        "tenantId": tenant_id,
    }]});
    let response = http
        .post(format!("http://{}/api/notifications", serve.listen))
        .json(&body)
        .send()
        .await?;
    let status = response.status();
    response.bytes().await?;
    ensure!(status.as_u16() == 202, "the webhook answered {status}");
    Ok(())
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
    let subscription = shared
        .world()
        .subscriptions
        .values()
        .map(|s| s.id.clone())
        .next()
        .context("serve's subscription")?;
    let tenant = sim.config().tenant_id.clone();
    let http = reqwest::Client::new();
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
    // And serve's: the bench's first POST, serve's first job.
    let warm = graph
        .invite(&format!("ws.{}@e2e.example", ctx.tag), "Warm-up Guest")
        .await?;
    let upn = warm["userPrincipalName"].as_str().context("upn")?;
    wait_visible(ldap, &ous.serve_guests, upn).await?;
    graph.set_notifications_lost(true).await?;
    let warm = graph
        .invite(&format!("wp.{}@e2e.example", ctx.tag), "Warm-up Guest 2")
        .await?;
    graph.set_notifications_lost(false).await?;
    let id = warm["id"].as_str().context("user id")?;
    notify(&http, &serve, &subscription, id, &tenant).await?;
    let upn = warm["userPrincipalName"].as_str().context("upn")?;
    wait_visible(ldap, &ous.serve_guests, upn).await?;
    let warmed_up = 2;

    let mut post_to_visible = Vec::new();
    let mut invite_to_visible = Vec::new();
    let mut webhook_answer = Vec::new();
    let mut bare = Vec::new();
    let mut three_writes = Vec::new();
    let mut converge = Vec::new();
    let tag = &ctx.tag;
    for i in 0..n {
        // Every other guest by a POST of the bench's own, the others by the simulator's
        // notification of the invitation.
        let by_post = i % 2 == 0;
        if by_post {
            // Invited unheard: the bench's POST is the only notification.
            graph.set_notifications_lost(true).await?;
        }
        let invited = Instant::now();
        let user = graph
            .invite(
                &format!("e{i}.{tag}@e2e.example"),
                &format!("E2E Guest {i}"),
            )
            .await?;
        let id = user["id"].as_str().context("user id")?;
        let upn = user["userPrincipalName"].as_str().context("upn")?;
        if by_post {
            graph.set_notifications_lost(false).await?;
            // At a random point of the provisioner's poll of the queue (every 50 ms), as a
            // notification from Graph would be, not always just after a poll.
            let pause = rand::thread_rng().gen_range(0..50);
            tokio::time::sleep(Duration::from_millis(pause)).await;
            let posted = Instant::now();
            notify(&http, &serve, &subscription, id, &tenant).await?;
            webhook_answer.push(posted.elapsed());
            let visible = wait_visible(ldap, &ous.serve_guests, upn).await?;
            post_to_visible.push(visible - posted);
        } else {
            let visible = wait_visible(ldap, &ous.serve_guests, upn).await?;
            invite_to_visible.push(visible - invited);
        }

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
    if accounts != n + warmed_up {
        bail!(
            "{accounts} accounts in {} instead of {}",
            ous.serve_guests,
            n + warmed_up
        );
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
    // End to end contains the converge step (all but its last read and state write, which
    // follow the add), so a shorter figure means the two ends were not of the same events.
    ensure!(
        e2e.p50 >= conv.p50,
        "notification POST → account ({} p50) is shorter than the converge step alone ({} p50) \
         that it contains: this section's measurement is wrong",
        Measure::ms(e2e.p50),
        Measure::ms(conv.p50),
    );
    section.setup = format!(
        "{n} guests invited one at a time through the simulator's Graph API (`POST \
         /v1.0/invitations`) and made into accounts by a real `shadowsync serve` process (release \
         build, {} workers, embedded store and queue) with its own managed OUs on the shared \
         Samba DC; the next guest is invited when the previous one's account is enabled in AD, \
         so these are latencies with an idle pipeline. Every other guest ({} in all) is invited \
         with the simulator's notifications switched off and the bench POSTs the change \
         notification to serve's webhook itself, in Graph's shape, at a random point of the \
         provisioner's 50 ms poll: \"notification POST → account\" runs from just before that \
         POST to the return of the first AD read that finds the account enabled (AD read every \
         {} ms by the indexed userPrincipalName, each read waiting for the previous). The \
         others ({} in all) are notified by the simulator: \"invitation → account\" runs from \
         just before the invitation to the same read. Both ends of both on the bench's monotonic \
         clock. Baseline: the same account created directly with ldap3 over LDAPS in an OU of \
         its own, in one add carrying the password and the final userAccountControl (the least \
         AD needs for an enabled account), {} samples interleaved with the guests. \
         \"converge step alone\": `Converger::converge` called in the bench process for {} fresh \
         guests of a second simulator (no webhook, no queue), interleaved likewise.",
        4,
        e2e.n,
        AD_POLL.as_millis(),
        inv.n,
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
        Row::new("webhook's answer to the POST: p50", Measure::ms(answer.p50))
            .note(format!("p99 {}", Measure::ms(answer.p99))),
    );

    section.bounds = format!(
        "The DC. From POST to account takes {} (p50); the converge step alone takes {}, and \
         the one add that creates the enabled account takes {} when made bare (made in three \
         writes, as before this benchmark, it takes {}); the rest of converge is one Graph \
         read, two indexed LDAP searches (the anchor, msDS-ExternalDirectoryObjectId on the \
         test DC's schema, and the UPN; a name in use is left to AD to refuse), a read of the \
         new DN and a state write. \
         End to end is about {} longer than converge alone: the webhook's durable enqueue ({} \
         p50 to answer), the provisioner's poll of an empty queue (every 50 ms, so 25 ms on \
         average) and this bench's {} ms AD polling, less converge's last read and state write, \
         which come after the account is visible. From the invitation, add the simulator's \
         batching window (100 ms) and its 20 ms delivery tick; Graph's own notification delay \
         (typically seconds) comes on top in production. The maximum is where the shared, noisy \
         machine shows: one slow DC write or fsync.",
        Measure::ms(e2e.p50),
        Measure::ms(conv.p50),
        Measure::ms(base.p50),
        Measure::ms(three.p50),
        Measure::ms(e2e.p50 - conv.p50),
        Measure::ms(answer.p50),
        AD_POLL.as_millis(),
    );
    Ok(section)
}
