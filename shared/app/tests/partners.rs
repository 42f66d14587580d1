//! The partner direction against the fakes: one partner account's guest through its lifecycle,
//! in both modes, with the safety rails, a lost state store, and the AD watcher.

mod common;

use chrono::Duration;
use common::*;
use shadowsync_app::admin::{self, HeldSelection};
use shadowsync_app::{JobHandler, PartnerOutcome, SafetyLimits};
use shadowsync_core::partner::{Mode, ObjectGuid, ObservedGuest, PartnerAttribute};
use shadowsync_core::ObjectId;
use shadowsync_ports::{Graph, GraphError, GuestGraph, Invitation};
use shadowsync_queue::{Job, JobSource};
use shadowsync_state::records::PARTNERS;
use shadowsync_state::{KeyValueStore, PartnerRecord, PartnerStatus};
use shadowsync_testkit::GuestOp;

const ELSEWHERE: &str = "OU=Former Partners,DC=corp,DC=example,DC=test";

fn world(mode: Mode) -> World {
    let w = Setup {
        partners: Some(partner_settings(mode)),
        ..Setup::default()
    }
    .build();
    w.directory.add_ou(ELSEWHERE).unwrap();
    w
}

fn limited(mode: Mode, disables: u32, deletes: u32) -> World {
    let w = Setup {
        partners: Some(partner_settings(mode)),
        safety: SafetyLimits {
            max_disables_per_hour: disables,
            max_deletes_per_hour: deletes,
        },
        ..Setup::default()
    }
    .build();
    w.directory.add_ou(ELSEWHERE).unwrap();
    w
}

/// A partner account `name` in the partners OU with the partner's own address.
fn partner(w: &World, name: &str) -> ObjectGuid {
    w.directory
        .add_partner(
            PARTNERS_OU,
            name,
            name,
            &[
                ("mail", &format!("{name}@fabrikam.com")),
                ("displayName", &format!("{name} (Fabrikam)")),
                ("company", "Fabrikam"),
            ],
        )
        .unwrap()
}

async fn converge(w: &World, guid: &ObjectGuid) -> PartnerOutcome {
    w.app
        .partners()
        .unwrap()
        .converge(guid)
        .await
        .expect("converge")
}

fn guest(w: &World, id: &ObjectId) -> ObservedGuest {
    w.guests.user(id, LINK_ATTRIBUTE).expect("the guest")
}

fn property(g: &ObservedGuest, a: PartnerAttribute) -> Option<String> {
    g.properties
        .iter()
        .find(|(b, _)| *b == a)
        .and_then(|(_, v)| v.clone())
}

/// The state store forgets the account.
async fn lose_record(w: &World, guid: &ObjectGuid) {
    let key = guid.to_string();
    let version = w.store.get(PARTNERS, &key).await.unwrap().unwrap().version;
    w.store.delete(PARTNERS, &key, Some(version)).await.unwrap();
}

async fn record(w: &World, guid: &ObjectGuid) -> PartnerRecord {
    PartnerRecord::load(w.store.as_ref(), guid)
        .await
        .unwrap()
        .expect("a record")
        .value
}

#[tokio::test]
async fn a_partner_account_becomes_an_invited_guest_carrying_its_link() {
    let w = world(Mode::Invite);
    let pat = partner(&w, "pat");
    let out = converge(&w, &pat).await;
    assert_eq!(out.status, PartnerStatus::Active, "{out:?}");
    assert_eq!(out.plan, ["invite pat@fabrikam.com"]);
    let id = out.guest_id.clone().unwrap();
    let g = guest(&w, &id);
    assert_eq!(g.user_type, "Guest");
    assert_eq!(g.link.as_deref(), Some(pat.link().as_str()));
    assert_eq!(
        property(&g, PartnerAttribute::DisplayName).as_deref(),
        Some("pat (Fabrikam)")
    );
    assert_eq!(
        property(&g, PartnerAttribute::CompanyName).as_deref(),
        Some("Fabrikam")
    );
    let r = record(&w, &pat).await;
    assert_eq!(r.guest_id.as_ref(), Some(&id));
    assert_eq!(r.address.as_deref(), Some("pat@fabrikam.com"));

    // Idempotent: nothing more to do, and no second invitation.
    let again = converge(&w, &pat).await;
    assert!(again.plan.is_empty(), "{:?}", again.plan);
    assert_eq!(w.guests.calls(GuestOp::Invite), 1);
    assert_eq!(w.guests.user_ids().len(), 1);
}

#[tokio::test]
async fn attributes_disable_and_enable_follow_the_account() {
    let w = world(Mode::Invite);
    let pat = partner(&w, "pat");
    let id = converge(&w, &pat).await.guest_id.unwrap();

    w.directory
        .set_partner_value(&pat, "title", Some("Site engineer"))
        .unwrap();
    w.directory
        .set_partner_value(&pat, "company", None)
        .unwrap();
    let out = converge(&w, &pat).await;
    assert_eq!(out.plan, ["update companyName, jobTitle"]);
    let g = guest(&w, &id);
    assert_eq!(
        property(&g, PartnerAttribute::JobTitle).as_deref(),
        Some("Site engineer")
    );
    assert_eq!(property(&g, PartnerAttribute::CompanyName), None);

    w.directory.set_partner_enabled(&pat, false).unwrap();
    let out = converge(&w, &pat).await;
    assert_eq!(out.plan, ["block sign-in"]);
    assert_eq!(out.status, PartnerStatus::Blocked);
    assert!(!guest(&w, &id).account_enabled);

    w.directory.set_partner_enabled(&pat, true).unwrap();
    let out = converge(&w, &pat).await;
    assert_eq!(out.plan, ["unblock sign-in"]);
    assert_eq!(out.status, PartnerStatus::Active);
    assert!(guest(&w, &id).account_enabled);
}

#[tokio::test]
async fn moved_out_blocks_at_once_and_deletes_after_the_retention_by_graph_s_clock() {
    let w = world(Mode::Invite);
    let pat = partner(&w, "pat");
    let id = converge(&w, &pat).await.guest_id.unwrap();

    w.directory.move_partner(&pat, ELSEWHERE).unwrap();
    let out = converge(&w, &pat).await;
    assert_eq!(out.plan, ["block sign-in"]);
    assert_eq!(out.status, PartnerStatus::Gone);
    assert!(!guest(&w, &id).account_enabled);
    let since = record(&w, &pat).await.gone_since.unwrap();

    // The local clock jumping a year deletes nothing: retention counts by Graph's clock.
    w.clock.advance(Duration::days(365));
    assert!(converge(&w, &pat).await.plan.is_empty());
    w.graph.clock().advance(Duration::days(29));
    assert!(converge(&w, &pat).await.plan.is_empty());
    assert_eq!(record(&w, &pat).await.gone_since, Some(since), "kept");
    w.graph.clock().advance(Duration::days(2));
    let out = converge(&w, &pat).await;
    assert_eq!(out.plan, ["delete the guest"]);
    assert_eq!(out.status, PartnerStatus::Deleted);
    assert!(w.guests.user(&id, LINK_ATTRIBUTE).is_none());
    assert!(converge(&w, &pat).await.plan.is_empty());
}

#[tokio::test]
async fn moved_back_in_scope_in_time_the_guest_is_unblocked_and_kept() {
    let w = world(Mode::Invite);
    let pat = partner(&w, "pat");
    let id = converge(&w, &pat).await.guest_id.unwrap();
    w.directory.move_partner(&pat, ELSEWHERE).unwrap();
    converge(&w, &pat).await;
    w.directory.move_partner(&pat, PARTNERS_OU).unwrap();
    let out = converge(&w, &pat).await;
    assert_eq!(out.plan, ["unblock sign-in"]);
    assert_eq!(out.guest_id, Some(id));
    assert_eq!(record(&w, &pat).await.gone_since, None);
}

#[tokio::test]
async fn a_deleted_account_blocks_then_deletes_its_guest_even_once_the_tombstone_is_purged() {
    let w = world(Mode::Invite);
    let pat = partner(&w, "pat");
    let id = converge(&w, &pat).await.guest_id.unwrap();
    w.directory.delete_partner(&pat).unwrap();
    let out = converge(&w, &pat).await;
    assert_eq!(out.plan, ["block sign-in"]);
    assert_eq!(out.status, PartnerStatus::Gone);
    w.directory.purge_partner_tombstone(&pat);
    w.graph.clock().advance(Duration::days(31));
    let out = converge(&w, &pat).await;
    assert_eq!(out.plan, ["delete the guest"]);
    assert!(w.guests.user(&id, LINK_ATTRIBUTE).is_none());
    // Nothing left on either side: the record goes, and the next look changes nothing.
    assert!(converge(&w, &pat).await.plan.is_empty());
    assert!(PartnerRecord::load(w.store.as_ref(), &pat)
        .await
        .unwrap()
        .is_none());
    assert!(converge(&w, &pat).await.plan.is_empty());
}

#[tokio::test]
async fn a_new_address_resets_the_redemption_of_the_same_guest() {
    let w = world(Mode::Invite);
    let pat = partner(&w, "pat");
    let id = converge(&w, &pat).await.guest_id.unwrap();
    w.directory
        .set_partner_value(&pat, "mail", Some("pat@northwind.example"))
        .unwrap();
    let out = converge(&w, &pat).await;
    assert_eq!(out.plan, ["reset redemption to pat@northwind.example"]);
    assert_eq!(out.guest_id.as_ref(), Some(&id));
    let g = guest(&w, &id);
    assert_eq!(g.mail.as_deref(), Some("pat@northwind.example"));
    assert_eq!(w.guests.user_ids().len(), 1, "no second guest");
    assert_eq!(
        record(&w, &pat).await.address.as_deref(),
        Some("pat@northwind.example")
    );
}

#[tokio::test]
async fn a_guest_invited_by_hand_is_adopted_and_a_member_at_the_address_is_left_alone() {
    let w = world(Mode::Invite);
    let by_hand = w
        .guests
        .invite(&Invitation {
            address: "pat@fabrikam.com".into(),
            redirect_url: "https://myapplications.microsoft.com".into(),
            send_message: false,
            message_language: None,
            invited_user: None,
            reset_redemption: false,
        })
        .await
        .unwrap();
    let pat = partner(&w, "pat");
    let out = converge(&w, &pat).await;
    assert_eq!(out.plan[0], "adopt the guest (link it to the account)");
    assert_eq!(out.guest_id.as_ref(), Some(&by_hand));
    assert_eq!(
        guest(&w, &by_hand).link.as_deref(),
        Some(pat.link().as_str())
    );
    assert_eq!(w.guests.user_ids().len(), 1);

    let employee = w.guests.add_member("sam@fabrikam.com");
    let sam = partner(&w, "sam");
    let out = converge(&w, &sam).await;
    assert_eq!(out.status, PartnerStatus::Conflict);
    assert!(
        out.conflict.as_deref().unwrap().contains(employee.as_str()),
        "{out:?}"
    );
    assert_eq!(guest(&w, &employee).user_type, "Member", "untouched");
    assert_eq!(
        record(&w, &sam).await.status,
        PartnerStatus::Conflict,
        "reported"
    );
}

#[tokio::test]
async fn an_account_without_an_external_address_is_reported_not_guessed() {
    let w = world(Mode::Invite);
    let none = w
        .directory
        .add_partner(PARTNERS_OU, "Nomail", "nomail", &[])
        .unwrap();
    let own = w
        .directory
        .add_partner(PARTNERS_OU, "Own", "own", &[("mail", "own@contoso.com")])
        .unwrap();
    for guid in [none, own] {
        let out = converge(&w, &guid).await;
        assert_eq!(out.status, PartnerStatus::Conflict, "{out:?}");
        assert!(out.guest_id.is_none());
    }
    assert_eq!(w.guests.calls(GuestOp::Invite), 0);
}

#[tokio::test]
async fn an_invitation_graph_refuses_is_reported_and_a_failing_one_retried() {
    let w = world(Mode::Invite);
    let pat = partner(&w, "pat");
    w.guests.fail(GuestOp::Invite, 1, || {
        GraphError::client(
            400,
            "BadRequest",
            "User's email address cannot be in a verified domain.",
        )
    });
    let out = converge(&w, &pat).await;
    assert_eq!(out.status, PartnerStatus::Conflict, "{out:?}");
    assert!(out.conflict.as_deref().unwrap().contains("verified domain"));
    assert_eq!(record(&w, &pat).await.status, PartnerStatus::Conflict);
    assert!(w.guests.user_ids().is_empty());

    w.guests.fail(GuestOp::Invite, 1, || GraphError::Server {
        status: 503,
        code: "ServiceUnavailable".into(),
        message: "try later".into(),
    });
    let e = w.app.partners().unwrap().converge(&pat).await.unwrap_err();
    assert!(e.is_retryable(), "{e}");
    let out = converge(&w, &pat).await;
    assert_eq!(out.status, PartnerStatus::Active, "{out:?}");
    assert_eq!(out.conflict, None);
    assert_eq!(record(&w, &pat).await.conflict, None);
}

#[tokio::test]
async fn hostile_attribute_values_are_cleaned_and_cut_to_graph_s_limits() {
    let w = world(Mode::Invite);
    let long = "Ω".repeat(300);
    let pat = w
        .directory
        .add_partner(
            PARTNERS_OU,
            "Pat",
            "pat",
            &[
                ("mail", "o'brien+x@fabrikam.com"),
                ("displayName", &format!("  Pat\u{0}\u{7}\r\n {long}")),
                ("department", "' or 1 eq 1 or '"),
            ],
        )
        .unwrap();
    let out = converge(&w, &pat).await;
    let g = guest(&w, &out.guest_id.unwrap());
    let name = property(&g, PartnerAttribute::DisplayName).unwrap();
    assert!(!name.chars().any(char::is_control), "{name:?}");
    assert_eq!(name.chars().count(), 256);
    assert_eq!(
        property(&g, PartnerAttribute::Department).as_deref(),
        Some("' or 1 eq 1 or '")
    );
    assert_eq!(g.mail.as_deref(), Some("o'brien+x@fabrikam.com"));
}

#[tokio::test]
async fn a_lost_state_store_finds_the_guest_by_its_link() {
    let w = world(Mode::Invite);
    let pat = partner(&w, "pat");
    let id = converge(&w, &pat).await.guest_id.unwrap();
    lose_record(&w, &pat).await;
    w.directory
        .set_partner_value(&pat, "title", Some("Lead"))
        .unwrap();
    let out = converge(&w, &pat).await;
    assert_eq!(out.plan, ["update jobTitle"]);
    assert_eq!(out.guest_id.as_ref(), Some(&id));
    assert_eq!(w.guests.calls(GuestOp::Invite), 1, "not invited again");
    assert_eq!(record(&w, &pat).await.guest_id, Some(id));
}

#[tokio::test]
async fn a_guest_not_visible_right_after_its_invitation_is_set_up_on_the_retry() {
    let w = world(Mode::Invite);
    let pat = partner(&w, "pat");
    w.guests.fail(GuestOp::Update, 1, || {
        GraphError::client(404, "Request_ResourceNotFound", "not replicated yet")
    });
    let e = w.app.partners().unwrap().converge(&pat).await.unwrap_err();
    assert!(e.is_retryable(), "{e}");
    let id = record(&w, &pat).await.guest_id.expect("remembered");
    assert!(guest(&w, &id).link.is_none());
    let out = converge(&w, &pat).await;
    assert_eq!(out.guest_id.as_ref(), Some(&id));
    assert_eq!(guest(&w, &id).link.as_deref(), Some(pat.link().as_str()));
    assert_eq!(w.guests.calls(GuestOp::Invite), 1);
}

#[tokio::test]
async fn convert_mode_converts_the_synced_user_in_place_and_reports_a_blocked_conversion() {
    let w = world(Mode::Convert);
    let pat = partner(&w, "pat");
    let synced = w
        .guests
        .add_synced_user(&pat.immutable_id(), Some("pat@fabrikam.com"), None);
    let out = converge(&w, &pat).await;
    assert_eq!(
        out.plan,
        ["convert to B2B with pat@fabrikam.com", "set userType Guest"]
    );
    assert_eq!(out.guest_id.as_ref(), Some(&synced), "the same object");
    let g = guest(&w, &synced);
    assert_eq!(g.user_type, "Guest");
    assert!(g.external_user_state.is_some());
    assert!(converge(&w, &pat).await.plan.is_empty());

    let sam = partner(&w, "sam");
    w.guests.add_synced_user(
        &sam.immutable_id(),
        Some("sam@fabrikam.com"),
        Some("sam@corp.example.test"),
    );
    let out = converge(&w, &sam).await;
    assert_eq!(out.status, PartnerStatus::Conflict);
    assert!(
        out.conflict
            .as_deref()
            .unwrap()
            .contains("onPremisesUserPrincipalName"),
        "{out:?}"
    );

    // Not synced yet: reported, and the job waits for Connect's next cycle (retried).
    let lee = partner(&w, "lee");
    let e = w.app.partners().unwrap().converge(&lee).await.unwrap_err();
    assert!(
        e.is_retryable() && e.to_string().contains("Entra Connect"),
        "{e}"
    );
    assert_eq!(record(&w, &lee).await.status, PartnerStatus::Conflict);
    let synced = w
        .guests
        .add_synced_user(&lee.immutable_id(), Some("lee@fabrikam.com"), None);
    let out = converge(&w, &lee).await;
    assert_eq!(
        out.guest_id.as_ref(),
        Some(&synced),
        "converted once synced"
    );
    assert_eq!(
        w.guests.user_ids().len(),
        3,
        "the synced users, never a new guest"
    );
}

#[tokio::test]
async fn convert_mode_resets_the_redemption_once_entra_connect_brings_the_new_address() {
    let w = world(Mode::Convert);
    let pat = partner(&w, "pat");
    let synced = w
        .guests
        .add_synced_user(&pat.immutable_id(), Some("pat@fabrikam.com"), None);
    converge(&w, &pat).await;
    w.directory
        .set_partner_value(&pat, "mail", Some("pat@northwind.example"))
        .unwrap();
    // Connect has not synced the new mail yet: the job waits (retried), nothing is written.
    let updates = w.guests.calls(GuestOp::Update);
    let e = w.app.partners().unwrap().converge(&pat).await.unwrap_err();
    assert!(
        e.is_retryable() && e.to_string().contains("pat@northwind.example"),
        "{e}"
    );
    assert_eq!(
        record(&w, &pat).await.address.as_deref(),
        Some("pat@fabrikam.com")
    );
    w.guests.sync_mail(&synced, "pat@northwind.example");
    let out = converge(&w, &pat).await;
    assert_eq!(out.plan, ["reset redemption to pat@northwind.example"]);
    assert_eq!(
        w.guests.calls(GuestOp::Update),
        updates,
        "no PATCH of Connect's mail"
    );
    assert_eq!(
        record(&w, &pat).await.address.as_deref(),
        Some("pat@northwind.example")
    );
    assert!(converge(&w, &pat).await.plan.is_empty(), "once");
}

#[tokio::test]
async fn blocks_past_the_threshold_are_held_and_a_release_runs_the_partner_job() {
    let w = limited(Mode::Invite, 1, 1);
    let (pat, sam) = (partner(&w, "pat"), partner(&w, "sam"));
    let pat_id = converge(&w, &pat).await.guest_id.unwrap();
    let sam_id = converge(&w, &sam).await.guest_id.unwrap();
    w.directory.set_partner_enabled(&pat, false).unwrap();
    w.directory.set_partner_enabled(&sam, false).unwrap();
    assert_eq!(converge(&w, &pat).await.plan, ["block sign-in"]);
    let out = converge(&w, &sam).await;
    assert!(
        out.held.as_deref().unwrap().contains("threshold"),
        "{out:?}"
    );
    assert!(out.plan.is_empty());
    assert!(guest(&w, &sam_id).account_enabled, "held, not applied");
    assert!(!guest(&w, &pat_id).account_enabled);
    // Updates go on while the threshold holds.
    w.directory
        .set_partner_value(&sam, "title", Some("Auditor"))
        .unwrap();
    assert_eq!(converge(&w, &sam).await.plan, ["update jobTitle"]);

    let held = shadowsync_app::safety::held_changes(w.store.as_ref())
        .await
        .unwrap();
    assert_eq!(held.len(), 1);
    assert_eq!(held[0].partner, Some(sam));
    assert_eq!(held[0].object_id, sam_id);
    admin::release_held(
        w.store.as_ref(),
        w.queue.as_ref(),
        w.graph.identity(),
        &HeldSelection {
            users: vec!["sam".into()],
        },
    )
    .await
    .unwrap();
    let jobs = w.drain().await;
    assert!(
        matches!(jobs.as_slice(), [Job::Partner { guid, source: JobSource::Admin, .. }] if *guid == sam),
        "{jobs:?}"
    );
    w.app.jobs.handle(&jobs[0]).await.unwrap();
    assert!(!guest(&w, &sam_id).account_enabled, "released and applied");
    assert!(shadowsync_app::safety::held_changes(w.store.as_ref())
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn a_guest_the_account_never_had_is_not_touched() {
    let w = world(Mode::Invite);
    // Someone else's guest at a non-partner's address: the account is not a partner.
    let other = w
        .guests
        .invite(&Invitation {
            address: "staff@fabrikam.com".into(),
            redirect_url: "https://myapplications.microsoft.com".into(),
            send_message: false,
            message_language: None,
            invited_user: None,
            reset_redemption: false,
        })
        .await
        .unwrap();
    let staff = w
        .directory
        .add_partner(
            ELSEWHERE,
            "staff",
            "staff",
            &[("mail", "staff@fabrikam.com")],
        )
        .unwrap();
    let out = converge(&w, &staff).await;
    assert_eq!(out.status, PartnerStatus::NotPartner);
    assert!(out.plan.is_empty());
    assert!(guest(&w, &other).account_enabled);
    assert!(guest(&w, &other).link.is_none());
    assert!(
        PartnerRecord::load(w.store.as_ref(), &staff)
            .await
            .unwrap()
            .is_none(),
        "an employee costs no record"
    );
}

#[tokio::test]
async fn a_partner_job_runs_through_the_dispatcher_and_a_host_without_the_direction_leaves_it() {
    let w = world(Mode::Invite);
    let pat = partner(&w, "pat");
    let job = Job::Partner {
        guid: pat,
        received_at: chrono::Utc::now(),
        source: JobSource::Reconciler,
    };
    assert_eq!(job.group(), format!("partner:{pat}"));
    w.app.jobs.handle(&job).await.unwrap();
    assert_eq!(record(&w, &pat).await.status, PartnerStatus::Active);

    let without = Setup::default().build();
    let e = without.app.jobs.handle(&job).await.unwrap_err();
    assert!(e.retryable, "left to a host that has it: {e:?}");
}

mod watcher {
    use super::*;

    fn guids(jobs: &[Job]) -> Vec<ObjectGuid> {
        let mut guids: Vec<ObjectGuid> = jobs
            .iter()
            .filter_map(|j| match j {
                Job::Partner { guid, .. } => Some(*guid),
                _ => None,
            })
            .collect();
        guids.sort();
        guids
    }

    fn watcher(w: &World) -> std::sync::Arc<shadowsync_app::PartnerWatcher> {
        w.app.partner_watcher.as_ref().unwrap().0.clone()
    }

    #[tokio::test]
    async fn changes_in_scope_and_accounts_leaving_it_become_jobs_employees_do_not() {
        let w = world(Mode::Invite);
        let pat = partner(&w, "pat");
        let employee = w
            .directory
            .add_partner(ELSEWHERE, "emp", "emp", &[("mail", "emp@fabrikam.com")])
            .unwrap();
        let first = watcher(&w).round().await.unwrap();
        assert!(first.full);
        assert_eq!(guids(&w.drain().await), [pat], "not {employee}");
        converge(&w, &pat).await;

        let quiet = watcher(&w).round().await.unwrap();
        assert!(!quiet.full);
        assert_eq!((quiet.changed, quiet.queued), (0, 0));

        w.directory
            .set_partner_value(&employee, "title", Some("Clerk"))
            .unwrap();
        w.directory.move_partner(&pat, ELSEWHERE).unwrap();
        let sam = partner(&w, "sam");
        let round = watcher(&w).round().await.unwrap();
        assert_eq!(round.changed, 3);
        let mut want = vec![pat, sam];
        want.sort();
        assert_eq!(guids(&w.drain().await), want, "the one that left too");

        w.directory.delete_partner(&sam).unwrap();
        watcher(&w).round().await.unwrap();
        assert_eq!(
            guids(&w.drain().await),
            [sam],
            "a deletion in scope, known or not"
        );
    }

    #[tokio::test]
    async fn another_dc_or_a_due_comparison_looks_at_everything_linked_guests_included() {
        let w = world(Mode::Invite);
        let pat = partner(&w, "pat");
        watcher(&w).round().await.unwrap();
        w.drain().await;
        converge(&w, &pat).await;
        // The state store is lost, then the account leaves scope without a record of it.
        lose_record(&w, &pat).await;
        w.directory.move_partner(&pat, ELSEWHERE).unwrap();
        let round = watcher(&w).round().await.unwrap();
        assert!(!round.full);
        assert!(w.drain().await.is_empty(), "not known, not in scope");

        w.directory
            .set_invocation_id("00000dc2-0000-4000-8000-000000000002");
        let round = watcher(&w).round().await.unwrap();
        assert!(round.full, "{round:?}");
        assert_eq!(guids(&w.drain().await), [pat], "found by its guest's link");
        let out = converge(&w, &pat).await;
        assert_eq!(out.plan, ["block sign-in"]);

        // And once per sweep interval without any DC change.
        let round = watcher(&w).round().await.unwrap();
        assert!(!round.full);
        w.clock.advance(Duration::days(1));
        assert!(watcher(&w).round().await.unwrap().full);
    }

    #[tokio::test]
    async fn a_failed_round_keeps_the_watermark() {
        let w = world(Mode::Invite);
        watcher(&w).round().await.unwrap();
        let pat = partner(&w, "pat");
        w.directory.fail(shadowsync_testkit::DirOp::Read, 1, || {
            shadowsync_ports::DirectoryError::server_down("reset")
        });
        assert!(watcher(&w).round().await.is_err());
        watcher(&w).round().await.unwrap();
        assert_eq!(guids(&w.drain().await), [pat]);
    }
}

mod notifications {
    use super::*;
    use shadowsync_queue::Queue;
    use shadowsync_state::records::{CHECKPOINTS, PARTNER_WATERMARK};
    use std::time::Duration as StdDuration;
    use tokio_util::sync::CancellationToken;

    #[tokio::test]
    async fn a_change_notification_runs_a_round_at_once_between_polls() {
        let w = world(Mode::Invite);
        let app = std::sync::Arc::new(w.app);
        let stop = CancellationToken::new();
        let running = {
            let (app, stop) = (app.clone(), stop.clone());
            tokio::spawn(async move { app.watch_partners(stop).await })
        };
        // The first round (at start) finds nothing; the next poll is 5 s away.
        let first = std::time::Instant::now();
        while app
            .state
            .get(CHECKPOINTS, PARTNER_WATERMARK)
            .await
            .unwrap()
            .is_none()
        {
            assert!(
                first.elapsed() < StdDuration::from_secs(2),
                "no first round"
            );
            tokio::time::sleep(StdDuration::from_millis(5)).await;
        }
        tokio::time::sleep(StdDuration::from_millis(50)).await;
        let pat = partner_in(&w.directory, "pat");
        let started = std::time::Instant::now();
        while w.queue.stats().await.unwrap().depth == 0 {
            assert!(
                started.elapsed() < StdDuration::from_secs(2),
                "the notification did not wake the watcher"
            );
            tokio::time::sleep(StdDuration::from_millis(5)).await;
        }
        let jobs = w
            .queue
            .receive(10, StdDuration::from_secs(30))
            .await
            .unwrap();
        assert!(matches!(&jobs[0].job, Job::Partner { guid, .. } if guid == &pat));
        stop.cancel();
        running.await.unwrap();
    }

    #[tokio::test]
    async fn failing_notifications_leave_the_polling_alone() {
        let w = world(Mode::Invite);
        // Every read fails once: the notification search among them.
        w.directory.fail(shadowsync_testkit::DirOp::Read, 2, || {
            shadowsync_ports::DirectoryError::server_down("refused")
        });
        let watcher = w.app.partner_watcher.as_ref().unwrap().0.clone();
        let e = watcher
            .directory
            .watch_changes(&[PARTNERS_OU.to_string()], &|| {})
            .await
            .unwrap_err();
        assert!(e.is_retryable(), "{e}");
        assert!(watcher.round().await.is_err(), "the second fault");
        partner_in(&w.directory, "pat");
        assert_eq!(watcher.round().await.unwrap().queued, 1, "polling goes on");
    }

    fn partner_in(d: &shadowsync_testkit::FakeDirectory, name: &str) -> ObjectGuid {
        d.add_partner(
            PARTNERS_OU,
            name,
            name,
            &[("mail", &format!("{name}@fabrikam.com"))],
        )
        .unwrap()
    }
}
