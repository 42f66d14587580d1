//! Section 7, scope-group changes: a guest added to the scope group → their account in AD,
//! through a real `shadowsync serve` with the scope group's change notifications; beside an
//! invitation → account through another serve without a scope group (the user notification's
//! path), in the same run.

use crate::e2e::wait_visible;
use crate::ldap;
use crate::report::{Measure, Row, Section};
use crate::stats::summarize;
use crate::Ctx;
use anyhow::{Context, Result};
use graph_sim::{SimClient, SimConfig};
use ldap3::Ldap;
use shadowsync_e2e::serve::{wait_until, ServeProcess};
use std::time::{Duration, Instant};

pub async fn run(ctx: &Ctx) -> Result<Section> {
    let samba = ctx.samba;
    let mut conn = ldap::connect(samba).await?;
    let name = |what: &str| format!("bench-{}-scope-{what}", ctx.tag);
    let base = &samba.base_dn;
    let mut ous = Vec::new();
    for what in ["guests", "disabled", "plain-guests", "plain-disabled"] {
        ous.push(ldap::create_ou(&mut conn, base, &name(what)).await?);
    }
    let result = measure(ctx, &mut conn, &ous).await;
    let conn = ldap::connect(samba).await?;
    for ou in &ous {
        ldap::delete_ou(&conn, ou).await?;
    }
    result
}

fn id(v: &serde_json::Value) -> Result<String> {
    v["invitedUser"]["id"]
        .as_str()
        .or(v["id"].as_str())
        .map(str::to_string)
        .context("no id")
}

fn upn_of(address: &str, sim: &graph_sim::RunningSim) -> String {
    format!(
        "{}#EXT#@{}",
        address.replace('@', "_"),
        sim.config().tenant_domain
    )
}

async fn measure(ctx: &Ctx, conn: &mut Ldap, ous: &[String]) -> Result<Section> {
    let n = if ctx.args.smoke { 3 } else { 20 };
    let mut section = Section::new("scope", "Scope-group changes: membership → account in AD");

    // Baseline: invitations through a serve without a scope group.
    let plain_sim = graph_sim::start(SimConfig::default(), "127.0.0.1:0".parse()?).await?;
    let plain = SimClient::new(plain_sim.base_url(), plain_sim.config());
    let plain_dir = tempfile::tempdir()?;
    let mut plain_serve = ServeProcess::start_in(
        &ctx.shadowsync_bin,
        &plain_sim,
        ctx.samba,
        (&ous[2], &ous[3]),
        plain_dir.path(),
        "",
    )
    .await?;
    wait_until(Duration::from_secs(60), || async {
        plain.sim_subscriptions().await.is_ok_and(|s| !s.is_empty())
    })
    .await
    .context("the plain serve's subscription")?;
    let mut invited = Vec::new();
    for i in 0..n {
        let address = format!("inv{i}@{}.bench.example", ctx.tag);
        let started = Instant::now();
        plain.invite(&address, &format!("Invited {i}")).await?;
        wait_visible(conn, &ous[2], &upn_of(&address, &plain_sim)).await?;
        invited.push(started.elapsed());
    }
    plain_serve.stop().await?;
    plain_sim.shutdown().await;

    // Membership changes through a serve scoped to a group.
    let sim = graph_sim::start(SimConfig::default(), "127.0.0.1:0".parse()?).await?;
    let graph = SimClient::new(sim.base_url(), sim.config());
    let root = id(&graph.create_group("Scope").await?)?;
    let nested = id(&graph.create_group("Nested").await?)?;
    graph.add_member(&root, &nested).await?;
    let dir = tempfile::tempdir()?;
    let extra = format!("[policy]\nscope_group_id = \"{root}\"\n");
    let mut serve = ServeProcess::start_in(
        &ctx.shadowsync_bin,
        &sim,
        ctx.samba,
        (&ous[0], &ous[1]),
        dir.path(),
        &extra,
    )
    .await?;
    wait_until(Duration::from_secs(60), || async {
        graph.sim_subscriptions().await.is_ok_and(|s| {
            s.iter()
                .filter(|s| s["resource"].as_str().unwrap_or("").contains("roups/"))
                .count()
                == 2
        })
    })
    .await
    .context("the scope groups' subscriptions")?;
    let (mut direct, mut through_nested) = (Vec::new(), Vec::new());
    for i in 0..n {
        for (group, label, samples) in [
            (&root, "direct", &mut direct),
            (&nested, "nested", &mut through_nested),
        ] {
            let address = format!("{label}{i}@{}.bench.example", ctx.tag);
            // Invited unheard, so the account can only come from the membership's notification.
            graph.set_notifications_lost(true).await?;
            let user = id(&graph.invite(&address, &format!("Member {i}")).await?)?;
            graph.set_notifications_lost(false).await?;
            let started = Instant::now();
            graph.add_member(group, &user).await?;
            wait_visible(conn, &ous[0], &upn_of(&address, &sim)).await?;
            samples.push(started.elapsed());
        }
    }
    serve.stop().await?;
    sim.shutdown().await;

    let (invited, direct, through_nested) = (
        summarize(invited),
        summarize(direct),
        summarize(through_nested),
    );
    section.setup = format!(
        "{n} guests added one at a time to the scope group, and {n} to a group nested in it, through the Graph simulator; a real `shadowsync serve` (release build, `[policy] scope_group_id`) keeps a subscription on each group of the tree, and each group's change notification becomes a job that reads the group's changes (groups delta) and converges the members added. \"membership → account\" runs from the simulator's answer to the member `POST` to the first read of AD (every 10 ms) that finds the account enabled. Baseline, same run: {n} invitations through another `serve` without a scope group, from the `POST /invitations` to the account, the path a user notification takes. Each guest is invited before it is added, with the simulator's notifications switched off for the invitation, so that only the membership's notification can make the account."
    );
    section.push(
        Row::new(
            "added to the scope group → account: p50",
            Measure::ms(direct.p50),
        )
        .against("invitation → account p50", Measure::ms(invited.p50))
        .headline(),
    );
    section.push(
        Row::new(
            "added to the scope group → account: p95",
            Measure::ms(direct.p95),
        )
        .against("invitation → account p95", Measure::ms(invited.p95)),
    );
    section.push(
        Row::new(
            "added to a nested group → account: p50",
            Measure::ms(through_nested.p50),
        )
        .against("invitation → account p50", Measure::ms(invited.p50)),
    );
    section.push(
        Row::new(
            "added to a nested group → account: max",
            Measure::ms(through_nested.max),
        )
        .against("invitation → account max", Measure::ms(invited.max)),
    );
    section.bounds = String::from(
        "The notification's path, once more than an invitation's: the simulator batches a group's notification like a user's (100 ms window), the group's job reads the group's changes (one groups delta request) and queues a converge job per member added, which then runs as an invitation's does (a Graph read, a transitive membership check, the AD add). The sweep (a day by default) and a read of every group's changes every `[reconciler] interval` catch what notifications miss. Before this, a guest added to the scope group waited for the next sweep: a day by default."
    );
    Ok(section)
}
