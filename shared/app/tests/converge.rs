//! Converge, branch by branch, against the fakes.

mod common;

use chrono::Duration;
use common::*;
use shadowsync_app::{AppError, Hint, Outcome};
use shadowsync_core::account::{uac, DESCRIPTION_MARKER};
use shadowsync_core::{AttributeChange, Location, ManagedAttributes, ObjectId, Operation, Policy};
use shadowsync_ports::{DirectoryError, GraphError};
use shadowsync_state::records::GUESTS;
use shadowsync_state::{AccountStatus, GuestRecord, KeyValueStore};
use shadowsync_testkit::{DirOp, GraphOp};

const ALICE_UPN: &str = "alice_fabrikam.com#EXT#@contoso.onmicrosoft.com";

/// The last `n` hex digits of an object id (the cn and sAMAccountName suffixes).
fn tail(id: &ObjectId, n: usize) -> String {
    id.as_str()[36 - n..].to_string()
}

fn alice(w: &World) -> ObjectId {
    let id = w.graph.invite_guest_as("alice@fabrikam.com", "Alice Smith");
    w.graph.update_user(&id, |u| {
        u.given_name = Some("Alice".into());
        u.surname = Some("Smith".into());
    });
    id
}

fn in_guests(id: &ObjectId, display: &str) -> Location {
    Location {
        cn: format!("{display}_{}", tail(id, 12)),
        ou: GUESTS_OU.into(),
    }
}

fn in_disabled(id: &ObjectId, display: &str) -> Location {
    Location {
        ou: DISABLED_OU.into(),
        ..in_guests(id, display)
    }
}

async fn converge_with(w: &World, id: &ObjectId, hint: Hint) -> Result<Outcome, AppError> {
    w.converger().converge(id, hint).await
}

/// The account was disabled and moved, in that order, and is the same object.
async fn assert_disabled(w: &World, id: &ObjectId, out: &Outcome, guid: &Option<String>) {
    let to = in_disabled(id, "Alice Smith");
    assert_eq!(
        out.plan,
        vec![Operation::Disable {
            move_to: Some(to.clone())
        }]
    );
    assert_eq!(out.status, AccountStatus::Disabled);
    assert_eq!(out.dn.as_deref(), Some(to.dn().as_str()));
    let account = w.account_of(id).expect("still there");
    assert_eq!(account.dn, to.dn());
    assert_eq!(account.user_account_control, uac::DISABLED);
    assert_eq!(&account.object_guid, guid, "the same object");
    let writes = w.directory.writes();
    let n = writes.len();
    let from = in_guests(id, "Alice Smith").dn();
    assert_eq!(
        writes[n - 2..],
        [
            format!("modify {from} userAccountControl={}", uac::DISABLED),
            format!("modrdn {from} -> {}", to.dn()),
        ],
        "locked out first, then moved"
    );
    let record = w.record(id).await.unwrap().value;
    assert_eq!(record.status, AccountStatus::Disabled);
    assert_eq!(record.disabled_at, Some(now(w)));
}

#[tokio::test]
async fn creates_the_account_the_mapping_describes() {
    let w = World::new();
    let id = alice(&w);
    let out = w.converge(&id).await;
    let dn = in_guests(&id, "Alice Smith").dn();
    assert!(
        matches!(out.plan.as_slice(), [Operation::Create { .. }]),
        "{:?}",
        out.plan
    );
    assert!(out.applied && out.changed());
    assert_eq!(out.status, AccountStatus::Enabled);
    assert_eq!(out.user_principal_name.as_deref(), Some(ALICE_UPN));
    assert_eq!(out.dn.as_deref(), Some(dn.as_str()));

    let a = w.directory.account(&dn).expect("the account");
    assert_eq!(a.anchor, Some(format!("User_{id}")));
    assert_eq!(a.sam_account_name, "alice_fabrikam.com");
    assert_eq!(a.location.cn, format!("Alice Smith_{}", tail(&id, 12)));
    assert_eq!(
        a.user_account_control, 0x0005_0200,
        "NORMAL_ACCOUNT | SMARTCARD_REQUIRED | DONT_EXPIRE_PASSWORD"
    );
    assert_eq!(
        a.attributes,
        ManagedAttributes {
            user_principal_name: Some(ALICE_UPN.into()),
            display_name: Some("Alice Smith".into()),
            given_name: Some("Alice".into()),
            surname: Some("Smith".into()),
            mail: Some("alice@fabrikam.com".into()),
            description: Some(DESCRIPTION_MARKER.into()),
        }
    );
    assert_eq!(
        w.directory.writes(),
        vec![format!("add {dn}")],
        "one add, final flags in it"
    );

    let record = w.record(&id).await.expect("recorded");
    assert_eq!(record.version, 1);
    let r = record.value;
    assert_eq!(r.status, AccountStatus::Enabled);
    assert_eq!(r.dn.as_deref(), Some(dn.as_str()));
    assert_eq!(r.object_guid, a.object_guid);
    assert_eq!(r.sam_account_name.as_deref(), Some("alice_fabrikam.com"));
    assert_eq!((r.conflict, r.disabled_at), (None, None));
    assert!(r.applied_fingerprint.is_some());
    assert_eq!(r.updated_at, now(&w));
}

#[tokio::test]
async fn a_second_converge_writes_nothing() {
    let w = World::new();
    let id = alice(&w);
    w.converge(&id).await;
    let writes = w.directory.write_count();
    let out = w.converge(&id).await;
    assert!(out.plan.is_empty(), "{:?}", out.plan);
    assert!(!out.changed());
    assert_eq!(out.status, AccountStatus::Enabled);
    assert_eq!(w.directory.write_count(), writes);
    assert_eq!(w.directory.accounts().len(), 1);
}

#[tokio::test]
async fn changed_attributes_are_updated_and_a_new_display_name_renames() {
    let w = World::new();
    let id = alice(&w);
    w.converge(&id).await;
    let before = w.account_of(&id).unwrap();
    w.graph.update_user(&id, |u| {
        u.display_name = Some("Alice B. Smith".into());
        u.mail = None;
        u.other_mails.clear();
    });
    let out = w.converge(&id).await;
    let to = in_guests(&id, "Alice B. Smith");
    assert_eq!(
        out.plan,
        vec![
            Operation::Update {
                changes: vec![
                    AttributeChange {
                        attribute: "displayName".into(),
                        value: Some("Alice B. Smith".into())
                    },
                    AttributeChange {
                        attribute: "mail".into(),
                        value: None
                    },
                ]
            },
            Operation::Move { to: to.clone() },
        ]
    );
    let after = w.account_of(&id).unwrap();
    assert_eq!(after.dn, to.dn());
    assert_eq!(after.object_guid, before.object_guid);
    assert_eq!(
        after.attributes.display_name.as_deref(),
        Some("Alice B. Smith")
    );
    assert_eq!(
        after.attributes.mail, None,
        "an empty value removes the attribute"
    );
    assert_eq!(
        after.sam_account_name, before.sam_account_name,
        "never renamed"
    );
    assert!(w.directory.account(&before.dn).is_none());
    assert_eq!(
        w.record(&id).await.unwrap().value.dn.as_deref(),
        Some(to.dn().as_str())
    );
}

#[tokio::test]
async fn disabled_in_entra_or_no_longer_a_guest_disables_and_moves() {
    type Change = fn(&mut shadowsync_core::GraphUser);
    let cases: [(&str, Change); 2] = [
        ("disabled in Entra", |u| u.account_enabled = Some(false)),
        ("turned Member", |u| u.user_type = Some("Member".into())),
    ];
    for (case, change) in cases {
        let w = World::new();
        let id = alice(&w);
        w.converge(&id).await;
        let guid = w.account_of(&id).unwrap().object_guid;
        w.graph.update_user(&id, change);
        let out = w.converge(&id).await;
        assert_disabled(&w, &id, &out, &guid).await;
        assert!(
            w.converge(&id).await.plan.is_empty(),
            "{case}: then nothing"
        );
    }
}

#[tokio::test]
async fn an_invitation_not_accepted_is_out_of_scope_when_required() {
    let w = Setup::with_policy(Policy {
        require_accepted: true,
        ..policy()
    })
    .build();
    let id = alice(&w);
    let out = w.converge(&id).await;
    assert!(out.plan.is_empty());
    assert_eq!(out.status, AccountStatus::NotProvisioned);
    assert_eq!(w.directory.write_count(), 0, "nothing is created");

    w.graph.accept_invitation(&id);
    let out = w.converge(&id).await;
    assert!(matches!(out.plan.as_slice(), [Operation::Create { .. }]));
    let guid = w.account_of(&id).unwrap().object_guid;

    // An administrator resets the redemption: pending again.
    w.graph.update_user(&id, |u| {
        u.external_user_state = Some("PendingAcceptance".into())
    });
    let out = w.converge(&id).await;
    assert_disabled(&w, &id, &out, &guid).await;
}

#[tokio::test]
async fn a_guest_with_an_ad_account_of_its_own_gets_no_shadow_account() {
    let w = Setup::with_policy(Policy {
        partner_link_attribute: Some("extensionAttribute15".into()),
        ..policy()
    })
    .build();
    // Entra Connect syncs the partner's AD account as a guest (Microsoft's documented way), or
    // shadowsync's partner direction converted it: it has its account already.
    let synced = alice(&w);
    w.graph
        .update_user(&synced, |u| u.on_premises_sync_enabled = Some(true));
    let out = w.converge(&synced).await;
    assert_eq!(out.status, AccountStatus::NotProvisioned);
    assert_eq!(w.directory.write_count(), 0, "nothing is created");

    // An invited guest whose account was made before shadowsync linked it to a partner
    // account: its shadow account is disabled.
    let id = w.graph.invite_guest_as("pat@fabrikam.com", "Alice Smith");
    assert!(matches!(
        w.converge(&id).await.plan.as_slice(),
        [Operation::Create { .. }]
    ));
    let guid = w.account_of(&id).unwrap().object_guid;
    w.graph.update_user(&id, |u| {
        u.on_premises_extension_attributes = Some(std::collections::BTreeMap::from([(
            "extensionAttribute15".to_string(),
            Some("Partner_1f0b5a3e-7c2d-4e8f-9a6b-0c1d2e3f4a5b".to_string()),
        )]))
    });
    let out = w.converge(&id).await;
    assert_disabled(&w, &id, &out, &guid).await;
}

#[tokio::test]
async fn only_members_of_the_scope_group_directly_or_nested_are_in_scope() {
    let w = Setup {
        scope_group: true,
        ..Setup::default()
    }
    .build();
    let group = w.scope_group.clone().unwrap();
    let id = alice(&w);
    let out = w.converge(&id).await;
    assert_eq!(out.status, AccountStatus::NotProvisioned);
    assert_eq!(
        w.graph.calls(GraphOp::IsMemberOf),
        vec![format!("{id} in {group}")]
    );
    assert_eq!(w.directory.write_count(), 0);

    w.graph.add_to_group(&group, &id);
    let out = w.converge(&id).await;
    assert!(matches!(out.plan.as_slice(), [Operation::Create { .. }]));
    let guid = w.account_of(&id).unwrap().object_guid;

    w.graph.remove_from_group(&group, &id);
    let out = w.converge(&id).await;
    assert_disabled(&w, &id, &out, &guid).await;

    // Back in scope through a group inside the scope group.
    let team = w.graph.create_group();
    w.graph.add_to_group(&team, &id);
    w.graph.add_to_group(&group, &team);
    let out = w.converge(&id).await;
    assert_eq!(
        out.plan,
        vec![Operation::Enable {
            move_to: Some(in_guests(&id, "Alice Smith"))
        }]
    );
    assert!(w.account_of(&id).unwrap().is_enabled());

    w.graph.remove_from_group(&group, &team);
    let out = w.converge(&id).await;
    assert_eq!(out.status, AccountStatus::Disabled);
}

#[tokio::test]
async fn soft_delete_disables_and_restore_enables_the_same_object_again() {
    let w = World::new();
    let id = alice(&w);
    w.converge(&id).await;
    let guid = w.account_of(&id).unwrap().object_guid;
    w.graph.soft_delete(&id);
    let out = w.converge(&id).await;
    assert_disabled(&w, &id, &out, &guid).await;

    w.graph.restore(&id);
    let out = w.converge(&id).await;
    let home = in_guests(&id, "Alice Smith");
    assert_eq!(
        out.plan,
        vec![Operation::Enable {
            move_to: Some(home.clone())
        }]
    );
    assert_eq!(out.status, AccountStatus::Enabled);
    let account = w.account_of(&id).unwrap();
    assert_eq!(account.dn, home.dn());
    assert_eq!(account.user_account_control, uac::ENABLED);
    assert_eq!(account.object_guid, guid);
    let writes = w.directory.writes();
    let n = writes.len();
    assert_eq!(
        writes[n - 2..],
        [
            format!(
                "modrdn {} -> {}",
                in_disabled(&id, "Alice Smith").dn(),
                home.dn()
            ),
            format!("modify {} userAccountControl={}", home.dn(), uac::ENABLED),
        ],
        "moved back first, then enabled"
    );
    let record = w.record(&id).await.unwrap().value;
    assert_eq!(
        (record.status, record.disabled_at),
        (AccountStatus::Enabled, None)
    );
}

#[tokio::test]
async fn a_404_alone_only_disables_and_a_confirmed_deletion_then_deletes() {
    let w = World::new();
    let id = alice(&w);
    w.converge(&id).await;
    let guid = w.account_of(&id).unwrap().object_guid;
    w.graph.delete_permanently(&id);

    // The first 404 changes nothing: a replica behind answers 404 too.
    let writes = w.directory.write_count();
    let e = converge_with(&w, &id, Hint::default()).await.unwrap_err();
    assert!(matches!(e, AppError::NotFoundUnconfirmed { .. }), "{e}");
    assert!(e.is_retryable());
    assert_eq!(w.directory.write_count(), writes, "nothing written");
    assert!(w.account_of(&id).unwrap().is_enabled());
    // Still within the confirmation delay: still nothing.
    w.advance(Duration::seconds(10));
    assert!(converge_with(&w, &id, Hint::default()).await.is_err());
    assert!(w.account_of(&id).unwrap().is_enabled());
    // Read again after the delay, still 404 (and not in deleted items): now it counts.
    w.advance(Duration::seconds(25));
    let out = converge_with(&w, &id, Hint::default()).await.unwrap();
    assert_disabled(&w, &id, &out, &guid).await;
    assert_eq!(out.user_principal_name, None);
    assert_eq!(w.record(&id).await.unwrap().value.not_found_since, None);

    let out = converge_with(
        &w,
        &id,
        Hint {
            deleted_in_graph: true,
            ..Hint::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(
        out.plan,
        vec![Operation::Delete {
            reason: "user permanently deleted in Entra ID".into()
        }]
    );
    assert_eq!(out.status, AccountStatus::Deleted);
    assert!(w.account_of(&id).is_none());
    assert_eq!(
        w.directory.writes().last(),
        Some(&format!("delete {}", in_disabled(&id, "Alice Smith").dn()))
    );
    let record = w.record(&id).await.unwrap().value;
    assert_eq!((record.status, record.dn), (AccountStatus::Deleted, None));
}

#[tokio::test]
async fn a_deletion_graph_reported_deletes_an_enabled_account_at_once() {
    let w = World::new();
    let id = alice(&w);
    w.converge(&id).await;
    w.graph.delete_permanently(&id);
    let hint = Hint {
        deleted_in_graph: true,
        ..Hint::default()
    };
    let out = converge_with(&w, &id, hint).await.unwrap();
    assert!(matches!(out.plan.as_slice(), [Operation::Delete { .. }]));
    assert!(w.directory.accounts().is_empty());

    // A forged or stale "deleted" about a user Graph still has changes nothing.
    let bob = w.graph.invite_guest("bob@fabrikam.com");
    w.converge(&bob).await;
    let out = converge_with(&w, &bob, hint).await.unwrap();
    assert!(out.plan.is_empty());
    assert!(w.account_of(&bob).unwrap().is_enabled());
}

#[tokio::test]
async fn retention_deletes_a_disabled_account_only_once_it_has_passed() {
    let w = World::new();
    let id = alice(&w);
    w.converge(&id).await;
    w.graph.soft_delete(&id);
    w.converge(&id).await;
    let disabled_at = now(&w);

    w.advance(Duration::days(30) - Duration::seconds(1));
    let writes = w.directory.write_count();
    let out = w.converge(&id).await;
    assert!(out.plan.is_empty(), "{:?}", out.plan);
    assert_eq!(out.status, AccountStatus::Disabled);
    assert_eq!(w.directory.write_count(), writes);
    assert_eq!(
        w.record(&id).await.unwrap().value.disabled_at,
        Some(disabled_at),
        "counted from when it was disabled"
    );

    w.advance(Duration::seconds(1));
    let out = w.converge(&id).await;
    assert_eq!(
        out.plan,
        vec![Operation::Delete {
            reason: "disabled for more than 30 days".into()
        }]
    );
    assert_eq!(out.status, AccountStatus::Deleted);
    assert!(w.account_of(&id).is_none());
}

#[tokio::test]
async fn without_a_record_retention_counts_from_now_never_earlier() {
    let w = World::new();
    let id = alice(&w);
    w.converge(&id).await;
    w.graph.soft_delete(&id);
    w.converge(&id).await;
    let record = w.record(&id).await.unwrap();
    w.store
        .delete(GUESTS, &id, Some(record.version))
        .await
        .unwrap();

    w.advance(Duration::days(31));
    let out = w.converge(&id).await;
    assert!(out.plan.is_empty(), "state lost: not deleted yet");
    assert_eq!(
        w.record(&id).await.unwrap().value.disabled_at,
        Some(now(&w))
    );
    w.advance(Duration::days(30));
    let out = w.converge(&id).await;
    assert!(matches!(out.plan.as_slice(), [Operation::Delete { .. }]));
}

#[tokio::test]
async fn retention_is_judged_by_graphs_clock_so_a_local_clock_jump_deletes_nothing() {
    let w = World::new();
    let id = alice(&w);
    w.converge(&id).await;
    w.graph.soft_delete(&id);
    w.converge(&id).await;

    w.clock.advance(Duration::days(365));
    let out = w.converge(&id).await;
    assert!(out.plan.is_empty(), "{:?}", out.plan);
    assert!(w.account_of(&id).is_some(), "still there");

    w.graph.clock().advance(Duration::days(30));
    let out = w.converge(&id).await;
    assert!(matches!(out.plan.as_slice(), [Operation::Delete { .. }]));
}

#[tokio::test]
async fn an_employee_holding_the_upn_is_a_conflict_and_nothing_is_written() {
    let w = World::new();
    let id = alice(&w);
    // AD compares userPrincipalName case-insensitively.
    let employee = w
        .directory
        .add_employee(
            STAFF_OU,
            "Alice Employee",
            "alice.e",
            &ALICE_UPN.to_uppercase(),
        )
        .unwrap();
    let before = w.directory.objects();
    let out = w.converge(&id).await;
    assert_eq!(out.status, AccountStatus::Conflict);
    let reason = out.conflict().expect("a conflict").to_string();
    assert!(
        reason.contains(&employee) && reason.contains("userPrincipalName"),
        "{reason}"
    );
    assert!(!out.changed());
    assert_eq!(w.directory.write_count(), 0);
    assert_eq!(w.directory.objects(), before, "the employee is untouched");
    let record = w.record(&id).await.unwrap().value;
    assert_eq!(record.status, AccountStatus::Conflict);
    assert_eq!(record.conflict, Some(reason));
}

#[tokio::test]
async fn an_anchor_outside_the_managed_ous_is_a_conflict() {
    let w = World::new();
    let id = alice(&w);
    let stray = w
        .directory
        .add_anchored_user(STAFF_OU, "Alice Copy", "alice.copy", &w.anchor(&id))
        .unwrap();
    let before = w.directory.objects();
    let out = w.converge(&id).await;
    assert_eq!(out.status, AccountStatus::Conflict);
    let reason = out.conflict().unwrap();
    assert!(
        reason.contains(&stray) && reason.contains("outside the managed OUs"),
        "{reason}"
    );
    assert_eq!(w.directory.write_count(), 0);
    assert_eq!(w.directory.objects(), before);
}

#[tokio::test]
async fn a_foreign_object_carrying_the_anchor_never_keeps_the_guests_account_enabled() {
    let w = World::new();
    let id = alice(&w);
    w.converge(&id).await;
    let guid = w.account_of(&id).unwrap().object_guid;
    let in_ou = |ou: &str| {
        w.directory
            .accounts_with_anchor(&w.anchor(&id))
            .into_iter()
            .find(|a| a.dn.ends_with(ou))
    };
    let planted = w
        .directory
        .add_anchored_user(STAFF_OU, "Alice Copy", "alice.copy", &w.anchor(&id))
        .unwrap();
    // While the guest is active, which object is theirs is a question for a person.
    w.graph
        .update_user(&id, |u| u.display_name = Some("Alice B. Smith".into()));
    assert_eq!(w.converge(&id).await.status, AccountStatus::Conflict);

    // Gone from Graph: the account of ours is disabled all the same; the other is left alone.
    let planted_before = in_ou(STAFF_OU).unwrap();
    assert_eq!(planted_before.dn, planted);
    w.graph.soft_delete(&id);
    let out = w.converge(&id).await;
    assert_eq!(out.status, AccountStatus::Disabled, "{:?}", out.plan);
    let ours = in_ou(DISABLED_OU).expect("ours, moved");
    assert_eq!(ours.object_guid, guid);
    assert!(!ours.is_enabled());
    assert_eq!(in_ou(STAFF_OU).unwrap(), planted_before, "untouched");
}

#[tokio::test]
async fn two_objects_carrying_the_anchor_are_a_conflict() {
    let w = World::new();
    let id = alice(&w);
    w.converge(&id).await;
    w.directory
        .add_anchored_user(DISABLED_OU, "Alice Twin", "alice.twin", &w.anchor(&id))
        .unwrap();
    w.graph
        .update_user(&id, |u| u.display_name = Some("Alice B. Smith".into()));
    let (writes, before) = (w.directory.write_count(), w.directory.objects());
    let out = w.converge(&id).await;
    assert_eq!(out.status, AccountStatus::Conflict);
    assert!(
        out.conflict()
            .unwrap()
            .starts_with("2 objects carry this guest's anchor"),
        "{:?}",
        out.conflict()
    );
    assert_eq!(w.directory.write_count(), writes);
    assert_eq!(w.directory.objects(), before);
}

#[tokio::test]
async fn a_taken_name_gives_the_next_candidate_and_all_taken_is_a_conflict() {
    let w = World::new();
    let id = alice(&w);
    // AD compares sAMAccountName case-insensitively.
    w.directory
        .add_employee(
            STAFF_OU,
            "Other Alice",
            "ALICE_FABRIKAM.COM",
            "other@corp.example.test",
        )
        .unwrap();
    let out = w.converge(&id).await;
    let second = format!("alice_fabrika-{}", tail(&id, 6));
    assert!(
        matches!(out.plan.as_slice(), [Operation::Create { account }] if account.sam_account_name == second),
        "{:?}",
        out.plan
    );
    assert_eq!(w.account_of(&id).unwrap().sam_account_name, second);

    let w = World::new();
    let id = alice(&w);
    let candidates = [
        "alice_fabrikam.com".to_string(),
        format!("alice_fabrika-{}", tail(&id, 6)),
        format!("alice_f-{}", tail(&id, 12)),
    ];
    for (i, sam) in candidates.iter().enumerate() {
        w.directory
            .add_employee(
                STAFF_OU,
                &format!("Other {i}"),
                sam,
                &format!("o{i}@corp.example.test"),
            )
            .unwrap();
    }
    let out = w.converge(&id).await;
    assert_eq!(out.status, AccountStatus::Conflict);
    assert_eq!(
        out.conflict(),
        Some(
            format!(
                "every sAMAccountName candidate is taken: {}",
                candidates.join(", ")
            )
            .as_str()
        )
    );
    assert_eq!(w.directory.write_count(), 0);
}

#[tokio::test]
async fn a_name_taken_between_the_check_and_the_add_converges_again() {
    let w = World::new();
    let id = alice(&w);
    w.directory.before_next(DirOp::Add, |d| {
        d.add_employee(
            STAFF_OU,
            "Quick",
            "alice_fabrikam.com",
            "quick@corp.example.test",
        )
        .expect("the employee");
    });
    let out = w.converge(&id).await;
    assert_eq!(out.status, AccountStatus::Enabled);
    let account = w.account_of(&id).expect("created on the second try");
    assert_eq!(
        account.sam_account_name,
        format!("alice_fabrika-{}", tail(&id, 6))
    );
    assert_eq!(
        w.directory.write_count(),
        1,
        "the refused add wrote nothing"
    );
}

#[tokio::test]
async fn a_new_guest_costs_four_ldap_operations_and_a_converged_one_a_search() {
    let w = World::new();
    let id = alice(&w);
    let out = w.converge(&id).await;
    assert_eq!(out.status, AccountStatus::Enabled);
    // The anchor and UPN searches and the base read of the new account; no search for a
    // holder of the name: AD refuses that itself (the tests above).
    assert_eq!(w.directory.read_count(), 3);
    assert_eq!(w.directory.write_count(), 1);
    w.converge(&id).await;
    assert_eq!(w.directory.read_count(), 4, "only the anchor search");
    // A new UPN is looked for before it is written.
    w.graph.update_user(&id, |u| {
        u.user_principal_name = Some("alice.new_fabrikam.com#EXT#@contoso.onmicrosoft.com".into())
    });
    w.converge(&id).await;
    assert_eq!(w.directory.read_count(), 7, "anchor, UPN, the read back");
    assert_eq!(w.directory.write_count(), 2);
}

#[tokio::test]
async fn throttling_is_retryable_and_writes_nothing() {
    let w = World::new();
    let id = alice(&w);
    w.graph.fail(GraphOp::User, 1, || GraphError::Throttled {
        retry_after: Some(std::time::Duration::from_secs(7)),
    });
    let e = converge_with(&w, &id, Hint::default()).await.unwrap_err();
    assert!(e.is_retryable(), "{e}");
    assert_eq!(e.kind(), "Graph");
    assert!(
        matches!(e.graph_error(), Some(GraphError::Throttled { retry_after: Some(d) }) if d.as_secs() == 7)
    );
    assert_eq!(
        (w.directory.read_count(), w.directory.write_count()),
        (0, 0),
        "AD not even read"
    );
    assert!(w.record(&id).await.is_none());
    assert!(w.converge(&id).await.changed(), "fine once Graph is");
}

#[tokio::test]
async fn a_graph_403_is_not_retryable_and_writes_nothing() {
    let w = World::new();
    let id = alice(&w);
    w.graph.fail(GraphOp::User, 1, || {
        GraphError::client(
            403,
            "Authorization_RequestDenied",
            "Insufficient privileges to complete the operation.",
        )
    });
    let e = converge_with(&w, &id, Hint::default()).await.unwrap_err();
    assert!(!e.is_retryable());
    assert!(e.to_string().contains("Authorization_RequestDenied"), "{e}");
    assert_eq!(w.directory.write_count(), 0);
    assert!(w.record(&id).await.is_none());
}

#[tokio::test]
async fn directory_failures_say_whether_to_retry() {
    let w = World::new();
    let id = alice(&w);
    w.directory.fail(DirOp::Read, 1, || {
        DirectoryError::server_down("connection reset")
    });
    let e = converge_with(&w, &id, Hint::default()).await.unwrap_err();
    assert!(e.is_retryable() && e.kind() == "Directory", "{e}");

    w.directory.fail(DirOp::Add, 1, || DirectoryError::Busy {
        rc: 51,
        text: "busy".into(),
    });
    assert!(converge_with(&w, &id, Hint::default())
        .await
        .unwrap_err()
        .is_retryable());

    w.directory.fail(DirOp::Write, 1, || {
        DirectoryError::InsufficientAccess("00002098: SecErr: DSID-03150F94, problem 4003".into())
    });
    assert!(!converge_with(&w, &id, Hint::default())
        .await
        .unwrap_err()
        .is_retryable());
    assert_eq!(w.directory.write_count(), 0);
    assert!(w.record(&id).await.is_none());
    assert!(w.converge(&id).await.changed());
}

#[tokio::test]
async fn a_disable_that_failed_half_way_is_finished_by_the_next_converge() {
    let w = World::new();
    let id = alice(&w);
    w.converge(&id).await;
    w.graph.soft_delete(&id);
    w.directory
        .fail(DirOp::ModifyDn, 1, || DirectoryError::Timeout);
    let e = converge_with(&w, &id, Hint::default()).await.unwrap_err();
    assert!(e.is_retryable());
    let half = w.account_of(&id).unwrap();
    assert!(!half.is_enabled(), "locked out already");
    assert_eq!(half.location.ou, GUESTS_OU);

    let out = w.converge(&id).await;
    assert_eq!(
        out.plan,
        vec![Operation::Move {
            to: in_disabled(&id, "Alice Smith")
        }]
    );
    assert_eq!(w.account_of(&id).unwrap().location.ou, DISABLED_OU);
}

#[tokio::test]
async fn a_lost_compare_and_set_on_the_record_still_saves_ours() {
    let w = World::new();
    let id = alice(&w);
    let theirs = GuestRecord {
        object_id: id.clone(),
        dn: None,
        object_guid: None,
        sam_account_name: None,
        status: AccountStatus::Conflict,
        disabled_at: None,
        applied_fingerprint: None,
        conflict: Some("written by another worker".into()),
        not_found_since: None,
        updated_at: now(&w),
    };
    w.store
        .race_next_put(GUESTS, &id, serde_json::to_vec(&theirs).unwrap());
    let out = w.converge(&id).await;
    let record = w.record(&id).await.unwrap();
    assert_eq!(record.version, 2, "theirs was written first, ours over it");
    assert_eq!(record.value.status, AccountStatus::Enabled);
    assert_eq!(record.value.conflict, None);
    assert_eq!(record.value.dn, out.dn);
}

#[tokio::test]
async fn a_dry_run_writes_nothing() {
    let w = World::new();
    let id = alice(&w);
    let out = w.converger().dry_run(&id, Hint::default()).await.unwrap();
    assert!(matches!(out.plan.as_slice(), [Operation::Create { .. }]));
    assert!(!out.applied && !out.changed());
    assert_eq!(out.status, AccountStatus::Enabled);
    assert_eq!(w.directory.write_count(), 0);
    assert!(w.record(&id).await.is_none());
    assert!(w.directory.accounts().is_empty());
}

#[tokio::test]
async fn an_object_we_do_not_own_at_the_accounts_dn_is_a_recorded_conflict() {
    let w = World::new();
    let id = alice(&w);
    let planned = w.converger().dry_run(&id, Hint::default()).await.unwrap();
    let [Operation::Create { account }] = planned.plan.as_slice() else {
        panic!("{:?}", planned.plan)
    };
    // Someone else's object, unanchored, exactly where the account has to go.
    w.directory
        .add_object(shadowsync_testkit::NewObject::user(
            GUESTS_OU,
            &account.location.cn,
            "squatter",
            None,
        ))
        .unwrap();
    let out = w.converge(&id).await;
    assert_eq!(out.status, AccountStatus::Conflict);
    assert!(
        out.conflict().is_some_and(|r| r.contains("already exists")),
        "{:?}",
        out.plan
    );
    let record = w.record(&id).await.expect("the conflict is recorded");
    assert_eq!(record.value.status, AccountStatus::Conflict);
    assert!(w.account_of(&id).is_none());
    assert_eq!(w.directory.write_count(), 0, "nothing was written");
}

#[tokio::test]
async fn an_employee_leaves_no_record_behind() {
    let w = World::new();
    let employee = w
        .graph
        .add_member("grace@corp.example.test", "Grace Employee");
    let out = w.converge(&employee).await;
    assert_eq!(out.status, AccountStatus::NotProvisioned);
    w.graph.soft_delete(&employee);
    w.converge(&employee).await;
    w.graph.delete_permanently(&employee);
    converge_with(
        &w,
        &employee,
        Hint {
            deleted_in_graph: true,
            ..Hint::default()
        },
    )
    .await
    .unwrap();
    assert!(
        w.record(&employee).await.is_none(),
        "no record: the next change to this employee must not look like a former guest's"
    );
    assert_eq!(w.directory.write_count(), 0);
}

#[tokio::test]
async fn a_404_that_goes_away_never_disables() {
    let w = World::new();
    let id = alice(&w);
    w.converge(&id).await;
    // A replica behind: 404 for a moment.
    w.graph.set_lagging(&id, true);
    let e = converge_with(&w, &id, Hint::default()).await.unwrap_err();
    assert!(matches!(e, AppError::NotFoundUnconfirmed { .. }), "{e}");
    assert!(w.record(&id).await.unwrap().value.not_found_since.is_some());
    w.advance(Duration::seconds(40));
    w.graph.set_lagging(&id, false);
    let out = converge_with(&w, &id, Hint::default()).await.unwrap();
    assert!(out.plan.is_empty(), "{:?}", out.plan);
    assert!(w.account_of(&id).unwrap().is_enabled());
    assert_eq!(
        w.record(&id).await.unwrap().value.not_found_since,
        None,
        "forgotten once Graph answers"
    );
}

#[tokio::test]
async fn a_user_graph_just_reported_gets_time_to_become_visible() {
    let w = World::new();
    let id = alice(&w);
    w.graph.set_lagging(&id, true);
    let reported = Hint {
        reported_at: Some(now(&w)),
        ..Hint::default()
    };
    let e = converge_with(&w, &id, reported).await.unwrap_err();
    assert!(matches!(e, AppError::NotVisibleYet { .. }), "{e}");
    assert!(e.is_retryable(), "the job is read again later");
    assert!(w.record(&id).await.is_none(), "nothing remembered");
    w.advance(Duration::seconds(4));
    w.graph.set_lagging(&id, false);
    let out = converge_with(&w, &id, reported).await.unwrap();
    assert_eq!(out.status, AccountStatus::Enabled, "created once visible");

    // A change to a guest with an account: the confirmation clock starts, and the job reads
    // again soon (the backoff) while the report is fresh.
    w.graph.set_lagging(&id, true);
    let e = converge_with(
        &w,
        &id,
        Hint {
            reported_at: Some(now(&w)),
            ..Hint::default()
        },
    )
    .await
    .unwrap_err();
    assert!(matches!(e, AppError::NotFoundUnconfirmed { .. }), "{e}");
    assert_eq!(
        e.retry_in(),
        None,
        "the backoff, not the confirmation delay"
    );
    assert!(w.record(&id).await.unwrap().value.not_found_since.is_some());
    w.graph.set_lagging(&id, false);
    let out = converge_with(&w, &id, reported).await.unwrap();
    assert!(out.plan.is_empty() && w.account_of(&id).unwrap().is_enabled());

    // Past the window a 404 counts: nothing to create, no record, no error.
    let ghost = ObjectId::from_label("ghost");
    let late = Hint {
        reported_at: Some(now(&w) - Duration::seconds(61)),
        ..Hint::default()
    };
    let out = converge_with(&w, &ghost, late).await.unwrap();
    assert_eq!(out.status, AccountStatus::NotProvisioned);
    assert!(w.record(&ghost).await.is_none());
}

#[tokio::test]
async fn an_employee_costs_no_search_of_ad_and_a_guest_turned_member_is_still_disabled() {
    let w = World::new();
    let reported = Hint {
        deleted_in_graph: false,
        reported_at: Some(now(&w)),
    };
    let employee = w.graph.add_member("emp@contoso.com", "Emp Loyee");
    // Every read of AD would fail: none is made for an employee Graph reports without a record.
    w.directory.fail(DirOp::Read, 1, || {
        DirectoryError::server_down("no read expected")
    });
    let out = w.converger().converge(&employee, reported).await.unwrap();
    assert_eq!(out.status, AccountStatus::NotProvisioned);
    assert!(out.plan.is_empty());
    assert!(
        w.record(&employee).await.is_none(),
        "no record for an employee"
    );
    // The fault is still there: the next read takes it.
    let guest = w.graph.invite_guest("pat@fabrikam.com");
    assert!(w
        .converger()
        .converge(&guest, Hint::default())
        .await
        .is_err());
    assert_eq!(w.converge(&guest).await.status, AccountStatus::Enabled);
    // A guest who becomes a member has a record: looked up, and disabled.
    w.graph
        .update_user(&guest, |u| u.user_type = Some("Member".into()));
    let out = w.converger().converge(&guest, reported).await.unwrap();
    assert_eq!(out.status, AccountStatus::Disabled);
    // A member's account whose record was lost: the sweep's job (no report from Graph) looks.
    let other = w.graph.invite_guest("sam@fabrikam.com");
    w.converge(&other).await;
    w.graph
        .update_user(&other, |u| u.user_type = Some("Member".into()));
    let v = w.record(&other).await.unwrap().version;
    w.store
        .delete(GUESTS, other.as_str(), Some(v))
        .await
        .unwrap();
    let skipped = w.converger().converge(&other, reported).await.unwrap();
    assert!(skipped.plan.is_empty(), "reported by Graph: no search");
    assert_eq!(w.converge(&other).await.status, AccountStatus::Disabled);
}
