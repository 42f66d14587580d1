//! The LDAP adapter against the real Samba AD DC: encryption, certificate verification, typed
//! errors, escaping, ownership and paging.

use secrecy::SecretString;
use shadowsync_core::{dn, Operation, ShadowAccount};
use shadowsync_directory::{DirectoryError, LdapDirectory};
use shadowsync_e2e::{guest, samba, text, unique, AdProbe};

async fn directory() -> LdapDirectory {
    LdapDirectory::connect(samba().directory_config(), &samba().policy())
        .await
        .unwrap()
}

#[tokio::test]
async fn starttls_with_ca_verification_works() {
    let s = samba();
    let mut config = s.directory_config();
    config.url = s.starttls_url.clone();
    let d = LdapDirectory::connect(config, &s.policy()).await.unwrap();
    assert!(
        dn::same(d.base_dn().await.unwrap(), &s.base_dn),
        "base DN read from the rootDSE"
    );
    assert!(d
        .find_by_sam_account_name("Administrator")
        .await
        .unwrap()
        .is_some());
}

#[tokio::test]
async fn a_certificate_from_another_ca_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    let other_ca = graph_sim::certs::rsa_certificate("Other CA");
    std::fs::write(&ca, &other_ca.certificate_pem).unwrap();
    for url in [samba().ldaps_url.clone(), samba().starttls_url.clone()] {
        let mut config = samba().directory_config();
        config.url = url.clone();
        config.ca_file = Some(ca.clone());
        let err = LdapDirectory::connect(config, &samba().policy())
            .await
            .unwrap_err();
        assert!(matches!(err, DirectoryError::Tls(_)), "{url}: {err:?}");
        assert!(!err.is_retryable());
    }
}

#[tokio::test]
async fn plain_ldap_without_tls_is_not_an_option() {
    let mut config = samba().directory_config();
    config.url = "ldapi:///var/run/x".into();
    let err = LdapDirectory::connect(config, &samba().policy())
        .await
        .unwrap_err();
    assert!(matches!(err, DirectoryError::Config(_)), "{err:?}");
}

#[tokio::test]
async fn a_wrong_password_is_invalid_credentials() {
    let mut config = samba().directory_config();
    config.bind_password = SecretString::from("wrong".to_string());
    let err = LdapDirectory::connect(config, &samba().policy())
        .await
        .unwrap_err();
    assert!(
        matches!(err, DirectoryError::InvalidCredentials(_)),
        "{err:?}"
    );
    assert!(!format!("{err:?}").contains(&samba().bind_password));
    assert!(err.is_retryable(), "jobs wait for the password to be fixed");
}

#[tokio::test]
async fn ad_result_codes_become_typed_errors() {
    let d = directory().await;
    let policy = samba().policy();
    let account = ShadowAccount::for_user(&guest("codes", "Codes"), &policy);
    d.create(&account).await.unwrap();

    // 68: the same DN again.
    let err = d.create(&account).await.unwrap_err();
    assert!(matches!(err, DirectoryError::AlreadyExists(_)), "{err:?}");

    // 19: another account with the same userPrincipalName.
    let mut twin = ShadowAccount::for_user(&guest("codes", "Twin"), &policy);
    twin.attributes.user_principal_name = account.attributes.user_principal_name.clone();
    let err = d.create(&twin).await.unwrap_err();
    assert!(
        matches!(err, DirectoryError::ConstraintViolation(_)),
        "{err:?}"
    );
    // The add failed as a whole: nothing half-made is left behind.
    assert!(d.find_by_anchor(&twin.anchor).await.unwrap().is_empty());

    // 32: the parent OU does not exist.
    let mut orphan = ShadowAccount::for_user(&guest("codes", "Orphan"), &policy);
    orphan.location.ou = format!("OU=Missing {},{}", unique(), samba().base_dn);
    let err = d.create(&orphan).await.unwrap_err();
    assert!(matches!(err, DirectoryError::NoSuchObject(_)), "{err:?}");

    // 34: a DN that is not one.
    let err = d.delete("this is not a DN").await.unwrap_err();
    assert!(matches!(err, DirectoryError::InvalidDnSyntax(_)), "{err:?}");
    assert!(
        !err.is_retryable(),
        "a malformed DN never gets better by retrying"
    );
}

#[tokio::test]
async fn filter_values_are_escaped() {
    let d = directory().await;
    // Unescaped, `*` would match every object with a UPN and `)(` would inject a clause.
    assert!(d.find_by_user_principal_name("*").await.unwrap().is_none());
    assert!(d
        .find_by_sam_account_name("*)(objectClass=*")
        .await
        .unwrap()
        .is_none());
    assert!(d.find_by_anchor("User_*").await.unwrap().is_empty());
}

#[tokio::test]
async fn objects_it_does_not_own_are_refused_before_anything_is_sent() {
    let d = directory().await;
    let mut probe = AdProbe::connect(samba()).await.unwrap();
    let policy = samba().policy();
    // An object inside the managed OU without the anchor, and one with an anchor outside it.
    let stray = format!("CN=Stray {},{}", unique(), samba().guests_ou);
    probe
        .add(
            &stray,
            vec![
                ("objectClass", "user"),
                ("sAMAccountName", &format!("s{}", unique())),
            ],
        )
        .await
        .unwrap();
    let before = probe
        .search(&format!("(distinguishedName={stray})"))
        .await
        .unwrap();
    let mut unanchored = d.list_accounts(&samba().guests_ou).await.unwrap();
    unanchored.retain(|a| dn::same(&a.dn, &stray));
    let stray_account = unanchored.pop().expect("listed");
    assert_eq!(stray_account.anchor, None);
    let err = d
        .apply(
            Some(&stray_account),
            &[Operation::Delete {
                reason: "test".into(),
            }],
            &policy,
        )
        .await
        .unwrap_err();
    assert!(matches!(err, DirectoryError::NotOwned { .. }), "{err:?}");

    let mut outside = stray_account.clone();
    outside.anchor = Some("User_x".into());
    outside.dn = format!("CN=Administrator,CN=Users,{}", samba().base_dn);
    let err = d
        .apply(
            Some(&outside),
            &[Operation::Delete {
                reason: "test".into(),
            }],
            &policy,
        )
        .await
        .unwrap_err();
    assert!(matches!(err, DirectoryError::NotOwned { .. }), "{err:?}");
    assert_eq!(
        before,
        probe
            .search(&format!("(distinguishedName={stray})"))
            .await
            .unwrap()
    );
}

#[tokio::test]
async fn listing_pages_through_more_entries_than_one_page() {
    let s = samba();
    let mut config = s.directory_config();
    config.page_size = 2;
    let d = LdapDirectory::connect(config, &s.policy()).await.unwrap();
    let ou = format!("OU=Paging {},{}", unique(), s.base_dn);
    let mut probe = AdProbe::connect(s).await.unwrap();
    probe
        .add(&ou, vec![("objectClass", "organizationalUnit")])
        .await
        .unwrap();
    for i in 0..7 {
        let mut account = ShadowAccount::for_user(
            &guest(&format!("page{i}"), &format!("Page {i}")),
            &s.policy(),
        );
        account.location.ou = ou.clone();
        d.create(&account).await.unwrap();
    }
    let listed = d.list_accounts(&ou).await.unwrap();
    assert_eq!(listed.len(), 7);
    assert!(listed
        .iter()
        .all(|a| a.anchor.as_deref().is_some_and(|v| v.starts_with("User_"))));
    assert!(listed.iter().all(|a| a.object_guid.is_some()));
}

#[tokio::test]
async fn created_accounts_read_back_as_written() {
    let d = directory().await;
    let mut probe = AdProbe::connect(samba()).await.unwrap();
    let account = ShadowAccount::for_user(
        &guest("readback", "Read, Back + \"Quoted\""),
        &samba().policy(),
    );
    let dn_ = d.create(&account).await.unwrap();
    let found = d.find_by_anchor(&account.anchor).await.unwrap();
    assert_eq!(found.len(), 1);
    let a = &found[0];
    assert!(dn::same(&a.dn, &dn_));
    assert_eq!(a.location, account.location);
    assert_eq!(a.attributes, account.attributes);
    assert_eq!(a.sam_account_name, account.sam_account_name);
    let (_, raw) = probe.by_anchor(&account.object_id).await.unwrap().unwrap();
    let guid = raw.get("objectguid").unwrap()[0].clone();
    assert_eq!(
        a.object_guid.as_deref(),
        Some(
            uuid::Uuid::from_slice_le(&guid)
                .unwrap()
                .to_string()
                .as_str()
        )
    );
    assert_eq!(text(&raw, "cn").unwrap(), account.location.cn);
    // Created enabled in its one add, with the password AD required for that.
    assert!(a.is_enabled(), "{}", a.user_account_control);
    assert_ne!(text(&raw, "pwdlastset").as_deref(), Some("0"));

    // Read back by DN: the same account as the search by anchor found.
    assert_eq!(d.read_account(&dn_).await.unwrap().as_ref(), Some(a));
    let missing = format!("CN=Nobody {},{}", unique(), samba().guests_ou);
    assert_eq!(d.read_account(&missing).await.unwrap(), None);
}
