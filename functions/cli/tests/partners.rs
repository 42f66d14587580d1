//! The partner direction end to end: partner accounts made and changed in the real Samba DC
//! become guests in the Graph simulator through a real `shadowsync serve` (its AD watcher, the
//! queue, the workers), in both modes.

use graph_sim::synced::SyncedUser;
use graph_sim::SimClient;
use serde_json::Value;
use shadowsync_core::dn;
use shadowsync_core::partner::ObjectGuid;
use shadowsync_e2e::host::{Host, HostOptions, SETTLE};
use shadowsync_e2e::serve::wait_until;
use shadowsync_e2e::{samba, unique, AdProbe};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_shadowsync");
const LINK: &str = "extensionAttribute15";
const SELECT: &str = "id,mail,otherMails,userType,accountEnabled,displayName,jobTitle,companyName,department,externalUserState,onPremisesExtensionAttributes";

/// A serve with `[partners]` in `mode` on a partner OU of its own (and one to move accounts
/// out to), watching AD every second.
async fn host(mode: &str) -> (Host, String, String) {
    let mut probe = AdProbe::connect(samba()).await.unwrap();
    let ou = probe.ou("Partners").await.unwrap();
    let former = probe.ou("Former Partners").await.unwrap();
    let config = format!(
        "[partners]\nmode = \"{mode}\"\nous = [\"{}\"]\npoll_interval = \"1s\"\nretention = \"never\"\n",
        ou.replace('\\', "\\\\").replace('"', "\\\"")
    );
    let host = Host::start_with(
        BIN,
        HostOptions {
            config: &config,
            ..HostOptions::default()
        },
    )
    .await;
    (host, ou, former)
}

/// An enabled partner account `CN=<cn>,<ou>` with these attributes; its DN, objectGUID and
/// sAMAccountName.
async fn partner(
    probe: &mut AdProbe,
    ou: &str,
    cn: &str,
    attrs: &[(&str, &str)],
) -> (String, ObjectGuid, String) {
    let dn = dn::child("CN", cn, ou);
    let sam = format!("pa{}", &unique()[..10]);
    let mut all = vec![
        ("objectClass", "user"),
        ("sAMAccountName", sam.as_str()),
        ("userAccountControl", "544"),
    ];
    all.extend_from_slice(attrs);
    probe.add(&dn, all).await.unwrap();
    let guid = probe.guid(&dn).await.unwrap();
    (dn, guid, sam)
}

/// The users carrying `guid`'s link.
async fn linked(graph: &SimClient, guid: &ObjectGuid) -> Vec<Value> {
    graph
        .find_users(
            &format!("onPremisesExtensionAttributes/{LINK} eq '{}'", guid.link()),
            SELECT,
            true,
        )
        .await
        .unwrap()
}

/// Waits until the one guest linked to `guid` satisfies `check`; returns it and how long that
/// took.
async fn guest_when(
    graph: &SimClient,
    guid: &ObjectGuid,
    what: &str,
    check: impl Fn(&Value) -> bool,
) -> (Value, Duration) {
    let start = Instant::now();
    loop {
        let found = linked(graph, guid).await;
        assert!(
            found.len() <= 1,
            "{what}: several guests carry the link: {found:?}"
        );
        if let Some(g) = found.first().filter(|g| check(g)) {
            return (g.clone(), start.elapsed());
        }
        assert!(
            start.elapsed() < SETTLE,
            "{what}: not reached within {SETTLE:?}: {found:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn status_of(host: &Host, name: &str) -> Value {
    serde_json::from_str(
        &host
            .serve
            .cli
            .run(&["status"], &[name, "--json"])
            .await
            .unwrap(),
    )
    .unwrap()
}

#[tokio::test]
async fn invite_mode_follows_a_partner_account_through_its_life() {
    let (mut host, ou, former) = host("invite").await;
    let domain = format!("{}.fabrikam.example", unique());
    let address = format!("pat@{domain}");
    let (dn_, guid, sam) = partner(
        &mut host.probe,
        &ou,
        "Pat \"the partner\", Ü",
        &[
            ("mail", &address),
            ("displayName", "Pat O'Brien \u{2603}"),
            ("company", "Fabrikam"),
        ],
    )
    .await;

    // Created in AD: a guest invited for the partner's own address, carrying the link.
    let (g, latency) = guest_when(&host.graph, &guid, "invited", |g| {
        g["displayName"] == "Pat O'Brien \u{2603}"
    })
    .await;
    println!(
        "partner account created → guest linked: {} ms",
        latency.as_millis()
    );
    assert_eq!(g["userType"], "Guest");
    assert_eq!(g["mail"], address.as_str());
    assert_eq!(g["companyName"], "Fabrikam");
    assert_eq!(g["accountEnabled"], true);
    let id = g["id"].as_str().unwrap().to_string();
    // The guest direction leaves a partner's guest alone: the partner has their AD account.
    assert!(
        host.probe.by_anchor(&id).await.unwrap().is_none(),
        "no shadow account for a partner's guest"
    );

    // status PARTNER, by sAMAccountName, mail and objectGUID.
    for key in [sam.clone(), address.clone(), guid.to_string()] {
        let s = status_of(&host, &key).await;
        assert_eq!(s["outcome"]["guid"], guid.to_string(), "{key}: {s}");
        assert_eq!(s["outcome"]["guest_id"], id.as_str());
        assert_eq!(s["record"]["status"], "active");
        assert_eq!(s["outcome"]["plan"], serde_json::json!([]));
    }

    // An attribute changed, with a value as hostile as AD allows.
    let title = "Lead ' or 1 eq 1 or '\u{0}x";
    host.probe
        .replace(&dn_, "title", &title.replace('\u{0}', ""))
        .await
        .unwrap();
    let (g, latency) = guest_when(&host.graph, &guid, "jobTitle", |g| {
        g["jobTitle"] == "Lead ' or 1 eq 1 or 'x"
    })
    .await;
    println!(
        "attribute changed → guest updated: {} ms",
        latency.as_millis()
    );
    assert_eq!(g["id"], id.as_str());

    // Disabled, then enabled again.
    host.probe
        .replace(&dn_, "userAccountControl", "546")
        .await
        .unwrap();
    let (_, latency) = guest_when(&host.graph, &guid, "blocked", |g| {
        g["accountEnabled"] == false
    })
    .await;
    println!(
        "account disabled → sign-in blocked: {} ms",
        latency.as_millis()
    );
    host.probe
        .replace(&dn_, "userAccountControl", "544")
        .await
        .unwrap();
    guest_when(&host.graph, &guid, "unblocked", |g| {
        g["accountEnabled"] == true
    })
    .await;

    // A new address: the same guest redeems again with it.
    let moved_address = format!("pat.obrien@{domain}");
    host.probe
        .replace(&dn_, "mail", &moved_address)
        .await
        .unwrap();
    let (g, _) = guest_when(&host.graph, &guid, "new address", |g| {
        g["mail"] == moved_address.as_str()
    })
    .await;
    assert_eq!(g["id"], id.as_str(), "not a second guest");

    // Moved out of the partner OU: blocked at once (deleted only after the retention).
    let out = host.probe.move_to(&dn_, &former).await.unwrap();
    guest_when(&host.graph, &guid, "blocked when moved out", |g| {
        g["accountEnabled"] == false
    })
    .await;
    let s = status_of(&host, &guid.to_string()).await;
    assert_eq!(s["record"]["status"], "gone", "{s}");
    assert_eq!(s["in_scope"], false);

    // Moved back, then deleted: blocked again, found through its tombstone.
    let back = host.probe.move_to(&out, &ou).await.unwrap();
    guest_when(&host.graph, &guid, "back in scope", |g| {
        g["accountEnabled"] == true
    })
    .await;
    host.probe.delete(&back).await.unwrap();
    guest_when(&host.graph, &guid, "blocked when deleted", |g| {
        g["accountEnabled"] == false
    })
    .await;
    assert_eq!(linked(&host.graph, &guid).await.len(), 1);
    let status = host.status().await;
    assert_eq!(status["queue"]["dead_letters"], 0, "{status}");
    // status counts the partner accounts by where their guest stands, and shows the watermark.
    assert_eq!(status["partners"]["gone"], 1, "{status}");
    assert!(
        status["partner_watermark"]["usn"].as_u64().unwrap() > 0,
        "{status}"
    );
    let human = host.serve.cli.run(&["status"], &[]).await.unwrap();
    assert!(human.contains("partners       1 gone"), "{human}");
    assert!(human.contains("AD watcher     past uSNChanged"), "{human}");
}

#[tokio::test]
async fn invite_mode_adopts_an_existing_guest_refuses_a_member_and_survives_a_lost_store() {
    let (mut host, ou, _) = host("invite").await;
    let domain = format!("{}.northwind.example", unique());
    // A guest invited by hand earlier, before shadowsync knew the partner.
    let by_hand = host
        .graph
        .invite(&format!("lee@{domain}"), "Lee by hand")
        .await
        .unwrap();
    let by_hand = by_hand["invitedUser"]["id"]
        .as_str()
        .or(by_hand["id"].as_str())
        .unwrap()
        .to_string();
    let (_, lee, _) = partner(
        &mut host.probe,
        &ou,
        "Lee",
        &[("mail", &format!("lee@{domain}")), ("displayName", "Lee")],
    )
    .await;
    let (g, _) = guest_when(&host.graph, &lee, "adopted", |g| g["displayName"] == "Lee").await;
    assert_eq!(g["id"], by_hand.as_str(), "adopted, not duplicated");

    // An account without an address of its own is reported, not guessed.
    let (_, nomail, nomail_sam) = partner(&mut host.probe, &ou, "No Mail", &[]).await;
    wait_until(SETTLE, || async {
        status_of(&host, &nomail_sam).await["record"]["status"] == "conflict"
    })
    .await
    .expect("reported");
    assert!(linked(&host.graph, &nomail).await.is_empty());

    // The state store is lost: serve starts again on an empty one and invites nobody twice.
    host.serve.stop().await.unwrap();
    let state = host.dir.path().join("state.redb");
    std::fs::remove_file(&state).unwrap();
    host.serve.spawn().await.unwrap();
    let (dn_sam, sam, _) = partner(
        &mut host.probe,
        &ou,
        "Sam",
        &[("mail", &format!("sam@{domain}")), ("displayName", "Sam")],
    )
    .await;
    guest_when(&host.graph, &sam, "invited after the restart", |g| {
        g["displayName"] == "Sam"
    })
    .await;
    host.probe
        .replace(&dn_sam, "department", "Audit")
        .await
        .unwrap();
    guest_when(&host.graph, &sam, "updated", |g| g["department"] == "Audit").await;
    let s = status_of(&host, &lee.to_string()).await;
    assert_eq!(s["record"]["guest_id"], by_hand.as_str(), "rebuilt: {s}");
    let everyone = host
        .graph
        .find_users(&format!("endsWith(mail,'@{domain}')"), SELECT, true)
        .await
        .unwrap();
    assert_eq!(everyone.len(), 2, "one guest each: {everyone:?}");

    // plan and sync cover both directions through the running serve.
    let plan: Value =
        serde_json::from_str(&host.serve.cli.run(&["plan"], &["--json"]).await.unwrap()).unwrap();
    let partners = plan["partners"].as_array().expect("partners in the plan");
    let planned = |guid: &ObjectGuid| {
        partners
            .iter()
            .find(|o| o["guid"] == guid.to_string())
            .unwrap_or_else(|| panic!("{guid} in {partners:?}"))
            .clone()
    };
    assert_eq!(planned(&lee)["plan"], serde_json::json!([]));
    assert_eq!(planned(&nomail)["status"], "conflict");
    assert!(plan["guests"].is_array());
    let human = host.serve.cli.run(&["plan"], &[]).await.unwrap();
    assert!(human.contains("partner accounts:"), "{human}");
    let synced = host.serve.cli.run(&["sync"], &[]).await.unwrap();
    assert!(
        synced.contains("synced by the running shadowsync serve"),
        "{synced}"
    );
    assert_eq!(host.status().await["queue"]["dead_letters"], 0);
}

#[tokio::test]
async fn convert_mode_converts_the_synced_user_in_place_and_reports_a_blocked_one() {
    let (mut host, ou, _) = host("convert").await;
    let domain = format!("{}.contoso-partners.example", unique());
    let address = format!("kim@{domain}");
    let (kim_dn, kim, kim_sam) = partner(&mut host.probe, &ou, "Kim", &[("mail", &address)]).await;
    // Entra Connect syncs the account (without onPremisesUserPrincipalName, as Microsoft
    // documents for partner accounts).
    let synced = host
        .graph
        .create_synced_user(&SyncedUser {
            on_premises_sam_account_name: kim_sam.clone(),
            object_guid: Some(kim.to_string()),
            mail: Some(address.clone()),
            ..SyncedUser::default()
        })
        .await
        .unwrap();
    let id = synced["id"].as_str().unwrap().to_string();
    let started = Instant::now();
    wait_until(SETTLE, || async {
        let u = host
            .graph
            .get_user_select(&id, SELECT)
            .await
            .unwrap()
            .unwrap();
        u["userType"] == "Guest" && u["externalUserState"].is_string()
    })
    .await
    .expect("converted in place");
    println!(
        "synced user → converted to B2B: {} ms",
        started.elapsed().as_millis()
    );
    assert!(host.probe.by_anchor(&id).await.unwrap().is_none());

    // The partner redeems; then their address changes in AD. The reset waits for Entra
    // Connect to bring the new mail to the synced user, then the partner redeems again.
    host.graph.accept_invitation(&id).await.unwrap();
    let new_address = format!("kim.new@{domain}");
    host.probe
        .replace(&kim_dn, "mail", &new_address)
        .await
        .unwrap();
    wait_until(SETTLE, || async {
        status_of(&host, &kim_sam).await["record"]["conflict"]
            .as_str()
            .is_some_and(|c| c.contains("Entra Connect"))
    })
    .await
    .expect("waiting for Connect, said");
    let u = host
        .graph
        .get_user_select(&id, SELECT)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(u["externalUserState"], "Accepted", "nothing reset yet");
    host.graph
        .update_synced_user(&id, serde_json::json!({"mail": new_address}))
        .await
        .unwrap();
    wait_until(SETTLE, || async {
        let u = host
            .graph
            .get_user_select(&id, SELECT)
            .await
            .unwrap()
            .unwrap();
        u["externalUserState"] == "PendingAcceptance"
    })
    .await
    .expect("the redemption is reset once the new address is on the user");
    // Disabled in AD: Entra Connect masters a synced user's sign-in; shadowsync leaves it.
    host.probe
        .replace(&kim_dn, "userAccountControl", "546")
        .await
        .unwrap();
    wait_until(SETTLE, || async {
        status_of(&host, &kim_sam).await["enabled"] == false
    })
    .await
    .unwrap();
    let u = host
        .graph
        .get_user_select(&id, SELECT)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(u["accountEnabled"], true, "left to Entra Connect");

    // The state store is lost: serve starts again and converts nobody twice.
    host.serve.stop().await.unwrap();
    std::fs::remove_file(host.dir.path().join("state.redb")).unwrap();
    host.serve.spawn().await.unwrap();
    wait_until(SETTLE, || async {
        status_of(&host, &kim_sam).await["record"]["guest_id"] == id.as_str()
    })
    .await
    .expect("the record rebuilt from the synced user");
    let s = status_of(&host, &kim_sam).await;
    assert_eq!(s["outcome"]["plan"], serde_json::json!([]), "{s}");

    // Moved out, then deleted in AD: Entra Connect masters a synced user's lifetime too.
    let former = host.probe.ou("Former Partners").await.unwrap();
    let moved = host.probe.move_to(&kim_dn, &former).await.unwrap();
    wait_until(SETTLE, || async {
        status_of(&host, &kim.to_string()).await["record"]["status"] == "gone"
    })
    .await
    .expect("seen gone");
    host.probe.delete(&moved).await.unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let u = host
        .graph
        .get_user_select(&id, SELECT)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(u["accountEnabled"], true, "left to Entra Connect");
    assert_eq!(u["userType"], "Guest");
    assert_eq!(host.status().await["queue"]["dead_letters"], 0);

    let (_, ray, ray_sam) = partner(
        &mut host.probe,
        &ou,
        "Ray",
        &[("mail", &format!("ray@{domain}"))],
    )
    .await;
    let blocked = host
        .graph
        .create_synced_user(&SyncedUser {
            on_premises_sam_account_name: ray_sam.clone(),
            object_guid: Some(ray.to_string()),
            mail: Some(format!("ray@{domain}")),
            on_premises_user_principal_name: Some(format!("{ray_sam}@corp.example.test")),
            ..SyncedUser::default()
        })
        .await
        .unwrap();
    wait_until(SETTLE, || async {
        status_of(&host, &ray_sam).await["record"]["status"] == "conflict"
    })
    .await
    .expect("a blocked conversion is reported");
    let s = status_of(&host, &ray_sam).await;
    assert!(
        s["record"]["conflict"]
            .as_str()
            .unwrap()
            .contains("onPremisesUserPrincipalName"),
        "{s}"
    );
    let u = host
        .graph
        .get_user_select(blocked["id"].as_str().unwrap(), SELECT)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(u["userType"], "Member", "left as it was");
}
