//! The administrator's operations against the fakes.

mod common;

use common::*;
use shadowsync_app::admin;
use shadowsync_app::AppError;
use shadowsync_core::account::uac;
use shadowsync_core::{ObjectId, Operation};
use shadowsync_queue::{Job, JobSource, Queue};
use shadowsync_state::{AccountStatus, KeyValueStore};
use shadowsync_testkit::GraphOp;
use std::collections::BTreeMap;

const ALICE_UPN: &str = "alice_fabrikam.com#EXT#@contoso.onmicrosoft.com";

fn not_found(r: Result<ObjectId, AppError>) -> String {
    match r {
        Err(AppError::NotFound(m)) => m,
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn resolves_an_object_id_without_asking_anyone() {
    let w = World::new();
    let id = w.graph.invite_guest("alice@fabrikam.com");
    let resolved = w
        .app
        .resolve_user(&id.as_str().to_uppercase())
        .await
        .unwrap();
    assert_eq!(resolved, id);
    assert_eq!(w.graph.call_count(GraphOp::Any), 0);
    assert_eq!(w.directory.read_count(), 0);
}

#[tokio::test]
async fn resolves_a_upn_through_graphs_upn_lookup_only() {
    let w = World::new();
    let id = w.graph.invite_guest("alice@fabrikam.com");
    assert_eq!(w.app.resolve_user(ALICE_UPN).await.unwrap(), id);
    assert_eq!(
        w.graph.calls(GraphOp::UserByPrincipalName),
        vec![ALICE_UPN.to_string()]
    );
    assert_eq!(
        w.graph.call_count(GraphOp::User),
        0,
        "a name never goes to /users/{{id}}"
    );
    let m = not_found(w.app.resolve_user("nobody@contoso.com").await);
    assert!(m.contains("no user nobody@contoso.com"), "{m}");
}

#[tokio::test]
async fn resolves_the_sam_account_name_of_a_shadow_account_only() {
    let w = World::new();
    let id = w.graph.invite_guest("alice@fabrikam.com");
    w.converge(&id).await;
    w.graph.clear_calls();
    assert_eq!(w.app.resolve_user("alice_fabrikam.com").await.unwrap(), id);
    assert_eq!(w.app.resolve_user("ALICE_FABRIKAM.COM").await.unwrap(), id);
    assert_eq!(w.graph.call_count(GraphOp::Any), 0, "AD alone answers");

    let bob = w
        .directory
        .add_employee(STAFF_OU, "Bob", "bob", "bob@corp.example.test")
        .unwrap();
    let m = not_found(w.app.resolve_user("bob").await);
    assert!(
        m.contains(&bob) && m.contains("is not a shadow account"),
        "{m}"
    );
    let m = not_found(w.app.resolve_user("nobody").await);
    assert!(m.contains("no object with sAMAccountName nobody"), "{m}");
}

#[tokio::test]
async fn a_user_report_shows_graph_ad_and_state_side_by_side() {
    let w = World::new();
    let id = w.graph.invite_guest("alice@fabrikam.com");
    w.converge(&id).await;
    let report = w.app.user_report("alice_fabrikam.com").await.unwrap();
    assert_eq!(report.object_id, id);
    assert_eq!(report.graph_state, "active");
    assert_eq!(
        report.graph.unwrap().user_principal_name.as_deref(),
        Some(ALICE_UPN)
    );
    assert_eq!(report.directory.len(), 1);
    assert_eq!(report.record.unwrap().status, AccountStatus::Enabled);
    assert!(report.plan.is_empty());

    w.graph.soft_delete(&id);
    let writes = w.directory.write_count();
    let report = w.app.user_report(id.as_str()).await.unwrap();
    assert_eq!(report.graph_state, "soft-deleted");
    assert!(matches!(
        report.plan.as_slice(),
        [Operation::Disable { .. }]
    ));
    assert_eq!(
        w.directory.write_count(),
        writes,
        "a report changes nothing"
    );
    assert!(w.account_of(&id).unwrap().is_enabled());
}

/// Four guests: `new` (no account yet), `renamed`, `same` (converged) and `orphan` (an account
/// whose user Graph no longer has).
async fn four(w: &World) -> [ObjectId; 4] {
    let new = w.graph.invite_guest("new@fabrikam.com");
    let renamed = w.graph.invite_guest("renamed@fabrikam.com");
    let same = w.graph.invite_guest("same@fabrikam.com");
    let orphan = w.graph.invite_guest("orphan@fabrikam.com");
    for id in [&renamed, &same, &orphan] {
        w.converge(id).await;
    }
    w.graph
        .update_user(&renamed, |u| u.display_name = Some("Renamed Guest".into()));
    w.graph.delete_permanently(&orphan);
    [new, renamed, same, orphan]
}

#[tokio::test]
async fn plan_lists_what_a_sync_would_do_and_writes_nothing() {
    let w = World::new();
    let [new, renamed, same, orphan] = four(&w).await;
    let writes = w.directory.write_count();
    let outcomes = w.app.plan(|_, _| {}).await.unwrap();
    let by_id: BTreeMap<_, _> = outcomes.iter().map(|o| (o.user_id.clone(), o)).collect();
    assert_eq!(outcomes.len(), 4);
    assert!(matches!(
        by_id[&new].plan.as_slice(),
        [Operation::Create { .. }]
    ));
    assert!(matches!(
        by_id[&renamed].plan.as_slice(),
        [Operation::Update { .. }, Operation::Move { .. }]
    ));
    assert!(by_id[&same].plan.is_empty());
    assert!(matches!(
        by_id[&orphan].plan.as_slice(),
        [Operation::Disable { .. }]
    ));
    assert!(outcomes.iter().all(|o| !o.applied));
    assert_eq!(
        outcomes[0].user_id, orphan,
        "sorted by UPN; Graph has none for the orphan"
    );
    assert_eq!(w.directory.write_count(), writes);
    assert!(w.record(&new).await.is_none());
}

#[tokio::test]
async fn sync_converges_everyone_and_counts_by_status() {
    let w = World::new();
    let [new, _renamed, _same, orphan] = four(&w).await;
    let conflicted = w.graph.invite_guest("taken@fabrikam.com");
    w.directory
        .add_employee(
            STAFF_OU,
            "Taken",
            "taken",
            "taken_fabrikam.com#EXT#@contoso.onmicrosoft.com",
        )
        .unwrap();
    let progress = std::sync::Mutex::new(Vec::new());
    let report = w
        .app
        .sync(|done, total| progress.lock().unwrap().push((done, total)))
        .await
        .unwrap();
    assert_eq!(report.guests, 5);
    assert_eq!(report.changed, 2, "create, update and move");
    assert_eq!(
        report.by_status,
        BTreeMap::from([("conflict".to_string(), 1), ("enabled".to_string(), 3)])
    );
    // Graph answers 404 for the orphan: not acted on until a second read confirms it.
    assert_eq!(report.waiting.len(), 1);
    assert_eq!(report.waiting[0].0, orphan.to_string());
    assert!(report.waiting[0].1.contains("404"), "{:?}", report.waiting);
    assert!(w.account_of(&orphan).unwrap().is_enabled());
    w.advance(chrono::Duration::seconds(31));
    let report = w.app.sync(|_, _| {}).await.unwrap();
    assert!(report.waiting.is_empty());
    assert_eq!(report.changed, 1, "the disable");
    assert_eq!(report.by_status.get("disabled"), Some(&1));
    assert_eq!(report.conflicts.len(), 1);
    assert_eq!(report.conflicts[0].0, conflicted.to_string());
    assert!(report.conflicts[0].1.contains("userPrincipalName"));
    assert!(report.errors.is_empty());
    assert_eq!(progress.into_inner().unwrap().first(), Some(&(1, 5)));
    assert!(w.account_of(&new).unwrap().is_enabled());
    assert_eq!(
        w.account_of(&orphan).unwrap().user_account_control,
        uac::DISABLED
    );
}

#[tokio::test]
async fn enqueue_sync_puts_one_job_per_guest_and_per_anchored_account() {
    let w = World::new();
    let [new, renamed, same, orphan] = four(&w).await;
    let member = w.graph.add_member("m@contoso.com", "Employee");
    let count = w.app.enqueue_sync().await.unwrap();
    assert_eq!(count, 4);
    let jobs = w.drain().await;
    assert!(jobs.iter().all(|j| matches!(
        j,
        Job::Converge {
            source: JobSource::Admin,
            change_type: None,
            ..
        }
    )));
    let ids = converge_ids(&jobs);
    assert_eq!(ids, sorted(vec![new, renamed, same, orphan]));
    assert!(!ids.contains(&member));
    assert_eq!(
        w.directory.write_count(),
        3,
        "only the converges of the setup"
    );
}

#[tokio::test]
async fn status_counts_accounts_and_lists_conflicts_from_state_alone() {
    let w = World::new();
    let [new, renamed, _same, _orphan] = four(&w).await;
    w.converge(&new).await;
    w.converge(&renamed).await;
    let taken = w.graph.invite_guest("taken@fabrikam.com");
    w.directory
        .add_employee(
            STAFF_OU,
            "Taken",
            "taken",
            "taken_fabrikam.com#EXT#@contoso.onmicrosoft.com",
        )
        .unwrap();
    w.converge(&taken).await;
    w.app.reconciler.run_delta().await.unwrap();

    let status = admin::status(w.store.as_ref(), w.queue.as_ref())
        .await
        .unwrap();
    assert_eq!(
        status.accounts,
        BTreeMap::from([("conflict".to_string(), 1), ("enabled".to_string(), 4)])
    );
    assert_eq!(status.conflicts.len(), 1);
    assert_eq!(status.conflicts[0].0, taken.to_string());
    assert!(status.subscription.is_none());
    assert_eq!(status.delta_checkpoint, Some(now(&w)));
    assert_eq!(status.queue, w.queue.stats().await.unwrap());
    assert_eq!(status.queue.depth, 4, "the delta round's jobs");
}

#[tokio::test]
async fn a_damaged_record_is_listed_in_status_and_hides_nothing_else() {
    let w = World::new();
    let id = w.graph.invite_guest("a@fabrikam.com");
    w.converge(&id).await;
    w.store
        .put(
            shadowsync_state::records::GUESTS,
            "4f8a2c1e-9b3d-4e5f-8a7b-6c5d4e3f2a1b",
            b"{not json".to_vec(),
            None,
        )
        .await
        .unwrap();
    let status = admin::status(w.store.as_ref(), w.queue.as_ref())
        .await
        .expect("status despite the damaged record");
    assert_eq!(
        status.accounts,
        BTreeMap::from([("enabled".to_string(), 1), ("unreadable".to_string(), 1)])
    );
    assert!(
        status.conflicts[0].1.contains("cannot be read"),
        "{:?}",
        status.conflicts
    );
}

#[test]
fn a_clock_offset_is_reported_from_a_minute_on() {
    use shadowsync_app::admin::clock_offset;
    let graph = chrono::Utc::now();
    assert_eq!(
        clock_offset(graph, graph + chrono::Duration::seconds(59)),
        None
    );
    assert_eq!(
        clock_offset(graph, graph + chrono::Duration::days(365)),
        Some(-365 * 24 * 3600),
        "the host a year ahead"
    );
    assert_eq!(
        clock_offset(graph + chrono::Duration::minutes(2), graph),
        Some(120)
    );
}
