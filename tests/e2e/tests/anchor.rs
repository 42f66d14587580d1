//! The indexed anchor on the Samba test DC, whose schema carries Windows Server 2016's
//! `msDS-ExternalDirectoryObjectId` (tests/samba/samba-dc.sh), and the path of an older schema
//! (`indexed_anchor = "off"`, which is what a schema without the attribute gets).

use shadowsync_app::Hint;
use shadowsync_core::{Policy, ShadowAccount};
use shadowsync_directory::{LdapDirectory, EXTERNAL_ID};
use shadowsync_e2e::{guest, samba, text, unique, AdProbe, World};
use shadowsync_state::AccountStatus;

async fn directory(indexed_anchor: bool) -> LdapDirectory {
    directory_for(indexed_anchor, &samba().policy()).await
}

async fn directory_for(indexed_anchor: bool, policy: &Policy) -> LdapDirectory {
    let mut config = samba().directory_config();
    config.indexed_anchor = indexed_anchor;
    LdapDirectory::connect(config, policy).await.unwrap()
}

/// Managed OUs of the test's own: another test's directory stamps accounts without the
/// indexed anchor in the shared ones.
async fn own_policy(probe: &mut AdProbe) -> Policy {
    let guests = probe.ou("Anchor Guests").await.unwrap();
    let disabled = probe.ou("Anchor Disabled").await.unwrap();
    Policy::new(guests, disabled)
}

fn account(name: &str, policy: &Policy) -> ShadowAccount {
    ShadowAccount::for_user(&guest(name, &format!("{name} {}", unique())), policy)
}

/// The entry at `dn` with every attribute.
async fn entry(probe: &mut AdProbe, dn: &str) -> shadowsync_e2e::RawEntry {
    probe
        .search_in(dn, "(objectClass=user)")
        .await
        .unwrap()
        .pop()
        .expect("the entry")
        .1
}

#[tokio::test]
async fn the_schema_is_read_and_new_accounts_carry_both_anchors() {
    let d = directory(true).await;
    let lookup = d.anchor_lookup().expect("read at connect");
    assert!(lookup.indexed, "{lookup:?}");
    assert_eq!(lookup.attribute, EXTERNAL_ID);

    let a = account("indexed", &samba().policy());
    let dn = d.create(&a).await.unwrap();
    let mut probe = AdProbe::connect(samba()).await.unwrap();
    let e = entry(&mut probe, &dn).await;
    assert_eq!(text(&e, "adminDescription").unwrap(), a.anchor);
    assert_eq!(text(&e, EXTERNAL_ID).unwrap(), a.anchor);
    let found = d.find_by_anchor(&a.anchor).await.unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].anchor.as_deref(), Some(a.anchor.as_str()));
}

#[tokio::test]
async fn the_older_schema_path_uses_admin_description_alone() {
    let mut probe = AdProbe::connect(samba()).await.unwrap();
    let policy = own_policy(&mut probe).await;
    let d = directory_for(false, &policy).await;
    let lookup = d.anchor_lookup().unwrap();
    assert!(!lookup.indexed);
    assert_eq!(lookup.attribute, "adminDescription");
    assert!(lookup.reason.contains("off"), "{}", lookup.reason);

    let a = account("unindexed", &policy);
    let dn = d.create(&a).await.unwrap();
    let e = entry(&mut probe, &dn).await;
    assert_eq!(text(&e, "adminDescription").unwrap(), a.anchor);
    assert_eq!(
        text(&e, EXTERNAL_ID),
        None,
        "nothing written beyond the old schema"
    );
    assert_eq!(d.find_by_anchor(&a.anchor).await.unwrap().len(), 1);
}

#[tokio::test]
async fn accounts_made_without_the_indexed_anchor_gain_it_and_are_found() {
    // Made as by an older shadowsync, or before the schema had the attribute.
    let mut probe = AdProbe::connect(samba()).await.unwrap();
    let policy = own_policy(&mut probe).await;
    let old = directory_for(false, &policy).await;
    let a = account("legacy", &policy);
    let dn = old.create(&a).await.unwrap();
    assert_eq!(text(&entry(&mut probe, &dn).await, EXTERNAL_ID), None);

    let d = directory_for(true, &policy).await;
    let found = d.find_by_anchor(&a.anchor).await.unwrap();
    assert_eq!(found.len(), 1, "found by the indexed anchor once stamped");
    assert_eq!(
        text(&entry(&mut probe, &dn).await, EXTERNAL_ID).unwrap(),
        a.anchor
    );
}

#[tokio::test]
async fn accounts_made_without_the_indexed_anchor_later_are_stamped_at_the_next_interval() {
    // An older shadowsync still running beside this one during an upgrade keeps making
    // accounts without the indexed anchor after this process's first stamp.
    let mut probe = AdProbe::connect(samba()).await.unwrap();
    let policy = own_policy(&mut probe).await;
    let interval = std::time::Duration::from_secs(5);
    let d = directory_for(true, &policy)
        .await
        .with_stamp_interval(interval);
    let first = account("first", &policy);
    d.create(&first).await.unwrap();
    assert_eq!(d.find_by_anchor(&first.anchor).await.unwrap().len(), 1);

    let old = directory_for(false, &policy).await;
    let a = account("later", &policy);
    let dn = old.create(&a).await.unwrap();
    assert!(
        d.find_by_anchor(&a.anchor).await.unwrap().is_empty(),
        "within the interval the OUs are not checked again"
    );
    assert_eq!(text(&entry(&mut probe, &dn).await, EXTERNAL_ID), None);

    tokio::time::sleep(interval).await;
    let found = d.find_by_anchor(&a.anchor).await.unwrap();
    assert_eq!(found.len(), 1, "stamped at the next interval, then found");
    assert_eq!(
        text(&entry(&mut probe, &dn).await, EXTERNAL_ID).unwrap(),
        a.anchor
    );
}

#[tokio::test]
async fn objects_anchored_by_another_tool_or_outside_the_managed_ous_are_not_ours() {
    let s = samba();
    let mut probe = AdProbe::connect(s).await.unwrap();
    let staff = probe.ou("Staff").await.unwrap();
    // What Cloud Sync leaves on a user it provisioned: the indexed attribute alone.
    let cloud_synced = format!("User_{}", uuid::Uuid::new_v4());
    let cloud_dn = format!("CN=Cloud {},{}", unique(), s.guests_ou);
    probe
        .add(
            &cloud_dn,
            vec![
                ("objectClass", "user"),
                ("sAMAccountName", &format!("cs{}", &unique()[..10])),
                (EXTERNAL_ID, &cloud_synced),
            ],
        )
        .await
        .unwrap();
    // A copy of our mark outside the managed OUs: never stamped.
    let copied = format!("User_{}", uuid::Uuid::new_v4());
    let copy_dn = format!("CN=Copy {},{staff}", unique());
    probe
        .add(
            &copy_dn,
            vec![
                ("objectClass", "user"),
                ("sAMAccountName", &format!("cp{}", &unique()[..10])),
                ("adminDescription", &copied),
            ],
        )
        .await
        .unwrap();

    let d = directory(true).await;
    assert!(d.find_by_anchor(&cloud_synced).await.unwrap().is_empty());
    assert!(d.find_by_anchor(&copied).await.unwrap().is_empty());
    assert_eq!(text(&entry(&mut probe, &copy_dn).await, EXTERNAL_ID), None);
    let cloud = entry(&mut probe, &cloud_dn).await;
    assert_eq!(text(&cloud, "adminDescription"), None);
}

#[tokio::test]
async fn a_guest_converges_the_same_on_either_schema() {
    let mut w = World::start().await.unwrap();
    let id = w.invite("either", "Either Schema").await.unwrap();
    let out = w.converger.converge(&id, Hint::default()).await.unwrap();
    assert_eq!(out.status, AccountStatus::Enabled);
    let (dn, e) = w.probe.by_anchor(&id).await.unwrap().unwrap();
    assert_eq!(text(&e, EXTERNAL_ID).unwrap(), format!("User_{id}"));
    // Converging again finds it by the indexed anchor: nothing to do.
    let again = w.converger.converge(&id, Hint::default()).await.unwrap();
    assert!(again.plan.is_empty(), "{:?}", again.plan);
    // An older schema's lookup finds the same account.
    let old = directory(false).await;
    let found = old.find_by_anchor(&format!("User_{id}")).await.unwrap();
    assert_eq!(found.len(), 1);
    assert!(shadowsync_core::dn::same(&found[0].dn, &dn));
}

#[tokio::test]
async fn the_directory_is_reached_at_its_first_use_not_before() {
    // Nothing listens there: making the directory must not try.
    let mut config = samba().directory_config();
    config.url = "ldaps://127.0.0.1:1".into();
    config.connect_timeout = std::time::Duration::from_secs(2);
    let unreachable = LdapDirectory::new(config, &samba().policy());
    assert_eq!(unreachable.anchor_lookup(), None);
    let err = unreachable
        .find_by_anchor("User_00000000-0000-0000-0000-000000000001")
        .await
        .unwrap_err();
    assert!(
        err.is_retryable(),
        "a DC out of reach is waited for: {err:?}"
    );

    let d = LdapDirectory::new(samba().directory_config(), &samba().policy());
    assert_eq!(d.anchor_lookup(), None, "not reached yet");
    assert!(d
        .find_by_sam_account_name("Administrator")
        .await
        .unwrap()
        .is_some());
    assert!(d.anchor_lookup().unwrap().indexed, "read at the first use");
}
