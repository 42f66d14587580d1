//! The reconciler against the Graph simulator and the real Samba DC, with every notification
//! lost: whatever reaches AD got there through run_delta or sweep, the queue and the real
//! provisioner.

use chrono::{Duration as Days, Utc};
use serde_json::json;
use shadowsync_core::account::uac;
use shadowsync_core::ManualClock;
use shadowsync_e2e::rig::{random_object_id, uac_of, Rig, RigOptions};
use shadowsync_e2e::{text, unique};
use std::sync::Arc;

#[tokio::test]
async fn delta_catches_every_change_that_notifications_missed() {
    let mut rig = Rig::start().await.unwrap();
    let renamed = rig.invite("ren", "Rita Old").await.unwrap();
    let soft_deleted = rig.invite("sof", "Sam Soft").await.unwrap();
    let blocked = rig.invite("blk", "Bea Blocked").await.unwrap();
    let promoted = rig.invite("pro", "Pia Promoted").await.unwrap();
    let member = rig
        .graph
        .create_member(&format!("emp{}", unique()), "Employee")
        .await
        .unwrap();
    let member = member["id"].as_str().unwrap().to_string();

    // First run: a full round; one job per guest, none for the member.
    let first = rig.reconciler.run_delta().await.unwrap();
    assert!(first.full, "{first:?}");
    assert!(first.reason_for_full.is_some());
    assert_eq!(first.jobs_enqueued, 4, "{first:?}");
    assert_eq!(rig.drain().await.unwrap(), 4);
    for id in [&renamed, &soft_deleted, &blocked, &promoted] {
        rig.assert_enabled(id).await.unwrap();
    }
    assert!(rig.account(&member).await.unwrap().is_none());

    // Changes nobody is told about.
    rig.graph
        .patch_user(
            &renamed,
            json!({"displayName": "Rita New", "surname": "New"}),
        )
        .await
        .unwrap();
    rig.graph.delete_user(&soft_deleted).await.unwrap();
    rig.graph
        .patch_user(&blocked, json!({"accountEnabled": false}))
        .await
        .unwrap();
    rig.graph
        .patch_user(&promoted, json!({"userType": "Member"}))
        .await
        .unwrap();
    let newcomer = rig.invite("new", "Nina Newcomer").await.unwrap();
    rig.graph
        .patch_user(&member, json!({"displayName": "Employee Renamed"}))
        .await
        .unwrap();

    let second = rig.reconciler.run_delta().await.unwrap();
    assert!(!second.full, "{second:?}");
    assert_eq!(second.reason_for_full, None);
    assert_eq!(second.removed, 1, "{second:?}");
    // The changed member never had an account (no guest record): no job for them.
    assert_eq!(second.users_seen, 6, "{second:?}");
    assert_eq!(second.jobs_enqueued, 5, "{second:?}");
    rig.drain().await.unwrap();

    let a = rig.assert_enabled(&renamed).await.unwrap();
    assert_eq!(text(&a.entry, "displayName").as_deref(), Some("Rita New"));
    assert_eq!(text(&a.entry, "sn").as_deref(), Some("New"));
    rig.assert_disabled(&soft_deleted).await.unwrap();
    rig.assert_disabled(&blocked).await.unwrap();
    rig.assert_disabled(&promoted).await.unwrap();
    rig.assert_enabled(&newcomer).await.unwrap();
    assert!(rig.account(&member).await.unwrap().is_none());

    // Nothing changed since: nothing to do.
    let third = rig.reconciler.run_delta().await.unwrap();
    assert!(!third.full);
    assert_eq!((third.users_seen, third.jobs_enqueued), (0, 0), "{third:?}");
    assert_eq!(rig.drain().await.unwrap(), 0);
    rig.cleanup().await.unwrap();
}

#[tokio::test]
async fn an_expired_delta_token_starts_a_full_sync() {
    let mut rig = Rig::start().await.unwrap();
    let old = rig.invite("old", "Olga Old").await.unwrap();
    assert!(rig.reconciler.run_delta().await.unwrap().full);
    rig.drain().await.unwrap();

    // Eight days without a round: the delta token (7 days) is gone.
    rig.graph.advance_time(8.0 * 86400.0).await.unwrap();
    rig.graph
        .patch_user(&old, json!({"displayName": "Olga Renamed"}))
        .await
        .unwrap();
    let late = rig.invite("late", "Lars Late").await.unwrap();

    let report = rig.reconciler.run_delta().await.unwrap();
    assert!(report.full, "{report:?}");
    let reason = report.reason_for_full.clone().unwrap();
    assert!(reason.contains("expired"), "{reason}");
    assert_eq!(report.jobs_enqueued, 2, "{report:?}");
    rig.drain().await.unwrap();
    let a = rig.assert_enabled(&old).await.unwrap();
    assert_eq!(
        text(&a.entry, "displayName").as_deref(),
        Some("Olga Renamed")
    );
    rig.assert_enabled(&late).await.unwrap();

    // The full round left a fresh checkpoint behind.
    let next = rig.reconciler.run_delta().await.unwrap();
    assert!(!next.full, "{next:?}");
    assert_eq!(next.jobs_enqueued, 0);
    rig.cleanup().await.unwrap();
}

#[tokio::test]
async fn a_permanent_deletion_seen_by_delta_deletes_the_account() {
    let mut rig = Rig::start().await.unwrap();
    let purged = rig.invite("pur", "Paul Purged").await.unwrap();
    let soft = rig.invite("sft", "Sue Soft").await.unwrap();
    rig.reconciler.run_delta().await.unwrap();
    rig.drain().await.unwrap();
    rig.assert_enabled(&purged).await.unwrap();

    rig.graph.delete_user(&purged).await.unwrap();
    rig.graph.purge_user(&purged).await.unwrap();
    rig.graph.delete_user(&soft).await.unwrap();

    let report = rig.reconciler.run_delta().await.unwrap();
    assert_eq!((report.removed, report.jobs_enqueued), (2, 2), "{report:?}");
    rig.drain().await.unwrap();
    assert!(rig.account(&purged).await.unwrap().is_none(), "deleted");
    // Soft-deleted is restorable: disabled, not deleted.
    rig.assert_disabled(&soft).await.unwrap();
    rig.cleanup().await.unwrap();
}

#[tokio::test]
async fn sweep_disables_orphans_and_leaves_unanchored_objects_alone() {
    let mut rig = Rig::start().await.unwrap();
    let guest = rig.invite("kep", "Kim Kept").await.unwrap();
    rig.reconciler.run_delta().await.unwrap();
    rig.drain().await.unwrap();

    // An account of ours whose guest Graph has never heard of (say, purged while the
    // reconciler was down for weeks); enabled (no password needed with PASSWD_NOTREQD).
    let orphan_id = random_object_id();
    let orphan_dn = format!("CN=orphan-{},{}", unique(), rig.policy.guests_ou);
    let anchor = format!("User_{orphan_id}");
    let sam = format!("orph{}", &unique()[..10]);
    rig.probe
        .add(
            &orphan_dn,
            vec![
                ("objectClass", "user"),
                ("sAMAccountName", &sam),
                ("adminDescription", &anchor),
                ("userAccountControl", "544"),
            ],
        )
        .await
        .unwrap();
    assert!(rig.account(&orphan_id).await.unwrap().unwrap().enabled);

    // Someone else's object in our OU, without the anchor.
    let foreign_dn = format!("CN=employee-{},{}", unique(), rig.policy.guests_ou);
    let foreign_sam = format!("emp{}", &unique()[..10]);
    rig.probe
        .add(
            &foreign_dn,
            vec![
                ("objectClass", "user"),
                ("sAMAccountName", &foreign_sam),
                ("description", "a real employee"),
            ],
        )
        .await
        .unwrap();
    let filter = format!("(sAMAccountName={foreign_sam})");
    let before = rig.probe.search(&filter).await.unwrap();
    assert_eq!(before.len(), 1);

    let report = rig.reconciler.sweep().await.unwrap();
    assert_eq!(report.accounts, 3, "{report:?}");
    assert_eq!(report.jobs_enqueued, 2, "{report:?}");
    assert_eq!(report.unmanaged, vec![foreign_dn.clone()]);
    assert_eq!(
        report.guests_checked, 1,
        "every guest is looked at, scope group or not"
    );
    rig.drain().await.unwrap();

    let orphan = rig.assert_disabled(&orphan_id).await.unwrap();
    assert_ne!(uac_of(&orphan.entry) & uac::ACCOUNTDISABLE, 0);
    rig.assert_enabled(&guest).await.unwrap();
    let after = rig.probe.search(&filter).await.unwrap();
    assert_eq!(before, after, "the unanchored object was modified");
    rig.cleanup().await.unwrap();
}

#[tokio::test]
async fn sweep_deletes_disabled_accounts_once_retention_has_passed() {
    let clock = Arc::new(ManualClock::new(Utc::now()));
    let mut rig = Rig::with(RigOptions {
        clock: clock.clone(),
        ..RigOptions::default()
    })
    .await
    .unwrap();
    assert_eq!(
        rig.policy.retention,
        Some(std::time::Duration::from_secs(30 * 24 * 3600))
    );
    let gone = rig.invite("ret", "Rhea Retained").await.unwrap();
    rig.reconciler.run_delta().await.unwrap();
    rig.drain().await.unwrap();
    // Disabled in Entra rather than deleted: Graph purges a deleted user after 30 days, which
    // is the retention too, and this test is about the retention.
    rig.graph
        .patch_user(&gone, serde_json::json!({"accountEnabled": false}))
        .await
        .unwrap();
    // A later round (the queue folds a job equal to one it just had, time included).
    clock.advance(Days::minutes(1));
    rig.reconciler.run_delta().await.unwrap();
    rig.drain().await.unwrap();
    rig.assert_disabled(&gone).await.unwrap();

    // Retention is judged by Graph's clock (the simulator's): a local clock moving alone
    // deletes nothing.
    clock.advance(Days::days(40));
    assert_eq!(rig.reconciler.sweep().await.unwrap().jobs_enqueued, 1);
    rig.drain().await.unwrap();
    rig.assert_disabled(&gone).await.unwrap();

    rig.graph.advance_time(29.0 * 86400.0).await.unwrap();
    clock.advance(Days::minutes(1)); // a job unlike the last one, for the queue
    assert_eq!(rig.reconciler.sweep().await.unwrap().jobs_enqueued, 1);
    rig.drain().await.unwrap();
    rig.assert_disabled(&gone).await.unwrap();

    rig.graph.advance_time(2.0 * 86400.0).await.unwrap();
    clock.advance(Days::minutes(1));
    assert_eq!(rig.reconciler.sweep().await.unwrap().jobs_enqueued, 1);
    rig.drain().await.unwrap();
    assert!(
        rig.account(&gone).await.unwrap().is_none(),
        "deleted after 31 days"
    );
    rig.cleanup().await.unwrap();
}

#[tokio::test]
async fn sweep_provisions_guests_who_joined_the_scope_group_through_a_nested_group() {
    let mut rig = Rig::with(RigOptions {
        scope_group: true,
        ..RigOptions::default()
    })
    .await
    .unwrap();
    let scope = rig.scope_group.clone().unwrap();
    let nested = rig.graph.create_group("Partners").await.unwrap();
    let nested = nested["id"].as_str().unwrap().to_string();
    rig.graph.add_member(&scope, &nested).await.unwrap();

    let guest = rig.invite("grp", "Gil Grouped").await.unwrap();
    let outsider = rig.invite("out", "Otto Outside").await.unwrap();
    rig.reconciler.run_delta().await.unwrap();
    rig.drain().await.unwrap();
    assert!(
        rig.account(&guest).await.unwrap().is_none(),
        "not in scope yet"
    );

    // Group membership changes no user property: delta sees nothing, the sweep does.
    rig.graph.add_member(&nested, &guest).await.unwrap();
    assert_eq!(rig.reconciler.run_delta().await.unwrap().jobs_enqueued, 0);
    let report = rig.reconciler.sweep().await.unwrap();
    assert_eq!(report.guests_checked, 2, "{report:?}");
    assert_eq!(report.jobs_enqueued, 2, "{report:?}");
    rig.drain().await.unwrap();
    rig.assert_enabled(&guest).await.unwrap();
    assert!(rig.account(&outsider).await.unwrap().is_none());

    rig.graph.remove_member(&nested, &guest).await.unwrap();
    let report = rig.reconciler.sweep().await.unwrap();
    // The account's job, and the outsider's (still without an account).
    assert_eq!(report.jobs_enqueued, 2, "{report:?}");
    rig.drain().await.unwrap();
    rig.assert_disabled(&guest).await.unwrap();
    rig.cleanup().await.unwrap();
}
