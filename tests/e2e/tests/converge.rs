//! Converging guests into real AD shadow accounts: Graph simulator + real Samba AD DC.

use serde_json::json;
use shadowsync_app::{AppError, Hint};
use shadowsync_core::account::{uac, DESCRIPTION_MARKER};
use shadowsync_core::names::{is_valid_sam_account_name, utf16_len, CN_MAX, SAM_MAX};
use shadowsync_core::{dn, Operation};
use shadowsync_e2e::{text, unique, World};
use shadowsync_state::AccountStatus;

fn uac_of(entry: &shadowsync_e2e::RawEntry) -> u32 {
    text(entry, "userAccountControl").unwrap().parse().unwrap()
}

fn usn(entry: &shadowsync_e2e::RawEntry) -> String {
    text(entry, "uSNChanged").unwrap()
}

#[tokio::test]
async fn a_guest_becomes_an_enabled_account_with_the_design_mapping() {
    let mut w = World::start().await.unwrap();
    let id = w.invite("alice", "Alice Smith").await.unwrap();
    let out = w.converger.converge(&id, Hint::default()).await.unwrap();
    assert_eq!(out.status, AccountStatus::Enabled);
    assert!(
        matches!(out.plan.as_slice(), [Operation::Create { .. }]),
        "{:?}",
        out.plan
    );

    let graph_user = w.graph.get_user(&id).await.unwrap().unwrap();
    let upn = graph_user["userPrincipalName"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(upn.contains("#EXT#@"), "{upn}");

    let (dn_, e) = w
        .probe
        .by_anchor(&id)
        .await
        .unwrap()
        .expect("account exists");
    let tail = &id.replace('-', "")[20..];
    assert_eq!(text(&e, "cn").unwrap(), format!("Alice Smith_{tail}"));
    assert!(
        dn::same(&dn::parent(&dn_).unwrap(), &w.samba.guests_ou),
        "{dn_}"
    );
    assert_eq!(text(&e, "adminDescription").unwrap(), format!("User_{id}"));
    assert_eq!(
        text(&e, "userPrincipalName").unwrap(),
        upn,
        "UPN is the cloud UPN verbatim"
    );
    let sam = text(&e, "sAMAccountName").unwrap();
    assert_eq!(
        sam,
        upn.split("#EXT#").next().unwrap()[..SAM_MAX.min(upn.find("#EXT#").unwrap())]
            .to_lowercase()
    );
    assert!(is_valid_sam_account_name(&sam));
    assert_eq!(text(&e, "displayName").unwrap(), "Alice Smith");
    assert_eq!(
        text(&e, "mail").unwrap(),
        graph_user["mail"].as_str().unwrap()
    );
    assert_eq!(text(&e, "description").unwrap(), DESCRIPTION_MARKER);
    assert!(e.get("objectclass").unwrap().contains(&b"user".to_vec()));

    // Enabled, smartcard required (no password sign-in), password never expires, and usable for
    // Kerberos S4U/KCD: not "sensitive and cannot be delegated", not in Protected Users.
    let flags = uac_of(&e);
    assert_eq!(flags, uac::ENABLED, "userAccountControl {flags:#x}");
    assert_eq!(flags & uac::ACCOUNTDISABLE, 0);
    assert_ne!(flags & uac::SMARTCARD_REQUIRED, 0);
    assert_eq!(flags & uac::NOT_DELEGATED, 0);
    let groups: Vec<String> = e
        .get("memberof")
        .map(|v| {
            v.iter()
                .map(|g| String::from_utf8_lossy(g).into_owned())
                .collect()
        })
        .unwrap_or_default();
    assert!(
        !groups.iter().any(|g| g.contains("Protected Users")),
        "{groups:?}"
    );
    assert_ne!(
        text(&e, "pwdLastSet").unwrap(),
        "0",
        "a password was set before enabling"
    );
}

#[tokio::test]
async fn a_display_name_change_updates_and_renames_the_account() {
    let mut w = World::start().await.unwrap();
    let id = w.invite("bob", "Bob Jones").await.unwrap();
    w.converger.converge(&id, Hint::default()).await.unwrap();
    w.graph
        .patch_user(
            &id,
            json!({"displayName": "Robert Jones", "givenName": "Robert", "surname": "Jones"}),
        )
        .await
        .unwrap();
    let out = w.converger.converge(&id, Hint::default()).await.unwrap();
    assert_eq!(out.status, AccountStatus::Enabled);
    let (_, e) = w.probe.by_anchor(&id).await.unwrap().unwrap();
    assert_eq!(text(&e, "displayName").unwrap(), "Robert Jones");
    assert_eq!(text(&e, "givenName").unwrap(), "Robert");
    assert_eq!(text(&e, "sn").unwrap(), "Jones");
    assert!(text(&e, "cn").unwrap().starts_with("Robert Jones_"));
}

/// Converges after `change`, and checks the account is disabled in the disabled OU.
async fn assert_disabled_after(w: &mut World, id: &shadowsync_core::ObjectId) {
    let out = w.converger.converge(id, Hint::default()).await.unwrap();
    assert_eq!(out.status, AccountStatus::Disabled, "{:?}", out.plan);
    let (dn_, e) = w.probe.by_anchor(id).await.unwrap().expect("account kept");
    assert_eq!(uac_of(&e), uac::DISABLED);
    assert!(
        dn::same(&dn::parent(&dn_).unwrap(), &w.samba.disabled_ou),
        "{dn_}"
    );
}

#[tokio::test]
async fn account_enabled_false_disables_it() {
    let mut w = World::start().await.unwrap();
    let id = w.invite("carol", "Carol").await.unwrap();
    w.converger.converge(&id, Hint::default()).await.unwrap();
    w.graph
        .patch_user(&id, json!({"accountEnabled": false}))
        .await
        .unwrap();
    assert_disabled_after(&mut w, &id).await;
    w.graph
        .patch_user(&id, json!({"accountEnabled": true}))
        .await
        .unwrap();
    let out = w.converger.converge(&id, Hint::default()).await.unwrap();
    assert_eq!(out.status, AccountStatus::Enabled);
    let (dn_, e) = w.probe.by_anchor(&id).await.unwrap().unwrap();
    assert_eq!(uac_of(&e), uac::ENABLED);
    assert!(dn::same(&dn::parent(&dn_).unwrap(), &w.samba.guests_ou));
}

#[tokio::test]
async fn becoming_a_member_disables_it() {
    let mut w = World::start().await.unwrap();
    let id = w.invite("dave", "Dave").await.unwrap();
    w.converger.converge(&id, Hint::default()).await.unwrap();
    w.graph
        .patch_user(&id, json!({"userType": "Member"}))
        .await
        .unwrap();
    assert_disabled_after(&mut w, &id).await;
}

#[tokio::test]
async fn soft_deletion_disables_and_restore_re_enables() {
    let mut w = World::start().await.unwrap();
    let id = w.invite("erin", "Erin").await.unwrap();
    w.converger.converge(&id, Hint::default()).await.unwrap();
    let (_, before) = w.probe.by_anchor(&id).await.unwrap().unwrap();

    w.graph.delete_user(&id).await.unwrap();
    assert_disabled_after(&mut w, &id).await;
    let (_, disabled) = w.probe.by_anchor(&id).await.unwrap().unwrap();
    assert_eq!(
        text(&disabled, "userPrincipalName"),
        text(&before, "userPrincipalName"),
        "Entra's mangled UPN of a deleted user is not copied"
    );
    let record = shadowsync_state::GuestRecord::load(w.converger.state.as_ref(), &id)
        .await
        .unwrap()
        .unwrap();
    assert!(
        record.value.disabled_at.is_some(),
        "the time of disabling is recorded"
    );

    w.graph.restore_user(&id).await.unwrap();
    let out = w.converger.converge(&id, Hint::default()).await.unwrap();
    assert_eq!(out.status, AccountStatus::Enabled);
    let (dn_, e) = w.probe.by_anchor(&id).await.unwrap().unwrap();
    assert_eq!(uac_of(&e), uac::ENABLED);
    assert!(
        dn::same(&dn::parent(&dn_).unwrap(), &w.samba.guests_ou),
        "{dn_}"
    );
    assert_eq!(
        text(&e, "objectGUID"),
        text(&before, "objectGUID"),
        "the same object came back"
    );
}

#[tokio::test]
async fn permanent_deletion_reported_by_graph_deletes_the_account() {
    let mut w = World::start().await.unwrap();
    let id = w.invite("frank", "Frank").await.unwrap();
    w.converger.converge(&id, Hint::default()).await.unwrap();
    w.graph.delete_user(&id).await.unwrap();
    w.graph.purge_user(&id).await.unwrap();
    let out = w
        .converger
        .converge(
            &id,
            Hint {
                deleted_in_graph: true,
                ..Hint::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(out.status, AccountStatus::Deleted);
    assert!(w.probe.by_anchor(&id).await.unwrap().is_none());
}

#[tokio::test]
async fn an_orphan_graph_cannot_find_is_disabled_not_deleted() {
    let mut w = World::start().await.unwrap();
    let id = w.invite("orphan", "Orphan").await.unwrap();
    w.converger.converge(&id, Hint::default()).await.unwrap();
    w.graph.delete_user(&id).await.unwrap();
    w.graph.purge_user(&id).await.unwrap();
    // Graph answers 404 but nothing said the user was deleted: a wrong tenant or a lost
    // permission looks the same, so the account is only disabled, and only once a second read
    // confirms the first.
    let e = w
        .converger
        .converge(&id, Hint::default())
        .await
        .unwrap_err();
    assert!(matches!(e, AppError::NotFoundUnconfirmed { .. }), "{e}");
    assert_eq!(
        uac_of(&w.probe.by_anchor(&id).await.unwrap().unwrap().1),
        uac::ENABLED
    );
    w.clock.advance(chrono::Duration::seconds(31));
    assert_disabled_after(&mut w, &id).await;
}

#[tokio::test]
async fn colliding_names_get_distinct_valid_names() {
    let mut w = World::start().await.unwrap();
    // Same first 20 characters of the UPN's local part: the same preferred sAMAccountName.
    let local = format!("collide{}x", unique());
    let a = w.invite(&local, "Same Name").await.unwrap();
    let b = w.invite(&local, "Same Name").await.unwrap();
    w.converger.converge(&a, Hint::default()).await.unwrap();
    w.converger.converge(&b, Hint::default()).await.unwrap();
    let (dn_a, ea) = w.probe.by_anchor(&a).await.unwrap().unwrap();
    let (dn_b, eb) = w.probe.by_anchor(&b).await.unwrap().unwrap();
    let (sa, sb) = (
        text(&ea, "sAMAccountName").unwrap(),
        text(&eb, "sAMAccountName").unwrap(),
    );
    assert_ne!(sa.to_lowercase(), sb.to_lowercase());
    assert!(
        is_valid_sam_account_name(&sa) && is_valid_sam_account_name(&sb),
        "{sa} {sb}"
    );
    assert_eq!(sa, local[..SAM_MAX]);
    assert!(
        sb.ends_with(&b.replace('-', "")[26..]),
        "suffix from the objectId: {sb}"
    );
    assert_ne!(dn_a, dn_b);
}

#[tokio::test]
async fn an_account_shadowsync_does_not_own_is_left_untouched() {
    let mut w = World::start().await.unwrap();
    let id = w.invite("grace", "Grace").await.unwrap();
    let upn = w.graph.get_user(&id).await.unwrap().unwrap()["userPrincipalName"]
        .as_str()
        .unwrap()
        .to_string();
    // An employee account outside the managed OUs that already holds the guest's UPN.
    let employee = format!("CN=Employee {},CN=Users,{}", unique(), w.samba.base_dn);
    let sam = format!("emp{}", unique());
    w.probe
        .add(
            &employee,
            vec![
                ("objectClass", "user"),
                ("sAMAccountName", &sam),
                ("userPrincipalName", &upn),
            ],
        )
        .await
        .unwrap();
    let before = w
        .probe
        .search(&format!("(sAMAccountName={sam})"))
        .await
        .unwrap();

    let out = w.converger.converge(&id, Hint::default()).await.unwrap();
    assert_eq!(out.status, AccountStatus::Conflict);
    assert!(
        out.conflict().unwrap().contains(&employee),
        "{:?}",
        out.conflict()
    );
    let after = w
        .probe
        .search(&format!("(sAMAccountName={sam})"))
        .await
        .unwrap();
    assert_eq!(
        before, after,
        "the employee's object is unchanged byte for byte"
    );
    assert!(
        w.probe.by_anchor(&id).await.unwrap().is_none(),
        "no shadow account was created"
    );
    let record = shadowsync_state::GuestRecord::load(w.converger.state.as_ref(), &id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(record.value.status, AccountStatus::Conflict);
}

#[tokio::test]
async fn hostile_names_give_valid_accounts() {
    let mut w = World::start().await.unwrap();
    let names = [
        r#"Comma, Plus+ "Quote" Back\slash <Lt> Gt; #Hash =Eq"#.to_string(),
        "   leading and trailing spaces   ".to_string(),
        "nul\0inside".to_string(),
        "emoji 😀🎉 party".to_string(),
        "עברית مرحبا right-to-left".to_string(),
        "x".repeat(300),
        "#".to_string(),
        "\\".to_string(),
    ];
    for name in names {
        let id = w.invite("hostile", &name).await.unwrap();
        w.graph
            .patch_user(
                &id,
                json!({"givenName": name.clone(), "surname": name.clone()}),
            )
            .await
            .unwrap();
        let out = w.converger.converge(&id, Hint::default()).await.unwrap();
        assert_eq!(
            out.status,
            AccountStatus::Enabled,
            "{name:?}: {:?}",
            out.plan
        );
        let (dn_, e) = w
            .probe
            .by_anchor(&id)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("{name:?}"));
        let cn = text(&e, "cn").unwrap();
        // Samba accepts over-long names that Windows AD refuses: the limits are ours to keep.
        assert!(utf16_len(&cn) <= CN_MAX, "{name:?}: cn {cn:?}");
        assert!(!cn.chars().any(char::is_control), "{cn:?}");
        assert_eq!(
            dn::first_value(&dn_).unwrap(),
            cn,
            "the DN AD returns parses to the cn"
        );
        let sam = text(&e, "sAMAccountName").unwrap();
        assert!(is_valid_sam_account_name(&sam), "{name:?}: {sam:?}");
        assert!(utf16_len(&text(&e, "givenName").unwrap()) <= 64);
        // Converging again finds nothing to do, whatever the escaping.
        let again = w.converger.converge(&id, Hint::default()).await.unwrap();
        assert!(again.plan.is_empty(), "{name:?}: {:?}", again.plan);
    }
}

#[tokio::test]
async fn converging_twice_changes_nothing_the_second_time() {
    let mut w = World::start().await.unwrap();
    let id = w.invite("henry", "Henry").await.unwrap();
    w.converger.converge(&id, Hint::default()).await.unwrap();
    let (_, first) = w.probe.by_anchor(&id).await.unwrap().unwrap();
    let out = w.converger.converge(&id, Hint::default()).await.unwrap();
    assert!(out.plan.is_empty(), "{:?}", out.plan);
    let (_, second) = w.probe.by_anchor(&id).await.unwrap().unwrap();
    assert_eq!(
        usn(&first),
        usn(&second),
        "uSNChanged moved: AD was written"
    );
}

#[tokio::test]
async fn an_empty_state_store_is_rebuilt_from_the_anchor() {
    let mut w = World::start().await.unwrap();
    let id = w.invite("irene", "Irene").await.unwrap();
    w.converger.converge(&id, Hint::default()).await.unwrap();
    let (_, first) = w.probe.by_anchor(&id).await.unwrap().unwrap();

    let fresh = tempfile::tempdir().unwrap();
    let c = &w.converger;
    let converger = shadowsync_app::Converger {
        state: std::sync::Arc::new(
            shadowsync_state::EmbeddedStore::open(fresh.path().join("empty.redb")).unwrap(),
        ),
        graph: c.graph.clone(),
        directory: c.directory.clone(),
        policy: c.policy.clone(),
        clock: c.clock.clone(),
        safety: c.safety.clone(),
    };
    let out = converger.converge(&id, Hint::default()).await.unwrap();
    assert!(out.plan.is_empty(), "{:?}", out.plan);
    let (_, second) = w.probe.by_anchor(&id).await.unwrap().unwrap();
    assert_eq!(usn(&first), usn(&second));
    let record = shadowsync_state::GuestRecord::load(w.converger.state.as_ref(), &id)
        .await
        .unwrap()
        .expect("record rebuilt");
    assert_eq!(record.value.status, AccountStatus::Enabled);
    assert_eq!(
        record.value.sam_account_name,
        text(&first, "sAMAccountName")
    );
}

#[tokio::test]
async fn drift_made_by_hand_is_repaired() {
    let mut w = World::start().await.unwrap();
    let id = w.invite("judy", "Judy").await.unwrap();
    w.converger.converge(&id, Hint::default()).await.unwrap();
    let (dn_, _) = w.probe.by_anchor(&id).await.unwrap().unwrap();
    w.probe
        .replace(&dn_, "displayName", "Tampered")
        .await
        .unwrap();
    w.probe
        .replace(
            &dn_,
            "userAccountControl",
            &(uac::ENABLED | uac::NOT_DELEGATED).to_string(),
        )
        .await
        .unwrap();
    let out = w.converger.converge(&id, Hint::default()).await.unwrap();
    assert_eq!(out.plan.len(), 1, "{:?}", out.plan);
    let (_, e) = w.probe.by_anchor(&id).await.unwrap().unwrap();
    assert_eq!(text(&e, "displayName").unwrap(), "Judy");
    assert_eq!(uac_of(&e), uac::ENABLED);
}

#[tokio::test]
async fn a_dry_run_plans_without_writing() {
    let mut w = World::start().await.unwrap();
    let id = w.invite("kim", "Kim").await.unwrap();
    let out = w.converger.dry_run(&id, Hint::default()).await.unwrap();
    assert!(!out.applied);
    assert!(matches!(out.plan.as_slice(), [Operation::Create { .. }]));
    assert!(w.probe.by_anchor(&id).await.unwrap().is_none());
    assert!(
        shadowsync_state::GuestRecord::load(w.converger.state.as_ref(), &id)
            .await
            .unwrap()
            .is_none()
    );
}
