//! Section 6, the partner direction: from a partner account created (or changed) in AD to its
//! guest in Entra ID, through a real `shadowsync serve` with its AD watcher at the default
//! poll interval; beside Entra Connect's 30-minute sync cycle (what organisations use today) and
//! the bare Graph calls the step makes.

use crate::ldap;
use crate::report::{Measure, Row, Section};
use crate::stats::summarize;
use crate::Ctx;
use anyhow::{bail, Context, Result};
use graph_sim::{SimClient, SimConfig};
use ldap3::{Ldap, Mod, Scope, SearchEntry};
use serde_json::json;
use shadowsync_config::DEFAULT_PARTNER_POLL_INTERVAL as DEFAULT_POLL_INTERVAL;
use shadowsync_core::partner::ObjectGuid;
use shadowsync_e2e::serve::{wait_until, ServeProcess};
use std::collections::HashSet;
use std::time::{Duration, Instant};

/// How often Graph is read while waiting for a guest (the resolution of the figures).
const GRAPH_POLL: Duration = Duration::from_millis(10);
const SETTLE: Duration = Duration::from_secs(60);
/// Entra Connect's default synchronisation cycle (Microsoft's documented scheduler default).
const CONNECT_CYCLE: Duration = Duration::from_secs(30 * 60);

pub async fn run(ctx: &Ctx) -> Result<Section> {
    let samba = ctx.samba;
    let mut conn = ldap::connect(samba).await?;
    let name = |what: &str| format!("bench-{}-partners-{what}", ctx.tag);
    let base = &samba.base_dn;
    let ous = [
        ldap::create_ou(&mut conn, base, &name("guests")).await?,
        ldap::create_ou(&mut conn, base, &name("disabled")).await?,
        ldap::create_ou(&mut conn, base, &name("partners")).await?,
    ];
    let result = measure(ctx, &mut conn, &ous).await;
    let conn = ldap::connect(samba).await?;
    for ou in &ous {
        ldap::delete_ou(&conn, ou).await?;
    }
    result
}

async fn measure(ctx: &Ctx, conn: &mut Ldap, ous: &[String; 3]) -> Result<Section> {
    let n = if ctx.args.smoke { 3 } else { 20 };
    let mut section = Section::new(
        "partners",
        "Partner accounts: AD change → guest in Entra ID",
    );
    let sim = graph_sim::start(SimConfig::default(), "127.0.0.1:0".parse()?).await?;
    let graph = SimClient::new(sim.base_url(), sim.config());

    // Baseline: the Graph calls of one new partner, bare: the invitation and the PATCH that
    // sets the link and the properties.
    let mut bare = Vec::new();
    for i in 0..n {
        let started = Instant::now();
        let user = graph
            .invite(&format!("bare{i}@{}.bench.example", ctx.tag), "Bare")
            .await?;
        let id = user["invitedUser"]["id"]
            .as_str()
            .or(user["id"].as_str())
            .context("no id")?
            .to_string();
        graph
            .patch_user(
                &id,
                json!({"displayName": "Bare", "onPremisesExtensionAttributes": {"extensionAttribute15": "x"}}),
            )
            .await?;
        bare.push(started.elapsed());
    }

    let dir = tempfile::tempdir()?;
    let started = Instant::now();
    let extra = format!("[partners]\nmode = \"invite\"\nous = [\"{}\"]\n", ous[2]);
    let mut serve = ServeProcess::start_in(
        &ctx.shadowsync_bin,
        &sim,
        ctx.samba,
        (&ous[0], &ous[1]),
        dir.path(),
        &extra,
    )
    .await?;
    // The first round is a full comparison of the domain: measured apart (from serve's start),
    // then the watcher is warm.
    wait_until(Duration::from_secs(600), || async {
        let status = serve.cli.run(&["status"], &["--json"]).await;
        status.is_ok_and(|s| s.contains("\"partner_watermark\": {"))
    })
    .await
    .context("the watcher's first round")?;
    let first_round = started.elapsed();

    let (mut created, mut changed) = (Vec::new(), Vec::new());
    for i in 0..n {
        // Each change lands at another phase of the watcher's rounds (i/n of the interval
        // after the last one ended), so the samples cover the whole wait, not one point of it.
        tokio::time::sleep(DEFAULT_POLL_INTERVAL.mul_f64(i as f64 / n as f64)).await;
        let cn = format!("Partner {i}");
        let dn = format!("CN={cn},{}", ous[2]);
        let sam = format!("bp{}{i}", &ctx.tag[..ctx.tag.len().min(8)]);
        let mail = format!("partner{i}@{}.bench.example", ctx.tag);
        let attrs = [
            ("objectClass", "user"),
            ("sAMAccountName", sam.as_str()),
            ("userAccountControl", "544"),
            ("mail", mail.as_str()),
            ("displayName", cn.as_str()),
        ];
        conn.add(
            &dn,
            attrs
                .iter()
                .map(|(k, v)| {
                    (
                        k.as_bytes().to_vec(),
                        HashSet::from([v.as_bytes().to_vec()]),
                    )
                })
                .collect(),
        )
        .await?
        .success()?;
        let t = Instant::now();
        let guid = guid_of(conn, &dn).await?;
        let took = wait_for_guest(&graph, &guid, t, |_| true).await?;
        if took > Duration::from_secs(1) {
            println!(
                "    (sample {i}: {} ms: a poll's wait, not a notification's)",
                took.as_millis()
            );
        }
        created.push(took);

        tokio::time::sleep(DEFAULT_POLL_INTERVAL.mul_f64(((i + n / 2) % n) as f64 / n as f64))
            .await;
        let title = format!("Engineer {i}");
        conn.modify(
            &dn,
            vec![Mod::Replace(
                b"title".to_vec(),
                HashSet::from([title.as_bytes().to_vec()]),
            )],
        )
        .await?
        .success()?;
        let t = Instant::now();
        changed.push(wait_for_guest(&graph, &guid, t, |g| g["jobTitle"] == title.as_str()).await?);
    }
    serve.stop().await?;
    sim.shutdown().await;

    let (created, changed, bare) = (summarize(created), summarize(changed), summarize(bare));
    let connect = "Entra Connect sync cycle (default)";
    section.setup = format!(
        "{n} partner accounts created one at a time with ldap3 in a partner OU on the shared Samba DC; a real `shadowsync serve` (release build, `[partners] mode = \"invite\"`, AD's change notifications and the default poll interval of {} s) watches AD and invites each into the Graph simulator. \"created\" runs from the LDAP add's answer to the first Graph read (every {} ms, by the link in `extensionAttribute15`) that finds the guest; \"changed\" from the modify of `title` to the read that finds the new `jobTitle`. Baselines: Entra Connect's default sync cycle ({} min, Microsoft's documented scheduler default; a change waits half a cycle on average, a full cycle at worst), and the bare Graph calls of one new partner (`POST /invitations` and one `PATCH`) made with the simulator's client, {n} samples. The watcher's first round (a full comparison of the domain, {} in it) took {:.1} s before the samples.",
        DEFAULT_POLL_INTERVAL.as_secs(),
        GRAPH_POLL.as_millis(),
        CONNECT_CYCLE.as_secs() / 60,
        "every account of the shared DC",
        first_round.as_secs_f64(),
    );
    let sooner = |d: Duration| {
        format!(
            "{:.0}× sooner",
            (CONNECT_CYCLE / 2).as_secs_f64() / d.as_secs_f64().max(1e-3)
        )
    };
    section.push(
        Row::new(
            "AD account created → guest: p50",
            Measure::secs(created.p50),
        )
        .against(format!("{connect}, half"), Measure::secs(CONNECT_CYCLE / 2))
        .note(sooner(created.p50))
        .headline(),
    );
    section.push(
        Row::new(
            "AD account created → guest: p95",
            Measure::secs(created.p95),
        )
        .against(format!("{connect}, half"), Measure::secs(CONNECT_CYCLE / 2))
        .note(sooner(created.p95)),
    );
    section.push(
        Row::new(
            "AD account created → guest: max",
            Measure::secs(created.max),
        )
        .against(format!("{connect}, full"), Measure::secs(CONNECT_CYCLE)),
    );
    section.push(
        Row::new(
            "AD attribute changed → guest: p50",
            Measure::secs(changed.p50),
        )
        .against(format!("{connect}, half"), Measure::secs(CONNECT_CYCLE / 2))
        .note(sooner(changed.p50)),
    );
    section.push(
        Row::new("AD account created → guest: p50", Measure::ms(created.p50))
            .against("bare invitation + PATCH p50", Measure::ms(bare.p50)),
    );
    section.bounds = format!(
        "The DC and the steps themselves. AD's change notification on the partner OU wakes the watcher the moment the change commits; then one round (the DC's watermark and one `uSNChanged` search: Samba 4.17 answers a `uSNChanged>=` range without an index, reading every object of the domain, tombstones included, where AD's schema indexes uSNChanged; after the bulk section's tens of thousands of tombstones, that search is most of the time), the job through the queue, and one converge: the account read by objectGUID (and, with a filter, a second read), the guest found by id, link or address, the invitation and one PATCH ({} for those bare Graph calls here). Without notifications (a DC refusing them) a change waits for the next poll, {} s apart, {:.1} s on average. Entra Connect, Microsoft's way to the same guests, waits for its cycle: {} min by default.",
        Measure::ms(bare.p50),
        DEFAULT_POLL_INTERVAL.as_secs(),
        DEFAULT_POLL_INTERVAL.as_secs_f64() / 2.0,
        CONNECT_CYCLE.as_secs() / 60,
    );
    Ok(section)
}

async fn guid_of(conn: &mut Ldap, dn: &str) -> Result<ObjectGuid> {
    let (entries, _) = conn
        .search(dn, Scope::Base, "(objectClass=*)", vec!["objectGUID"])
        .await?
        .success()?;
    let entry = SearchEntry::construct(entries.into_iter().next().context("no entry")?);
    entry
        .bin_attrs
        .get("objectGUID")
        .and_then(|v| v.first())
        .and_then(|b| ObjectGuid::from_ad_bytes(b))
        .context("no objectGUID")
}

/// Reads Graph every [`GRAPH_POLL`] until the guest linked to `guid` satisfies `check`; the time
/// since `since`.
async fn wait_for_guest(
    graph: &SimClient,
    guid: &ObjectGuid,
    since: Instant,
    check: impl Fn(&serde_json::Value) -> bool,
) -> Result<Duration> {
    let filter = format!(
        "onPremisesExtensionAttributes/extensionAttribute15 eq '{}'",
        guid.link()
    );
    while since.elapsed() < SETTLE {
        let found = graph.find_users(&filter, "id,jobTitle", true).await?;
        if found.iter().any(&check) {
            return Ok(since.elapsed());
        }
        tokio::time::sleep(GRAPH_POLL).await;
    }
    bail!("no guest for {guid} within {SETTLE:?}")
}
