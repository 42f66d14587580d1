//! The admin commands, both on the store directly (no `serve` running) and through a running
//! `serve`'s admin API.

use graph_sim::{FaultRule, SimClient};
use serde_json::{json, Value};
use shadowsync_e2e::host::Host;
use shadowsync_e2e::serve::{wait_until, ServeProcess, CLIENT_STATE};
use shadowsync_e2e::{samba, unique, AdProbe};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_shadowsync");

/// A serve of its own with managed OUs of its own: `sync` acts on every account in them.
async fn host() -> (
    graph_sim::RunningSim,
    SimClient,
    ServeProcess,
    tempfile::TempDir,
) {
    let Host {
        sim,
        graph,
        serve,
        dir,
        ..
    } = Host::start(BIN, "").await;
    (sim, graph, serve, dir)
}

async fn invite(graph: &SimClient, name: &str) -> (String, String) {
    let user = graph
        .invite(&format!("{name}@{}.example.com", unique()), name)
        .await
        .unwrap();
    let id = user["invitedUser"]["id"]
        .as_str()
        .or(user["id"].as_str())
        .unwrap()
        .to_string();
    let upn = graph.get_user(&id).await.unwrap().unwrap()["userPrincipalName"]
        .as_str()
        .unwrap()
        .to_string();
    (id, upn)
}

async fn has_account(probe: &mut AdProbe, id: &str) -> bool {
    probe.by_anchor(id).await.unwrap().is_some()
}

#[tokio::test]
async fn status_works_through_serve_and_on_the_store() {
    let (_sim, graph, mut serve, _dir) = host().await;
    let mut probe = AdProbe::connect(samba()).await.unwrap();
    let (id, upn) = invite(&graph, "status").await;
    // serve holds the store: the command goes through its admin API. The record is written
    // just after the account, so wait for it.
    let remote_status = || async {
        serde_json::from_str::<Value>(&serve.cli.run(&["status"], &["--json"]).await.unwrap())
            .unwrap()
    };
    wait_until(Duration::from_secs(30), || async {
        remote_status().await["accounts"]["enabled"] == 1
    })
    .await
    .expect("the guest is provisioned and recorded");
    let remote = remote_status().await;
    assert!(probe.by_anchor(&id).await.unwrap().is_some());
    assert!(remote["subscription"]["id"].is_string(), "{remote}");
    assert_eq!(remote["queue"]["dead_letters"], 0);
    // The test DC's schema has the indexed anchor (tests/samba/samba-dc.sh extends it).
    assert_eq!(
        remote["anchor_lookup"]["attribute"], "msDS-ExternalDirectoryObjectId",
        "{remote}"
    );
    assert_eq!(remote["anchor_lookup"]["indexed"], true);

    let user: Value =
        serde_json::from_str(&serve.cli.run(&["status"], &[&upn, "--json"]).await.unwrap())
            .unwrap();
    assert_eq!(user["object_id"], id.as_str());
    assert_eq!(user["graph_state"], "active");
    assert_eq!(user["record"]["status"], "enabled");
    assert_eq!(user["directory"].as_array().unwrap().len(), 1);
    assert_eq!(user["plan"], json!([]));

    serve.stop().await.unwrap();
    // Now the command opens the store itself, and sees the same.
    let local: Value =
        serde_json::from_str(&serve.cli.run(&["status"], &["--json"]).await.unwrap()).unwrap();
    assert_eq!(local["accounts"], remote["accounts"]);
    assert_eq!(local["subscription"]["id"], remote["subscription"]["id"]);
    let text = serve.cli.run(&["status"], &[]).await.unwrap();
    assert!(text.contains("1 enabled"), "{text}");
    assert!(
        text.contains(
            "AD anchor      accounts looked up by msDS-ExternalDirectoryObjectId (indexed)"
        ),
        "{text}"
    );
    let sam = probe
        .by_anchor(&id)
        .await
        .unwrap()
        .map(|(_, e)| shadowsync_e2e::text(&e, "sAMAccountName").unwrap())
        .unwrap();
    let by_sam = serve.cli.run(&["status"], &[&sam]).await.unwrap();
    assert!(
        by_sam.contains(&id) && by_sam.contains("Converging now would: nothing to do"),
        "{by_sam}"
    );
}

#[tokio::test]
async fn dead_letters_can_be_listed_retried_and_dropped() {
    let (_sim, graph, serve, _dir) = host().await;
    let mut probe = AdProbe::connect(samba()).await.unwrap();
    // Graph rejects reading these users (400): a permanent error, dead-lettered at once.
    graph.set_notifications_lost(true).await.unwrap();
    let (first, _) = invite(&graph, "deadletter").await;
    let (second, _) = invite(&graph, "dropped").await;
    graph.set_notifications_lost(false).await.unwrap();
    graph
        .set_fault(FaultRule {
            method: Some("GET".into()),
            ..FaultRule::fail_next("/v1.0/users/*", 400, 1000)
        })
        .await
        .unwrap();
    for id in [&first, &second] {
        let status = post_notification(&serve, &_sim, id).await;
        assert_eq!(status, 202);
    }
    let listed = || async {
        let out = serve
            .cli
            .run(&["dead-letters", "list"], &["--json"])
            .await
            .unwrap();
        serde_json::from_str::<Vec<Value>>(&out).unwrap()
    };
    wait_until(Duration::from_secs(30), || async {
        listed().await.len() == 2
    })
    .await
    .expect("both dead-lettered");
    let letters = listed().await;
    assert!(
        letters[0]["reason"].as_str().unwrap().contains("400"),
        "{letters:?}"
    );
    let id_of = |user: &str| {
        letters
            .iter()
            .find(|l| l["job"]["user_id"] == user)
            .unwrap()["id"]
            .as_str()
            .unwrap()
            .to_string()
    };

    graph.clear_faults().await.unwrap();
    serve
        .cli
        .run(&["dead-letters", "retry"], &[&id_of(&first)])
        .await
        .unwrap();
    wait_until(Duration::from_secs(30), || async {
        AdProbe::connect(samba())
            .await
            .unwrap()
            .by_anchor(&first)
            .await
            .unwrap()
            .is_some()
    })
    .await
    .expect("retried job applied");
    serve
        .cli
        .run(&["dead-letters", "drop"], &[&id_of(&second)])
        .await
        .unwrap();
    assert!(listed().await.is_empty());
    assert!(
        !has_account(&mut probe, &second).await,
        "a dropped job is not applied"
    );
}

async fn post_notification(
    serve: &ServeProcess,
    sim: &graph_sim::RunningSim,
    user_id: &str,
) -> u16 {
    let (sub, tenant) = (
        "00000000-0000-0000-0000-000000000001",
        &sim.config().tenant_id,
    );
    let change = (user_id, shadowsync_e2e::serve::Change::Updated);
    shadowsync_e2e::serve::post_notification(serve.listen, sub, change, CLIENT_STATE, tenant)
        .await
        .unwrap()
}

#[tokio::test]
async fn sync_converges_what_notifications_missed() {
    let (_sim, graph, mut serve, _dir) = host().await;
    serve.stop().await.unwrap();
    let mut probe = AdProbe::connect(samba()).await.unwrap();
    graph.set_notifications_lost(true).await.unwrap();
    let (a, _) = invite(&graph, "missed-a").await;
    let (b, _) = invite(&graph, "missed-b").await;
    let out = serve.cli.run(&["sync"], &[]).await.unwrap();
    assert!(out.contains("changed"), "{out}");
    assert!(has_account(&mut probe, &a).await && has_account(&mut probe, &b).await);

    // And through a running serve: the jobs go on its queue, the command waits for them.
    serve.spawn().await.unwrap();
    let (c, _) = invite(&graph, "missed-c").await;
    let out = serve.cli.run(&["sync"], &[]).await.unwrap();
    assert!(
        out.contains("synced by the running shadowsync serve"),
        "{out}"
    );
    wait_until(Duration::from_secs(30), || async {
        AdProbe::connect(samba())
            .await
            .unwrap()
            .by_anchor(&c)
            .await
            .unwrap()
            .is_some()
    })
    .await
    .expect("synced through serve");
}

#[tokio::test]
async fn the_admin_api_answers_only_with_the_token_only_the_service_can_read() {
    use std::os::unix::fs::PermissionsExt;
    let (_sim, _graph, serve, dir) = host().await;
    let token_file = dir.path().join("state.redb.admin-token");
    let mode = std::fs::metadata(&token_file).unwrap().permissions().mode() & 0o777;
    assert_eq!(format!("{mode:o}"), "600");
    let token = std::fs::read_to_string(&token_file).unwrap();
    assert_eq!(token.len(), 64, "256 random bits, hex");

    let config: toml::Table = std::fs::read_to_string(&serve.cli.config_path)
        .unwrap()
        .parse()
        .unwrap();
    let listen = config["admin"]["listen"].as_str().unwrap().to_string();
    let url = format!("http://{listen}/admin/status");
    let http = reqwest::Client::new();
    let status = |auth: Option<String>| {
        let mut request = http.get(&url);
        if let Some(auth) = auth {
            request = request.header("Authorization", auth);
        }
        async move { request.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(status(None).await, 401, "no token");
    assert_eq!(status(Some("Bearer wrong".into())).await, 401);
    assert_eq!(status(Some(token.clone())).await, 401, "not a bearer token");
    assert_eq!(status(Some(format!("Bearer {token}"))).await, 200);
    // The commands read it themselves.
    serve.cli.run(&["status"], &[]).await.unwrap();
}
