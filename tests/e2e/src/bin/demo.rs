//! The demo: a throwaway Samba AD DC, the Graph simulator and `shadowsync serve` as a real
//! process. Guests are invited through the simulator's Graph API and their shadow accounts
//! appear in AD within moments; then one is disabled, one deleted and restored. Then the other
//! direction: a partner account created in AD becomes a B2B guest in Entra ID.

use anyhow::{Context, Result};
use graph_sim::{SimClient, SimConfig};
use serde_json::json;
use shadowsync_core::account::uac;
use shadowsync_core::dn;
use shadowsync_e2e::serve::{wait_until, ServeProcess};
use shadowsync_e2e::{repo_root, samba, text, AdProbe};
use std::time::{Duration, Instant};

const GUESTS: [(&str, &str); 4] = [
    ("ada.lovelace@fabrikam.example", "Ada Lovelace"),
    ("grace.hopper@contoso-partners.example", "Grace Hopper"),
    ("alan.turing@northwind.example", "Alan Turing"),
    ("emile.zola@tailspin.example", "Émile Zola, Jr."),
];

#[tokio::main]
async fn main() -> Result<()> {
    let dc_was_running = dc("status").is_ok();
    println!("▸ Starting a throwaway Samba AD domain controller (CORP.EXAMPLE.TEST on 127.0.0.1)…");
    let samba = samba();
    // A clean domain each time, so a second run does not meet the first run's accounts.
    dc("reset")?;
    let mut probe = AdProbe::connect(samba).await?;

    println!("▸ Starting the Microsoft Graph simulator…");
    let sim = graph_sim::start(SimConfig::default(), "127.0.0.1:0".parse()?).await?;
    let graph = SimClient::new(sim.base_url(), sim.config());
    println!("  {}", sim.base_url());

    let dir = tempfile::tempdir()?;
    let binary = std::env::current_exe()?.with_file_name("shadowsync");
    println!("▸ Starting `shadowsync serve` ({})…", binary.display());
    let partners_ou = format!("OU=Partners,{}", samba.base_dn);
    probe
        .add(&partners_ou, vec![("objectClass", "organizationalUnit")])
        .await?;
    let partners = format!(
        "[partners]\nmode = \"invite\"\nous = [\"{partners_ou}\"]\npoll_interval = \"1s\"\n"
    );
    let ous = (samba.guests_ou.as_str(), samba.disabled_ou.as_str());
    let mut serve = ServeProcess::start_in(&binary, &sim, samba, ous, dir.path(), &partners)
        .await
        .context("run `cargo build -p shadowsync` first (tests/demo.sh does)")?;
    wait_until(Duration::from_secs(30), || async {
        !graph.delivery_log().await.unwrap_or_default().is_empty()
    })
    .await
    .context("the subscription was not created")?;
    println!(
        "  webhook on http://{}; Graph subscription on /users created and validated",
        serve.listen
    );

    println!(
        "\n▸ Inviting {} guests through Graph (POST /v1.0/invitations)…",
        GUESTS.len()
    );
    let mut ids = Vec::new();
    for (email, name) in GUESTS {
        let started = Instant::now();
        let user = graph.invite(email, name).await?;
        let id = user["invitedUser"]["id"]
            .as_str()
            .or(user["id"].as_str())
            .context("no id")?
            .to_string();
        let mut p = AdProbe::connect(samba).await?;
        let took = wait_for(&mut p, &id, |a| a.is_some()).await?;
        println!(
            "  {name:<18} → AD account in {:>5} ms after the invitation",
            (started.elapsed().max(took)).as_millis()
        );
        ids.push(id);
    }
    show(&mut probe, &ids).await?;

    println!("\n▸ Ada's account is disabled in Entra ID (PATCH accountEnabled=false)…");
    graph
        .patch_user(&ids[0], json!({"accountEnabled": false}))
        .await?;
    wait_for(&mut probe, &ids[0], |a| a.is_some_and(|(_, e)| !enabled(e))).await?;
    println!("▸ Grace is deleted (DELETE /v1.0/users/{{id}}: soft delete)…");
    graph.delete_user(&ids[1]).await?;
    wait_for(&mut probe, &ids[1], |a| a.is_some_and(|(_, e)| !enabled(e))).await?;
    show(&mut probe, &ids).await?;

    println!("\n▸ Grace is restored from deleted items…");
    graph.restore_user(&ids[1]).await?;
    wait_for(&mut probe, &ids[1], |a| a.is_some_and(|(_, e)| enabled(e))).await?;
    show(&mut probe, &ids).await?;

    println!("\n▸ Notifications get lost for a while (a simulator switch): Alan is renamed and Margaret invited…");
    graph.set_notifications_lost(true).await?;
    graph
        .patch_user(&ids[2], json!({"displayName": "Alan M. Turing"}))
        .await?;
    let user = graph
        .invite(
            "margaret.hamilton@nasa-partners.example",
            "Margaret Hamilton",
        )
        .await?;
    ids.push(
        user["invitedUser"]["id"]
            .as_str()
            .or(user["id"].as_str())
            .context("no id")?
            .to_string(),
    );
    graph.set_notifications_lost(false).await?;
    println!("▸ `shadowsync plan` shows what a full sync would do, changing nothing:\n");
    for line in serve.cli.run(&["plan"], &[]).await?.lines() {
        println!("    {line}");
    }
    println!("\n▸ `shadowsync sync` does it (the delta reconciler would too, on its schedule):");
    for line in serve.cli.run(&["sync"], &[]).await?.lines() {
        println!("    {line}");
    }
    show(&mut probe, &ids).await?;

    partner(&mut probe, &graph, &serve, &partners_ou).await?;

    println!("\n▸ Shutting down…");
    serve.stop().await?;
    sim.shutdown().await;
    if !dc_was_running {
        dc("stop")?;
    }
    println!(
        "Done. Try `cargo run -p shadowsync -- --help`, and see README.md for running it for real."
    );
    Ok(())
}

/// The other direction: a partner account made in AD becomes a guest, and follows the account.
async fn partner(
    probe: &mut AdProbe,
    graph: &SimClient,
    serve: &ServeProcess,
    ou: &str,
) -> Result<()> {
    println!("\n▸ The other direction: a partner account is created in AD ({ou})…");
    let dn_ = dn::child("CN", "Lin Chen", ou);
    let started = Instant::now();
    probe
        .add(
            &dn_,
            vec![
                ("objectClass", "user"),
                ("sAMAccountName", "lin.chen"),
                ("userAccountControl", "544"),
                ("mail", "lin.chen@woodgrove.example"),
                ("displayName", "Lin Chen (Woodgrove)"),
                ("company", "Woodgrove Bank"),
            ],
        )
        .await?;
    let guid = probe.guid(&dn_).await?;
    let filter = format!(
        "onPremisesExtensionAttributes/extensionAttribute15 eq '{}'",
        guid.link()
    );
    let select = "id,userType,mail,displayName,companyName,accountEnabled,externalUserState";
    let find = || async {
        graph
            .find_users(&filter, select, true)
            .await
            .unwrap_or_default()
            .into_iter()
            .next()
    };
    wait_until(Duration::from_secs(60), || async { find().await.is_some() })
        .await
        .context("the partner's guest was not invited")?;
    let guest = find().await.context("the guest")?;
    println!(
        "  lin.chen → B2B guest {} in {} ms: {} <{}>, {}, userType {}, {}",
        guest["id"].as_str().unwrap_or_default(),
        started.elapsed().as_millis(),
        guest["displayName"].as_str().unwrap_or_default(),
        guest["mail"].as_str().unwrap_or_default(),
        guest["companyName"].as_str().unwrap_or_default(),
        guest["userType"].as_str().unwrap_or_default(),
        guest["externalUserState"].as_str().unwrap_or_default(),
    );
    println!("  (linked by extensionAttribute15 = {})", guid.link());
    println!("▸ The account is disabled in AD: the guest's sign-in is blocked…");
    let started = Instant::now();
    probe.replace(&dn_, "userAccountControl", "546").await?;
    wait_until(Duration::from_secs(60), || async {
        find().await.is_some_and(|g| g["accountEnabled"] == false)
    })
    .await
    .context("the guest was not blocked")?;
    println!("  blocked in {} ms", started.elapsed().as_millis());
    println!("▸ `shadowsync status lin.chen`:\n");
    for line in serve.cli.run(&["status"], &["lin.chen"]).await?.lines() {
        println!("    {line}");
    }
    Ok(())
}

fn enabled(e: &shadowsync_e2e::RawEntry) -> bool {
    text(e, "userAccountControl")
        .and_then(|v| v.parse::<u32>().ok())
        .is_some_and(|v| v & uac::ACCOUNTDISABLE == 0)
}

async fn wait_for(
    probe: &mut AdProbe,
    id: &str,
    check: impl Fn(Option<&(String, shadowsync_e2e::RawEntry)>) -> bool,
) -> Result<Duration> {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(30) {
        if check(probe.by_anchor(id).await?.as_ref()) {
            return Ok(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    anyhow::bail!("AD did not reach the expected state for {id}")
}

/// The guests' shadow accounts as AD holds them.
async fn show(probe: &mut AdProbe, ids: &[String]) -> Result<()> {
    println!(
        "\n  {:<20} {:<30} {:<16} {:<9} userPrincipalName",
        "sAMAccountName", "cn", "OU", "status"
    );
    println!("  {}", "─".repeat(120));
    for id in ids {
        match probe.by_anchor(id).await? {
            Some((dn_, e)) => {
                let ou = dn::parent(&dn_)
                    .and_then(|p| dn::first_value(&p).ok())
                    .unwrap_or_default();
                println!(
                    "  {:<20} {:<30} {:<16} {:<9} {}",
                    text(&e, "sAMAccountName").unwrap_or_default(),
                    text(&e, "cn").unwrap_or_default(),
                    ou,
                    if enabled(&e) { "enabled" } else { "disabled" },
                    text(&e, "userPrincipalName").unwrap_or_default()
                );
            }
            None => println!("  (no account for {id})"),
        }
    }
    Ok(())
}

fn dc(command: &str) -> Result<()> {
    let status = std::process::Command::new("bash")
        .arg(repo_root().join("tests/samba/samba-dc.sh"))
        .arg(command)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()?;
    anyhow::ensure!(status.success(), "samba-dc.sh {command} failed");
    Ok(())
}
