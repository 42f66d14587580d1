//! The partner reads ([`PartnerDirectory`]) against the real Samba AD DC started by
//! `tests/samba/samba-dc.sh ensure`. Accounts are made and changed with a plain ldap3
//! connection (the probe), never through the adapter under test; each test has its own OU.
//!
//! Samba's schema has no `extensionAttribute1` (an Exchange attribute), so the partner filter
//! here is on `employeeType`, a base-schema attribute used the same way.

use ldap3::{Ldap, LdapConnAsync, LdapConnSettings, Mod, Scope, SearchEntry};
use secrecy::SecretString;
use shadowsync_core::dn;
use shadowsync_core::partner::{ObjectGuid, PartnerAccount, PartnerAttribute};
use shadowsync_core::Policy;
use shadowsync_directory::{DirectoryConfig, LdapDirectory, PartnerDirectory};
use std::collections::{HashMap, HashSet};
use std::sync::OnceLock;

const FILTER: Option<&str> = Some("(employeeType=Partner)");

struct Samba {
    url: String,
    bind_dn: String,
    password: String,
    ca_file: std::path::PathBuf,
    base_dn: String,
    guests_ou: String,
    disabled_ou: String,
}

/// Makes sure the DC runs and returns its facts (`samba-dc.sh ensure` prints them).
fn samba() -> &'static Samba {
    static SAMBA: OnceLock<Samba> = OnceLock::new();
    SAMBA.get_or_init(|| {
        let script =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/samba/samba-dc.sh");
        let out = std::process::Command::new("bash")
            .arg(&script)
            .arg("ensure")
            .stderr(std::process::Stdio::inherit())
            .output()
            .expect("run samba-dc.sh ensure");
        assert!(out.status.success(), "samba-dc.sh ensure failed");
        let env: HashMap<String, String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let get = |k: &str| env.get(k).cloned().unwrap_or_else(|| panic!("{k} missing"));
        Samba {
            url: get("SHADOWSYNC_TEST_LDAP_URL"),
            bind_dn: get("SHADOWSYNC_TEST_BIND_DN"),
            password: get("SHADOWSYNC_TEST_BIND_PASSWORD"),
            ca_file: get("SHADOWSYNC_TEST_CA_FILE").into(),
            base_dn: get("SHADOWSYNC_TEST_BASE_DN"),
            guests_ou: get("SHADOWSYNC_TEST_GUESTS_OU"),
            disabled_ou: get("SHADOWSYNC_TEST_DISABLED_OU"),
        }
    })
}

fn unique() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..12].to_string()
}

async fn directory() -> LdapDirectory {
    let s = samba();
    let mut config =
        DirectoryConfig::new(&s.url, &s.bind_dn, SecretString::from(s.password.clone()));
    config.ca_file = Some(s.ca_file.clone());
    LdapDirectory::connect(config, &Policy::new(&s.guests_ou, &s.disabled_ou))
        .await
        .unwrap()
}

/// Raw LDAP for making and checking accounts.
struct Probe {
    ldap: Ldap,
}

impl Probe {
    async fn connect() -> Self {
        let s = samba();
        let tls = shadowsync_directory::tls_client_config(Some(&s.ca_file)).unwrap();
        let (conn, mut ldap) =
            LdapConnAsync::with_settings(LdapConnSettings::new().set_config(tls), &s.url)
                .await
                .unwrap();
        ldap3::drive!(conn);
        ldap.simple_bind(&s.bind_dn, &s.password)
            .await
            .unwrap()
            .success()
            .unwrap();
        Self { ldap }
    }

    /// A new OU of the test's own under the domain.
    async fn ou(&mut self, name: &str) -> String {
        let ou = dn::child("OU", &format!("{name} {}", unique()), &samba().base_dn);
        self.add(&ou, &[("objectClass", "organizationalUnit")])
            .await;
        ou
    }

    async fn add(&mut self, dn: &str, attrs: &[(&str, &str)]) {
        let attrs = attrs
            .iter()
            .map(|(k, v)| {
                (
                    k.as_bytes().to_vec(),
                    HashSet::from([v.as_bytes().to_vec()]),
                )
            })
            .collect();
        self.ldap.add(dn, attrs).await.unwrap().success().unwrap();
    }

    /// A user `CN=<cn>,<ou>` with these attributes; returns its DN and objectGUID.
    async fn user(&mut self, ou: &str, cn: &str, attrs: &[(&str, &str)]) -> (String, ObjectGuid) {
        let dn = dn::child("CN", cn, ou);
        let sam = format!("p{}", &unique()[..10]);
        let mut all = vec![("objectClass", "user"), ("sAMAccountName", sam.as_str())];
        all.extend_from_slice(attrs);
        self.add(&dn, &all).await;
        let guid = self.guid(&dn).await;
        (dn, guid)
    }

    async fn guid(&mut self, dn: &str) -> ObjectGuid {
        let (entries, _) = self
            .ldap
            .search(dn, Scope::Base, "(objectClass=*)", vec!["objectGUID"])
            .await
            .unwrap()
            .success()
            .unwrap();
        let e = SearchEntry::construct(entries.into_iter().next().unwrap());
        ObjectGuid::from_ad_bytes(&e.bin_attrs["objectGUID"][0]).unwrap()
    }

    async fn replace(&mut self, dn: &str, attribute: &str, value: &str) {
        let m = Mod::Replace(
            attribute.as_bytes().to_vec(),
            HashSet::from([value.as_bytes().to_vec()]),
        );
        self.ldap
            .modify(dn, vec![m])
            .await
            .unwrap()
            .success()
            .unwrap();
    }

    /// Moves `dn` under `ou`, keeping its RDN; returns the new DN.
    async fn move_to(&mut self, dn: &str, ou: &str) -> String {
        let rdn = format!("CN={}", dn::escape_value(&dn::first_value(dn).unwrap()));
        self.ldap
            .modifydn(dn, &rdn, true, Some(ou))
            .await
            .unwrap()
            .success()
            .unwrap();
        format!("{rdn},{ou}")
    }

    async fn delete(&mut self, dn: &str) {
        self.ldap.delete(dn).await.unwrap().success().unwrap();
    }
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
    let mut probe = Probe::connect().await;
    let ou = probe.ou("partners read").await;
    let upn = format!("pat.{}@partners.corp.example.test", unique());
    let (user_dn, guid) = probe
        .user(
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

    probe.replace(&user_dn, "userAccountControl", "512").await;
    probe.replace(&user_dn, "employeeType", "Staff").await;
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
    let mut probe = Probe::connect().await;
    let ou = probe
        .ou("partners, (hostile) + \"quoted\" \\ ; <x> #")
        .await;
    let cn = "#Ünïcødé, \"Pat\" + <Partner>; \\ =*)";
    let display = "*)(|(objectClass=*))\\00 ünïcødé 😀 \"q\" <a> & | ! ~";
    let company = "Fabrikam, Inc. \\ # + ; = *";
    let department = "R&D (partners)*\\";
    let filter = format!("(department={})", ldap3::ldap_escape(department));
    let (user_dn, guid) = probe
        .user(
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
    let changed = d
        .changed_partner_accounts(&ou, Some(&filter), &attrs, 0)
        .await
        .unwrap();
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
    let mut probe = Probe::connect().await;
    let ou = probe.ou("partners changes").await;
    let elsewhere = probe.ou("partners elsewhere").await;
    let (pat_dn, pat) = probe
        .user(&ou, "Pat", &[("employeeType", "Partner"), ("title", "A")])
        .await;
    let (sam_dn, sam) = probe.user(&ou, "Sam", &[("employeeType", "Partner")]).await;
    let (_, staff) = probe.user(&ou, "Staff", &[("employeeType", "Staff")]).await;
    // Not one level below the OU: a user in a child OU.
    let child = probe.ou_under("child", &ou).await;
    probe.user(&child, "Nested", &[]).await;

    let title = [PartnerAttribute::JobTitle];
    let first = d
        .changed_partner_accounts(&ou, FILTER, &title, 0)
        .await
        .unwrap();
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

    let quiet = d
        .changed_partner_accounts(&ou, FILTER, &title, first.highest_usn)
        .await
        .unwrap();
    assert!(quiet.accounts.is_empty(), "{:?}", quiet.accounts);
    assert_eq!(quiet.invocation_id, first.invocation_id);

    probe.replace(&pat_dn, "title", "B").await;
    probe.replace(&pat_dn, "employeeType", "Former").await;
    let moved = probe.move_to(&sam_dn, &elsewhere).await;
    let next = d
        .changed_partner_accounts(&ou, FILTER, &title, first.highest_usn)
        .await
        .unwrap();
    assert!(next.highest_usn > first.highest_usn);
    assert_eq!(next.accounts.len(), 1, "{:?}", next.accounts);
    let a = &next.accounts[0];
    assert_eq!(a.guid, pat);
    assert_eq!(value(a, PartnerAttribute::JobTitle), Some("B"));
    assert!(!a.matches_filter, "it left the filter: returned, marked");

    // The moved account is in no round of the OU any more, but still found by GUID.
    let all = d.changed_partner_accounts(&ou, None, &[], 0).await.unwrap();
    assert!(all.accounts.iter().all(|a| a.guid != sam));
    let there = d.partner_account(&sam, FILTER, &[]).await.unwrap().unwrap();
    assert!(dn::same(&there.dn, &moved), "{}", there.dn);
    assert!(there.matches_filter && !there.deleted);

    let after = d
        .changed_partner_accounts(&ou, FILTER, &title, next.highest_usn)
        .await
        .unwrap();
    assert!(after.accounts.is_empty(), "{:?}", after.accounts);
}

#[tokio::test]
async fn a_deleted_account_is_found_as_a_tombstone() {
    let dir = directory().await;
    let d: &dyn PartnerDirectory = &dir;
    let mut probe = Probe::connect().await;
    let ou = probe.ou("partners deleted").await;
    let other = probe.ou("partners other").await;
    let cn = "Gone, \"Pat\" + Ü";
    let (dn_, guid) = probe
        .user(
            &ou,
            cn,
            &[("employeeType", "Partner"), ("mail", "gone@fabrikam.com")],
        )
        .await;
    let (_, stays) = probe.user(&ou, "Stays", &[]).await;
    let (other_dn, other_guid) = probe.user(&other, "Other", &[]).await;
    let before = d.changed_partner_accounts(&ou, None, &[], 0).await.unwrap();
    assert_eq!(before.accounts.len(), 2);

    probe.delete(&dn_).await;
    probe.delete(&other_dn).await;

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

    let deleted = d
        .deleted_partner_accounts(&ou, before.highest_usn)
        .await
        .unwrap();
    assert_eq!(deleted, [guid], "only this OU's, not {other_guid}");
    assert!(!deleted.contains(&stays));
    assert_eq!(
        d.deleted_partner_accounts(&other, 0).await.unwrap(),
        [other_guid]
    );

    let after = d.changed_partner_accounts(&ou, None, &[], 0).await.unwrap();
    assert_eq!(
        after.accounts.iter().map(|a| a.guid).collect::<Vec<_>>(),
        [stays],
        "a tombstone is no account of the OU"
    );
    assert!(d
        .deleted_partner_accounts(&ou, after.highest_usn)
        .await
        .unwrap()
        .is_empty());
}

impl Probe {
    async fn ou_under(&mut self, name: &str, parent: &str) -> String {
        let ou = dn::child("OU", &format!("{name} {}", unique()), parent);
        self.add(&ou, &[("objectClass", "organizationalUnit")])
            .await;
        ou
    }
}
