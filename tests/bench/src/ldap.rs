//! Plain LDAP on the shared test DC: the bench's own OUs (created, counted, deleted) and the
//! bare operations the baselines time. Nothing here goes through shadowsync's adapter.

use anyhow::{Context, Result};
use futures::StreamExt;
use ldap3::adapters::{EntriesOnly, PagedResults};
use ldap3::{ldap_escape, Ldap, LdapConnAsync, LdapConnSettings, Mod, Scope};
use rand::seq::SliceRandom;
use rand::Rng;
use shadowsync_core::account::{uac, DESCRIPTION_MARKER};
use shadowsync_e2e::Samba;
use std::collections::HashSet;
use std::time::{Duration, Instant};

pub async fn connect(samba: &Samba) -> Result<Ldap> {
    let tls = shadowsync_directory::tls_client_config(Some(&samba.ca_file))?;
    let settings = LdapConnSettings::new()
        .set_config(tls)
        .set_conn_timeout(Duration::from_secs(10));
    let (conn, mut ldap) = LdapConnAsync::with_settings(settings, &samba.ldaps_url).await?;
    ldap3::drive!(conn);
    ldap.simple_bind(&samba.bind_dn, &samba.bind_password)
        .await?
        .success()?;
    Ok(ldap)
}

fn value(name: &str, v: impl Into<Vec<u8>>) -> (Vec<u8>, HashSet<Vec<u8>>) {
    (name.as_bytes().to_vec(), HashSet::from([v.into()]))
}

/// Creates `OU=<name>,<base>`; returns its DN.
pub async fn create_ou(ldap: &mut Ldap, base_dn: &str, name: &str) -> Result<String> {
    let dn = format!("OU={name},{base_dn}");
    ldap.add(
        &dn,
        vec![
            value("objectClass", "organizationalUnit"),
            value("ou", name),
        ],
    )
    .await?
    .success()
    .with_context(|| format!("create {dn}"))?;
    Ok(dn)
}

/// DNs of the entries directly under `dn` matching `filter` (paged).
pub async fn children(ldap: &mut Ldap, dn: &str, filter: &str) -> Result<Vec<String>> {
    let adapters: Vec<Box<dyn ldap3::adapters::Adapter<_, _>>> = vec![
        Box::new(EntriesOnly::new()),
        Box::new(PagedResults::new(1000)),
    ];
    let mut stream = ldap
        .streaming_search_with(adapters, dn, Scope::OneLevel, filter, vec!["1.1"])
        .await?;
    let mut dns = Vec::new();
    while let Some(entry) = stream.next().await? {
        dns.push(ldap3::SearchEntry::construct(entry).dn);
    }
    stream.finish().await.success()?;
    Ok(dns)
}

/// Accounts directly under `ou` with `userAccountControl` = shadowsync's enabled value.
pub async fn count_enabled(ldap: &mut Ldap, ou: &str) -> Result<usize> {
    let filter = format!("(&(objectClass=user)(userAccountControl={}))", uac::ENABLED);
    Ok(children(ldap, ou, &filter).await?.len())
}

/// Deletes `ou` and everything directly in it, one entry at a time (a single tree delete would
/// hold the DC, which other test runs share, for minutes). Missing OUs are fine. Returns how
/// many entries were deleted and how long it took.
pub async fn delete_ou(ldap: &Ldap, ou: &str) -> Result<(usize, Duration)> {
    let started = Instant::now();
    let mut conn = ldap.clone();
    let dns = match children(&mut conn, ou, "(objectClass=*)").await {
        Ok(dns) => dns,
        Err(e) if no_such_object(&e) => return Ok((0, started.elapsed())),
        Err(e) => return Err(e),
    };
    let count = dns.len();
    let results: Vec<Result<()>> = futures::stream::iter(dns)
        .map(|dn| {
            let mut conn = ldap.clone();
            async move {
                conn.delete(&dn)
                    .await?
                    .success()
                    .with_context(|| format!("delete {dn}"))?;
                Ok(())
            }
        })
        .buffer_unordered(4)
        .collect()
        .await;
    results.into_iter().collect::<Result<Vec<()>>>()?;
    conn.delete(ou)
        .await?
        .success()
        .with_context(|| format!("delete {ou}"))?;
    Ok((count + 1, started.elapsed()))
}

fn no_such_object(e: &anyhow::Error) -> bool {
    matches!(
        e.downcast_ref::<ldap3::LdapError>(),
        Some(ldap3::LdapError::LdapResult { result }) if result.rc == 32
    )
}

/// A password like shadowsync's: 40 characters with every class AD's complexity rule counts.
pub fn random_password() -> String {
    let mut rng = rand::thread_rng();
    let classes: [&[u8]; 4] = [
        b"ABCDEFGHJKLMNPQRSTUVWXYZ",
        b"abcdefghijkmnopqrstuvwxyz",
        b"23456789",
        b"!#%+-.:=?@^_~",
    ];
    let all: Vec<u8> = classes.concat();
    let mut chars: Vec<u8> = classes
        .iter()
        .map(|c| c[rng.gen_range(0..c.len())])
        .collect();
    chars.extend((chars.len()..40).map(|_| all[rng.gen_range(0..all.len())]));
    chars.shuffle(&mut rng);
    String::from_utf8(chars).expect("ASCII")
}

/// `unicodePwd`: the password in double quotes, UTF-16LE.
pub fn unicode_pwd(password: &str) -> Vec<u8> {
    format!("\"{password}\"")
        .encode_utf16()
        .flat_map(u16::to_le_bytes)
        .collect()
}

/// The attributes of a shadow account as shadowsync writes them, for guest number `i`.
pub struct SyntheticAccount {
    pub dn: String,
    pub attrs: Vec<(&'static str, String)>,
}

pub fn synthetic_account(ou: &str, tag: &str, i: usize) -> SyntheticAccount {
    let id = uuid::Uuid::new_v4().to_string();
    let tail = &id[id.len() - 12..];
    let email = format!("x{i}.{tag}@baseline.example");
    let upn = format!("{}#EXT#@contoso.onmicrosoft.com", email.replace('@', "_"));
    let cn = format!("Baseline {i} {tag}_{tail}");
    let sam: String = format!("x{i}.{tag}_baseline").chars().take(20).collect();
    SyntheticAccount {
        dn: format!("CN={cn},{ou}"),
        attrs: vec![
            ("objectClass", "user".into()),
            ("cn", cn),
            ("sAMAccountName", sam),
            ("adminDescription", format!("User_{id}")),
            (shadowsync_directory::EXTERNAL_ID, format!("User_{id}")),
            ("userPrincipalName", upn),
            ("displayName", format!("Baseline {i} {tag}")),
            ("givenName", "Baseline".into()),
            ("sn", format!("{i} {tag}")),
            ("mail", email),
            ("description", DESCRIPTION_MARKER.into()),
        ],
    }
}

/// The bare cost of what AD requires for a new enabled account, without shadowsync: add
/// (disabled), set the password, enable. Returns the time of the three writes.
pub async fn create_three_writes(ldap: &mut Ldap, account: &SyntheticAccount) -> Result<Duration> {
    let mut attrs: Vec<(Vec<u8>, HashSet<Vec<u8>>)> = account
        .attrs
        .iter()
        .map(|(k, v)| value(k, v.as_bytes()))
        .collect();
    attrs.push(value(
        "userAccountControl",
        (uac::NORMAL_ACCOUNT | uac::ACCOUNTDISABLE).to_string(),
    ));
    let started = Instant::now();
    ldap.add(&account.dn, attrs).await?.success()?;
    ldap.modify(
        &account.dn,
        vec![Mod::Replace(
            b"unicodePwd".to_vec(),
            HashSet::from([unicode_pwd(&random_password())]),
        )],
    )
    .await?
    .success()?;
    ldap.modify(
        &account.dn,
        vec![Mod::Replace(
            b"userAccountControl".to_vec(),
            HashSet::from([uac::ENABLED.to_string().into_bytes()]),
        )],
    )
    .await?
    .success()?;
    Ok(started.elapsed())
}

/// The same account in one add: the password and the final `userAccountControl` in the add
/// itself (AD accepts `unicodePwd` in an add over an encrypted connection).
pub async fn create_one_add(ldap: &mut Ldap, account: &SyntheticAccount) -> Result<Duration> {
    let mut attrs: Vec<(Vec<u8>, HashSet<Vec<u8>>)> = account
        .attrs
        .iter()
        .map(|(k, v)| value(k, v.as_bytes()))
        .collect();
    attrs.push(value("userAccountControl", uac::ENABLED.to_string()));
    attrs.push(value("unicodePwd", unicode_pwd(&random_password())));
    let started = Instant::now();
    ldap.add(&account.dn, attrs).await?.success()?;
    Ok(started.elapsed())
}

/// The attributes converge reads for an account.
pub const ACCOUNT_ATTRS: [&str; 11] = [
    "cn",
    "sAMAccountName",
    "userPrincipalName",
    "displayName",
    "givenName",
    "sn",
    "mail",
    "description",
    "userAccountControl",
    "objectGUID",
    "adminDescription",
];

/// The time of one domain-wide search for `filter` (attributes as converge asks for them).
pub async fn time_search(ldap: &mut Ldap, base_dn: &str, filter: &str) -> Result<Duration> {
    let started = Instant::now();
    ldap.search(
        base_dn,
        Scope::Subtree,
        filter,
        vec!["objectGUID", "adminDescription"],
    )
    .await?
    .success()?;
    Ok(started.elapsed())
}

/// Median search latencies (ms) of the lookups converge makes, for values nobody holds, so
/// that every search reads the same (empty) answer.
#[derive(Debug, Clone, Copy, Default)]
pub struct Lookups {
    /// By anchor (`adminDescription`, not indexed in AD's default schema), with shadowsync's
    /// filter.
    pub anchor: f64,
    /// By the indexed anchor (`msDS-ExternalDirectoryObjectId`), with shadowsync's filter.
    pub indexed_anchor: f64,
    /// By UPN (indexed).
    pub upn: f64,
}

pub async fn lookup_latency(ldap: &mut Ldap, base_dn: &str, n: usize) -> Result<Lookups> {
    let (mut anchor, mut upn) = (Vec::new(), Vec::new());
    let mut indexed = Vec::new();
    for _ in 0..n {
        let id = uuid::Uuid::new_v4();
        let value = format!("User_{id}");
        let a = shadowsync_directory::anchor_filter("adminDescription", &value);
        anchor.push(time_search(ldap, base_dn, &a).await?.as_secs_f64() * 1000.0);
        let i = shadowsync_directory::indexed_anchor_filter(
            shadowsync_directory::EXTERNAL_ID,
            "adminDescription",
            &value,
        );
        indexed.push(time_search(ldap, base_dn, &i).await?.as_secs_f64() * 1000.0);
        let u = format!(
            "(userPrincipalName={})",
            ldap_escape(format!("{id}@nobody.example"))
        );
        upn.push(time_search(ldap, base_dn, &u).await?.as_secs_f64() * 1000.0);
    }
    let median = crate::stats::median;
    Ok(Lookups {
        anchor: median(&anchor),
        indexed_anchor: median(&indexed),
        upn: median(&upn),
    })
}

/// The anchor filter shadowsync used before this benchmark: `objectClass` alone, whose index
/// holds the deleted users too.
pub fn anchor_filter_by_class(anchor: &str) -> String {
    format!(
        "(&(objectClass=user)(adminDescription={}))",
        ldap_escape(anchor)
    )
}

/// User objects in the domain: live ones, and deleted ones (tombstones keep their objectClass,
/// so an index lookup on it meets them too).
pub async fn count_domain_users(ldap: &mut Ldap, base_dn: &str) -> Result<(usize, usize)> {
    let live = count_users(ldap, base_dn, Scope::Subtree, false).await?;
    let deleted_objects = format!("CN=Deleted Objects,{base_dn}");
    let deleted = count_users(ldap, &deleted_objects, Scope::OneLevel, true).await?;
    Ok((live, deleted))
}

async fn count_users(ldap: &Ldap, base: &str, scope: Scope, deleted: bool) -> Result<usize> {
    let adapters: Vec<Box<dyn ldap3::adapters::Adapter<_, _>>> = vec![
        Box::new(EntriesOnly::new()),
        Box::new(PagedResults::new(1000)),
    ];
    let mut conn = ldap.clone();
    if deleted {
        // LDAP_SERVER_SHOW_DELETED_OID
        conn.with_controls(ldap3::controls::RawControl {
            ctype: "1.2.840.113556.1.4.417".into(),
            crit: true,
            val: None,
        });
    }
    let mut stream = conn
        .streaming_search_with(adapters, base, scope, "(objectClass=user)", vec!["1.1"])
        .await?;
    let mut n = 0;
    while stream.next().await?.is_some() {
        n += 1;
    }
    stream.finish().await.success()?;
    Ok(n)
}
