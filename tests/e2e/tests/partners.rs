//! The partner reads ([`PartnerDirectory`]) against the real Samba AD DC. Accounts are made and
//! changed with the raw LDAP probe, never through the adapter under test; each test has its
//! own OU.
//!
//! Samba's schema has no `extensionAttribute1` (an Exchange attribute), so the partner filter
//! here is on `employeeType`, a base-schema attribute used the same way.

use shadowsync_core::dn;
use shadowsync_core::partner::{ObjectGuid, PartnerAccount, PartnerAttribute};
use shadowsync_directory::{LdapDirectory, PartnerChanges, PartnerDirectory};
use shadowsync_e2e::{samba, unique, AdProbe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const FILTER: Option<&str> = Some("(employeeType=Partner)");

async fn directory() -> LdapDirectory {
    LdapDirectory::connect(samba().directory_config(), &samba().policy())
        .await
        .unwrap()
}

/// The live accounts directly under `ou` among those changed after `after_usn`, domain-wide
/// (what the watcher reads, narrowed to one OU for the test).
async fn changed_in(
    d: &dyn PartnerDirectory,
    ou: &str,
    filter: Option<&str>,
    attributes: &[PartnerAttribute],
    after_usn: u64,
) -> PartnerChanges {
    let mut changes = d
        .changed_accounts(filter, attributes, after_usn)
        .await
        .unwrap();
    changes
        .accounts
        .retain(|a| !a.deleted && dn::parent(&a.dn).is_some_and(|p| dn::same(&p, ou)));
    changes
}

async fn probe() -> AdProbe {
    AdProbe::connect(samba()).await.unwrap()
}

/// A user `CN=<cn>,<ou>` with these attributes, made through the probe; its DN and objectGUID.
async fn user(
    probe: &mut AdProbe,
    ou: &str,
    cn: &str,
    attrs: &[(&str, &str)],
) -> (String, ObjectGuid) {
    let dn = dn::child("CN", cn, ou);
    let sam = format!("p{}", &unique()[..10]);
    let mut all = vec![("objectClass", "user"), ("sAMAccountName", sam.as_str())];
    all.extend_from_slice(attrs);
    probe.add(&dn, all).await.unwrap();
    let guid = probe.guid(&dn).await.unwrap();
    (dn, guid)
}

fn value(account: &PartnerAccount, attribute: PartnerAttribute) -> Option<&str> {
    account
        .attributes
        .iter()
        .find(|(a, _)| *a == attribute)
        .and_then(|(_, v)| v.as_deref())
}

#[tokio::test]
async fn an_account_is_read_by_guid_with_its_attributes_and_state() {
    let dir = directory().await;
    let d: &dyn PartnerDirectory = &dir;
    let mut probe = probe().await;
    let ou = probe.ou("partners read").await.unwrap();
    let upn = format!("pat.{}@partners.corp.example.test", unique());
    let (user_dn, guid) = user(
        &mut probe,
        &ou,
        "Pat Partner",
        &[
            ("userAccountControl", "514"),
            ("displayName", "Pat Partner"),
            ("givenName", "Pat"),
            ("sn", "Partner"),
            ("company", "Fabrikam"),
            ("title", "Engineer"),
            ("mail", "pat@fabrikam.com"),
            ("userPrincipalName", &upn),
            ("employeeType", "Partner"),
        ],
    )
    .await;
    let all = PartnerAttribute::ALL;
    let a = d
        .partner_account(&guid, FILTER, &all)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(a.guid, guid);
    assert!(dn::same(&a.dn, &user_dn), "{}", a.dn);
    assert!(a.sam_account_name.starts_with('p'));
    assert_eq!(a.user_principal_name.as_deref(), Some(upn.as_str()));
    assert_eq!(a.mail.as_deref(), Some("pat@fabrikam.com"));
    assert_eq!(
        a.attributes,
        [
            (PartnerAttribute::DisplayName, Some("Pat Partner".into())),
            (PartnerAttribute::GivenName, Some("Pat".into())),
            (PartnerAttribute::Surname, Some("Partner".into())),
            (PartnerAttribute::CompanyName, Some("Fabrikam".into())),
            (PartnerAttribute::JobTitle, Some("Engineer".into())),
            (PartnerAttribute::Department, None),
        ]
    );
    assert!(!a.enabled, "userAccountControl 514 is disabled");
    assert!(a.matches_filter && !a.deleted);

    // Only what was asked for.
    let few = d
        .partner_account(&guid, None, &[PartnerAttribute::JobTitle])
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        few.attributes,
        [(PartnerAttribute::JobTitle, Some("Engineer".into()))]
    );
    assert!(few.matches_filter, "no filter: everything matches");

    probe
        .replace(&user_dn, "userAccountControl", "512")
        .await
        .unwrap();
    probe
        .replace(&user_dn, "employeeType", "Staff")
        .await
        .unwrap();
    let a = d
        .partner_account(&guid, FILTER, &all)
        .await
        .unwrap()
        .unwrap();
    assert!(a.enabled);
    assert!(!a.matches_filter, "employeeType is no longer Partner");
    // The filter without its parentheses is the same filter.
    let a = d
        .partner_account(&guid, Some("employeeType=staff"), &all)
        .await
        .unwrap()
        .unwrap();
    assert!(
        a.matches_filter,
        "AD compares employeeType case-insensitively"
    );

    let unknown: ObjectGuid = uuid::Uuid::new_v4().to_string().parse().unwrap();
    assert!(d
        .partner_account(&unknown, None, &all)
        .await
        .unwrap()
        .is_none());
}

#[tokio::test]
async fn hostile_values_are_read_back_exactly() {
    let dir = directory().await;
    let d: &dyn PartnerDirectory = &dir;
    let mut probe = probe().await;
    let ou = probe
        .ou("partners, (hostile) + \"quoted\" \\ ; <x> #")
        .await
        .unwrap();
    let cn = "#Ünïcødé, \"Pat\" + <Partner>; \\ =*)";
    let display = "*)(|(objectClass=*))\\00 ünïcødé 😀 \"q\" <a> & | ! ~";
    let company = "Fabrikam, Inc. \\ # + ; = *";
    let department = "R&D (partners)*\\";
    let filter = format!("(department={})", ldap3::ldap_escape(department));
    let (user_dn, guid) = user(
        &mut probe,
        &ou,
        cn,
        &[
            ("displayName", display),
            ("company", company),
            ("department", department),
            ("title", "Ingénieur·e — 日本語"),
        ],
    )
    .await;
    let attrs = [
        PartnerAttribute::DisplayName,
        PartnerAttribute::CompanyName,
        PartnerAttribute::Department,
        PartnerAttribute::JobTitle,
    ];
    let by_guid = d
        .partner_account(&guid, Some(&filter), &attrs)
        .await
        .unwrap()
        .unwrap();
    let changed = changed_in(d, &ou, Some(&filter), &attrs, 0).await;
    assert_eq!(changed.accounts.len(), 1);
    for a in [&by_guid, &changed.accounts[0]] {
        assert_eq!(a.guid, guid);
        assert!(dn::same(&a.dn, &user_dn), "{} vs {user_dn}", a.dn);
        assert_eq!(dn::first_value(&a.dn).unwrap(), cn);
        assert_eq!(value(a, PartnerAttribute::DisplayName), Some(display));
        assert_eq!(value(a, PartnerAttribute::CompanyName), Some(company));
        assert_eq!(value(a, PartnerAttribute::Department), Some(department));
        assert_eq!(
            value(a, PartnerAttribute::JobTitle),
            Some("Ingénieur·e — 日本語")
        );
        assert!(
            a.matches_filter,
            "an escaped hostile value in the filter matches"
        );
    }
}

#[tokio::test]
async fn changes_are_returned_after_the_watermark_and_not_before() {
    let dir = directory().await;
    let d: &dyn PartnerDirectory = &dir;
    let mut probe = probe().await;
    let ou = probe.ou("partners changes").await.unwrap();
    let elsewhere = probe.ou("partners elsewhere").await.unwrap();
    let (pat_dn, pat) = user(
        &mut probe,
        &ou,
        "Pat",
        &[("employeeType", "Partner"), ("title", "A")],
    )
    .await;
    let (sam_dn, sam) = user(&mut probe, &ou, "Sam", &[("employeeType", "Partner")]).await;
    let (_, staff) = user(&mut probe, &ou, "Staff", &[("employeeType", "Staff")]).await;
    // Not one level below the OU: a user in a child OU.
    let child = probe.ou_under("child", &ou).await.unwrap();
    user(&mut probe, &child, "Nested", &[]).await;

    let title = [PartnerAttribute::JobTitle];
    let first = changed_in(d, &ou, FILTER, &title, 0).await;
    let mut found: Vec<(ObjectGuid, bool)> = first
        .accounts
        .iter()
        .map(|a| (a.guid, a.matches_filter))
        .collect();
    found.sort();
    let mut want = vec![(pat, true), (sam, true), (staff, false)];
    want.sort();
    assert_eq!(found, want, "one level, each with matches_filter");
    assert!(first.highest_usn > 0);
    assert!(
        first.invocation_id.parse::<ObjectGuid>().is_ok(),
        "{}",
        first.invocation_id
    );

    let quiet = changed_in(d, &ou, FILTER, &title, first.highest_usn).await;
    assert!(quiet.accounts.is_empty(), "{:?}", quiet.accounts);
    assert_eq!(quiet.invocation_id, first.invocation_id);

    probe.replace(&pat_dn, "title", "B").await.unwrap();
    probe
        .replace(&pat_dn, "employeeType", "Former")
        .await
        .unwrap();
    let moved = probe.move_to(&sam_dn, &elsewhere).await.unwrap();
    let next = changed_in(d, &ou, FILTER, &title, first.highest_usn).await;
    assert!(next.highest_usn > first.highest_usn);
    assert_eq!(next.accounts.len(), 1, "{:?}", next.accounts);
    let a = &next.accounts[0];
    assert_eq!(a.guid, pat);
    assert_eq!(value(a, PartnerAttribute::JobTitle), Some("B"));
    assert!(!a.matches_filter, "it left the filter: returned, marked");

    // The moved account is in no round of the OU any more, but still found by GUID.
    let all = changed_in(d, &ou, None, &[], 0).await;
    assert!(all.accounts.iter().all(|a| a.guid != sam));
    let there = d.partner_account(&sam, FILTER, &[]).await.unwrap().unwrap();
    assert!(dn::same(&there.dn, &moved), "{}", there.dn);
    assert!(there.matches_filter && !there.deleted);

    let after = changed_in(d, &ou, FILTER, &title, next.highest_usn).await;
    assert!(after.accounts.is_empty(), "{:?}", after.accounts);
}

#[tokio::test]
async fn a_deleted_account_is_found_as_a_tombstone() {
    let dir = directory().await;
    let d: &dyn PartnerDirectory = &dir;
    let mut probe = probe().await;
    let ou = probe.ou("partners deleted").await.unwrap();
    let other = probe.ou("partners other").await.unwrap();
    let cn = "Gone, \"Pat\" + Ü";
    let (dn_, guid) = user(
        &mut probe,
        &ou,
        cn,
        &[("employeeType", "Partner"), ("mail", "gone@fabrikam.com")],
    )
    .await;
    let (_, stays) = user(&mut probe, &ou, "Stays", &[]).await;
    let (other_dn, other_guid) = user(&mut probe, &other, "Other", &[]).await;
    let before = changed_in(d, &ou, None, &[], 0).await;
    assert_eq!(before.accounts.len(), 2);

    probe.delete(&dn_).await.unwrap();
    probe.delete(&other_dn).await.unwrap();

    let t = d
        .partner_account(&guid, FILTER, &PartnerAttribute::ALL)
        .await
        .unwrap()
        .expect("the tombstone");
    assert!(t.deleted && !t.enabled && !t.matches_filter);
    assert_eq!(t.guid, guid);
    assert!(dn::same(&t.dn, &dn_), "placed where it was: {}", t.dn);
    assert_eq!(dn::first_value(&t.dn).unwrap(), cn);
    let t = d.partner_account(&guid, None, &[]).await.unwrap().unwrap();
    assert!(t.matches_filter, "no filter");

    // Domain-wide: both tombstones, placed where they were, and nothing else of these OUs.
    let changed = d
        .changed_accounts(FILTER, &PartnerAttribute::ALL, before.highest_usn)
        .await
        .unwrap();
    let tombstones: Vec<_> = changed
        .accounts
        .iter()
        .filter(|a| a.guid == guid || a.guid == other_guid || a.guid == stays)
        .collect();
    assert_eq!(tombstones.len(), 2, "{tombstones:?}");
    assert!(tombstones.iter().all(|a| a.deleted && !a.matches_filter));
    let t = tombstones.iter().find(|a| a.guid == guid).unwrap();
    assert!(dn::same(&t.dn, &dn_), "{}", t.dn);
    let o = tombstones.iter().find(|a| a.guid == other_guid).unwrap();
    assert!(dn::same(&o.dn, &other_dn), "{}", o.dn);
    let after = changed_in(d, &ou, None, &[], 0).await;
    assert_eq!(
        after.accounts.iter().map(|a| a.guid).collect::<Vec<_>>(),
        [stays],
        "a tombstone is no account of the OU"
    );
    assert!(
        !d.changed_accounts(None, &[], after.highest_usn)
            .await
            .unwrap()
            .accounts
            .iter()
            .any(|a| a.guid == guid),
        "seen once"
    );
}

#[tokio::test]
async fn change_notifications_report_a_change_in_the_ou_at_once() {
    let dir = directory().await;
    let mut probe = probe().await;
    let ou = probe.ou("partners notified").await.unwrap();
    let seen = Arc::new(AtomicUsize::new(0));
    let counter = seen.clone();
    let watched = ou.clone();
    let watching = tokio::spawn(async move {
        let on_change = move || {
            counter.fetch_add(1, Ordering::SeqCst);
        };
        dir.watch_changes(&[watched], &on_change).await
    });
    // The searches are registered before the change (a change before them is the poll's).
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = Instant::now();
    let (dn_, _) = user(&mut probe, &ou, "Notified", &[("mail", "n@fabrikam.com")]).await;
    while seen.load(Ordering::SeqCst) == 0 {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no notification: {:?}",
            watching.is_finished()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    println!(
        "change notification after {} ms",
        started.elapsed().as_millis()
    );
    let before = seen.load(Ordering::SeqCst);
    probe.replace(&dn_, "title", "Changed").await.unwrap();
    let started = Instant::now();
    while seen.load(Ordering::SeqCst) == before {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no notification of the change"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    watching.abort();
}
