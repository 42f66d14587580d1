//! The chaos suite: `shadowsync serve` on the test DC and the simulator through what production
//! does to it. Each test prints one row of the table `tests/chaos.sh` collects (`| scenario |
//! size | figures |`), and fails when a figure is wrong:
//!
//! - notifications duplicated three times and shuffled, while the guests change → 0 wrong final
//!   states, the queue back to 0;
//! - `kill -9` of serve at random moments of an initial sync → 0 duplicate, missing or half-made
//!   accounts;
//! - the DC unreachable (a TCP proxy the test cuts) while guests are invited and disabled → 0
//!   lost, 0 dead letters, all converged within a minute of recovery;
//! - Graph answering 30% 429/5xx → 0 lost, every `Retry-After` honoured;
//! - the scope group deleted, the tenant swapped, the permission removed, the clock a year
//!   ahead → at most the threshold disabled, 0 deleted, the reason in `status`.
//!
//! Sizes come from the environment (defaults: the reduced run of the test suite); the full run
//! is `tests/chaos.sh --full`: `SHADOWSYNC_CHAOS_GUESTS` (100) guests and
//! `SHADOWSYNC_CHAOS_NOTIFICATIONS` (1000) changes, `SHADOWSYNC_CHAOS_SYNC_GUESTS` (500) and
//! `SHADOWSYNC_CHAOS_KILLS` (20), `SHADOWSYNC_CHAOS_DC_OUTAGE` (600 s),
//! `SHADOWSYNC_CHAOS_GRAPH_FAULTS` (300 s), `SHADOWSYNC_CHAOS_SEED`.

use futures::StreamExt;
use graph_sim::users::BulkUsers;
use graph_sim::{FaultRule, SimConfig};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use shadowsync_core::account::uac;
use shadowsync_e2e::host::{in_ou, uac_of, Host, HostOptions, SETTLE};
use shadowsync_e2e::outage::Proxy;
use shadowsync_e2e::serve::{wait_until, Change, CLIENT_STATE};
use shadowsync_e2e::{samba, text, unique, RawEntry};
use std::collections::{BTreeMap, HashMap};
use std::net::ToSocketAddrs;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_shadowsync");

/// How big each scenario is.
struct Size {
    guests: usize,
    notifications: usize,
    sync_guests: usize,
    kills: usize,
    dc_outage: Duration,
    graph_faults: Duration,
    seed: u64,
}

impl Size {
    fn from_env() -> Self {
        let var = |name: &str, default: u64| -> u64 {
            std::env::var(name)
                .ok()
                .map(|v| v.parse().unwrap_or_else(|_| panic!("{name}={v}: a number")))
                .unwrap_or(default)
        };
        Size {
            guests: var("SHADOWSYNC_CHAOS_GUESTS", 20) as usize,
            notifications: var("SHADOWSYNC_CHAOS_NOTIFICATIONS", 120) as usize,
            sync_guests: var("SHADOWSYNC_CHAOS_SYNC_GUESTS", 80) as usize,
            kills: var("SHADOWSYNC_CHAOS_KILLS", 5) as usize,
            dc_outage: Duration::from_secs(var("SHADOWSYNC_CHAOS_DC_OUTAGE", 20)),
            graph_faults: Duration::from_secs(var("SHADOWSYNC_CHAOS_GRAPH_FAULTS", 20)),
            seed: var("SHADOWSYNC_CHAOS_SEED", 13),
        }
    }
}

/// With `SHADOWSYNC_CHAOS_DEBUG` set, what a scenario found wrong, on stderr.
fn debug(line: impl FnOnce() -> String) {
    if std::env::var_os("SHADOWSYNC_CHAOS_DEBUG").is_some() {
        eprintln!("{}", line());
    }
}

/// One row of the chaos table.
fn row(scenario: &str, size: &str, figures: &str) {
    println!("| {scenario} | {size} | {figures} |");
}

const ANCHORED: &str = "(adminDescription=User_*)";

/// Every account shadowsync owns in this host's OUs, by the objectId in its anchor.
async fn owned_accounts(h: &mut Host) -> HashMap<String, Vec<(String, RawEntry)>> {
    let (guests, disabled) = (h.serve.guests_ou.clone(), h.serve.disabled_ou.clone());
    let mut by_id: HashMap<String, Vec<_>> = HashMap::new();
    let mut found = h.probe.search_in(&guests, ANCHORED).await.unwrap();
    found.extend(h.probe.search_in(&disabled, ANCHORED).await.unwrap());
    for (dn_, entry) in found {
        let anchor = text(&entry, "admindescription").unwrap();
        let id = anchor.trim_start_matches("User_").to_string();
        by_id.entry(id).or_default().push((dn_, entry));
    }
    by_id
}

async fn status(h: &Host) -> Value {
    h.status().await
}

/// What Graph holds for a guest, as the test made it.
#[derive(Debug, Clone, PartialEq)]
struct Truth {
    name: String,
    enabled: bool,
}

/// Guests whose account does not match `truth`: enabled with the name, in the guests' OU, or
/// disabled in the disabled OU (a disabled account keeps its attributes until it is enabled
/// again, by design), or none for a guest disabled before it had one.
fn wrong_states(
    h: &Host,
    truth: &BTreeMap<String, Truth>,
    accounts: &HashMap<String, Vec<(String, RawEntry)>>,
) -> usize {
    let (enabled, disabled) = (h.enabled_in_guests(), h.disabled_in_disabled_ou());
    truth
        .iter()
        .filter(|(id, want)| {
            let account = match accounts.get(*id).map(Vec::as_slice) {
                Some([one]) => one,
                // Disabled before its first converge: no account is made for it.
                None if !want.enabled => return false,
                other => {
                    debug(|| format!("wrong: {id} has {:?}", other.map(|a| a.len())));
                    return true;
                }
            };
            let state_ok = if want.enabled {
                enabled(Some(account))
            } else {
                disabled(Some(account))
            };
            let wrong = !state_ok
                || (want.enabled
                    && text(&account.1, "displayname").as_deref() != Some(want.name.as_str()));
            if wrong {
                debug(|| {
                    format!(
                        "wrong: {id} want {want:?}, have {} {:?} {:?}",
                        account.0,
                        text(&account.1, "displayname"),
                        text(&account.1, "useraccountcontrol")
                    )
                });
            }
            wrong
        })
        .count()
}

/// Invites a guest named `name` (the display name) with a unique address.
async fn invite(h: &Host, name: &str) -> String {
    let mail = format!("{}@{}.example.com", unique(), unique());
    let user = h.graph.invite(&mail, name).await.unwrap();
    user["invitedUser"]["id"]
        .as_str()
        .or(user["id"].as_str())
        .unwrap()
        .to_string()
}

/// Settles: waits until `done` holds for the accounts and the queue is empty, up to `limit`.
/// Returns how long that took, or `None`.
async fn settle(
    h: &mut Host,
    limit: Duration,
    done: impl Fn(&Host, &HashMap<String, Vec<(String, RawEntry)>>) -> bool,
) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < limit {
        let accounts = owned_accounts(h).await;
        if done(h, &accounts) && status(h).await["queue"]["depth"] == 0 {
            return Some(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    None
}

/// The guests of a scenario that is not about the threshold are disabled by the hundred within
/// minutes, as no tenant does: the threshold would rightly hold them.
const NO_THRESHOLD: &str =
    "[safety]\nmax_disables_per_hour = 100000\nmax_deletes_per_hour = 100000\n";

/// Notifications only: no delta round or sweep after the start repairs what they miss.
const NOTIFICATIONS_ONLY: &str = "[reconciler]\ninterval = \"1h\"\nsweep_interval = \"1d\"\n";

#[tokio::test]
async fn duplicated_and_shuffled_notifications_leave_no_wrong_state() {
    let size = Size::from_env();
    let mut h = Host::start(BIN, &format!("{NOTIFICATIONS_ONLY}\n{NO_THRESHOLD}")).await;
    // The test delivers every notification itself: three times each, in random order.
    h.graph.set_notifications_lost(true).await.unwrap();
    let mut rng = StdRng::seed_from_u64(size.seed);
    let mut truth = BTreeMap::new();
    let mut changes = Vec::new();
    for i in 0..size.guests {
        let name = format!("Chaos dup {i}");
        let id = invite(&h, &name).await;
        truth.insert(
            id.clone(),
            Truth {
                name,
                enabled: true,
            },
        );
        changes.push((id, Change::Created));
    }
    let ids: Vec<String> = truth.keys().cloned().collect();
    while changes.len() < size.notifications {
        let id = ids[rng.gen_range(0..ids.len())].clone();
        changes.push((id, Change::Updated));
    }

    // Graph changes in chunks while the deliveries of earlier chunks arrive: each change
    // delivered three times, the third copy late (with the next chunk), all shuffled.
    let start = Instant::now();
    let mut late = Vec::new();
    let mut posted = 0;
    for (chunk_no, chunk) in changes.chunks(20).enumerate() {
        for (n, (id, change)) in chunk.iter().enumerate() {
            if *change == Change::Created {
                continue;
            }
            let want = truth.get_mut(id).unwrap();
            if rng.gen_bool(0.5) {
                want.name = format!("Chaos dup {chunk_no}.{n}");
                h.graph
                    .patch_user(id, json!({"displayName": want.name}))
                    .await
                    .unwrap();
            } else {
                want.enabled = !want.enabled;
                h.graph
                    .patch_user(id, json!({"accountEnabled": want.enabled}))
                    .await
                    .unwrap();
            }
        }
        let mut deliveries: Vec<(String, Change)> = std::mem::take(&mut late);
        deliveries.extend(chunk.iter().cloned());
        deliveries.extend(chunk.iter().cloned());
        late.extend(chunk.iter().cloned());
        deliveries.shuffle(&mut rng);
        posted += deliveries.len();
        post_all(&h, deliveries).await;
        // Some jobs start between chunks, so that later deliveries meet jobs waiting, running
        // and done.
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    late.shuffle(&mut rng);
    posted += late.len();
    post_all(&h, late).await;
    let posting = start.elapsed();

    let limit = SETTLE + Duration::from_millis(50 * size.notifications as u64);
    let settled = settle(&mut h, limit, |h, accounts| {
        wrong_states(h, &truth, accounts) == 0
    })
    .await;
    let accounts = owned_accounts(&mut h).await;
    let wrong = wrong_states(&h, &truth, &accounts);
    let s = status(&h).await;
    let (enqueued, folded) = (
        s["webhook"]["jobs_enqueued"].as_u64().unwrap_or(0),
        s["webhook"]["folded"].as_u64().unwrap_or(0),
    );
    row(
        "notifications ×3, shuffled, while guests change",
        &format!(
            "{} guests, {} changes, {posted} deliveries",
            size.guests, size.notifications
        ),
        &format!(
            "{wrong} wrong final states; {enqueued} jobs, {folded} folded; queue depth {}; {} dead letters; posted in {:.1} s, settled {:.1} s later",
            s["queue"]["depth"],
            s["queue"]["dead_letters"],
            posting.as_secs_f64(),
            settled.map_or(f64::NAN, |d| d.as_secs_f64()),
        ),
    );
    assert_eq!(wrong, 0, "wrong final states");
    assert!(settled.is_some(), "did not settle within {limit:?}: {s}");
    assert_eq!(s["queue"]["dead_letters"], 0, "{s}");
    assert!(folded > 0, "redeliveries folded: {s}");
}

/// Posts every delivery, eight at a time; each must be accepted.
async fn post_all(h: &Host, deliveries: Vec<(String, Change)>) {
    let statuses: Vec<u16> = futures::stream::iter(deliveries)
        .map(|(id, change)| async move { h.post_change(&id, change, CLIENT_STATE).await })
        .buffer_unordered(8)
        .collect()
        .await;
    assert!(statuses.iter().all(|s| *s == 202), "{statuses:?}");
}

/// What makes an account whole: everything shadowsync writes in its one add.
fn half_made(h: &Host, id: &str, (dn_, entry): &(String, RawEntry)) -> bool {
    let has = |a: &str| text(entry, a).is_some_and(|v| !v.is_empty());
    !(in_ou(dn_, &h.serve.guests_ou)
        && uac_of(entry) == uac::ENABLED
        && text(entry, "admindescription").as_deref() == Some(&format!("User_{id}"))
        && [
            "samaccountname",
            "userprincipalname",
            "displayname",
            "mail",
            "description",
        ]
        .iter()
        .all(|a| has(a)))
}

#[tokio::test]
async fn serve_killed_during_an_initial_sync_leaves_no_duplicate_missing_or_half_made_account() {
    let size = Size::from_env();
    let mut h = Host::start(BIN, "").await;
    h.graph.set_notifications_lost(true).await.unwrap();
    let ids = h
        .graph
        .bulk_users(&BulkUsers {
            guests: size.sync_guests,
            prefix: format!("k{}", unique()),
            ..BulkUsers::default()
        })
        .await
        .unwrap()
        .guests;
    // The initial sync: a job per guest (`sync` waits for the queue to drain; not here).
    let start = Instant::now();
    let _sync = h
        .serve
        .cli
        .command(&["sync"], &[])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    wait_until(SETTLE, || async { status(&h).await["queue"]["depth"] != 0 })
        .await
        .expect("the sync's jobs queued");
    let mut rng = StdRng::seed_from_u64(size.seed);
    let mut made_at_kills = Vec::new();
    for kill in 0..size.kills {
        // The first as soon as the jobs are queued (on a fresh DC an 80-guest sync is over in a
        // second or two); the others spread over what remains.
        let gap = if kill == 0 {
            0
        } else {
            rng.gen_range(300..3000)
        };
        tokio::time::sleep(Duration::from_millis(gap)).await;
        h.serve.kill().await.unwrap();
        made_at_kills.push(owned_accounts(&mut h).await.len());
        h.serve.spawn().await.unwrap();
    }
    let limit = SETTLE * 2 + Duration::from_millis(100 * size.sync_guests as u64);
    let settled = settle(&mut h, limit, |_, accounts| {
        ids.iter().all(|id| accounts.contains_key(id))
    })
    .await;
    let done = start.elapsed();
    let accounts = owned_accounts(&mut h).await;
    let missing = ids.iter().filter(|id| !accounts.contains_key(*id)).count();
    let duplicates: usize = accounts.values().map(|v| v.len().saturating_sub(1)).sum();
    let half = accounts
        .iter()
        .flat_map(|(id, v)| v.iter().map(move |a| (id, a)))
        .filter(|(id, a)| half_made(&h, id, a))
        .count();
    let s = status(&h).await;
    row(
        "kill -9 of serve during the initial sync",
        &format!("{} guests, {} kills", size.sync_guests, size.kills),
        &format!(
            "{duplicates} duplicate, {missing} missing, {half} half-made; accounts made at each kill {made_at_kills:?}; all made {:.1} s after the sync began; {} dead letters",
            done.as_secs_f64(),
            s["queue"]["dead_letters"],
        ),
    );
    assert_eq!((duplicates, missing, half), (0, 0, 0));
    assert!(settled.is_some(), "did not settle within {limit:?}: {s}");
    assert!(
        made_at_kills.iter().any(|made| *made < size.sync_guests) || size.kills == 0,
        "a kill fell during the sync: {made_at_kills:?}"
    );
    assert_eq!(s["queue"]["dead_letters"], 0, "{s}");
}

#[tokio::test]
async fn a_domain_controller_outage_loses_nothing() {
    let size = Size::from_env();
    let dc = url::Url::parse(&samba().ldaps_url).unwrap();
    let host = dc.host_str().unwrap().to_string();
    let upstream = (host.as_str(), dc.port().unwrap_or(636))
        .to_socket_addrs()
        .unwrap()
        .next()
        .unwrap();
    let proxy = Proxy::start(upstream).await.unwrap();
    let through_proxy = format!("ldaps://{host}:{}", proxy.addr.port());
    let mut h = Host::start_with(
        BIN,
        HostOptions {
            // A handful of attempts, as before: the outage must not exhaust them.
            config: "[provisioner]\nmax_attempts = 3\n",
            env: vec![("SHADOWSYNC_DIRECTORY_URL".into(), Some(through_proxy))],
            ..HostOptions::default()
        },
    )
    .await;
    let leaving = h.invite("outage-leaving").await;
    h.wait_for(
        &leaving,
        "an account before the outage",
        h.enabled_in_guests(),
    )
    .await;

    proxy.down();
    let down = Instant::now();
    let mut arriving = Vec::new();
    // Guests arrive through the outage, one every few seconds.
    let every = (size.dc_outage / 6).min(Duration::from_secs(30));
    while down.elapsed() + every < size.dc_outage && arriving.len() < 20 {
        arriving.push(
            h.invite(&format!("outage-arriving{}", arriving.len()))
                .await,
        );
        tokio::time::sleep(every).await;
    }
    h.graph
        .patch_user(&leaving, json!({"accountEnabled": false}))
        .await
        .unwrap();
    if let Some(left) = size.dc_outage.checked_sub(down.elapsed()) {
        tokio::time::sleep(left).await;
    }
    for id in &arriving {
        assert!(h.account(id).await.is_none(), "the DC was down");
    }

    proxy.up();
    let back = Instant::now();
    for id in &arriving {
        h.wait_for(id, "an account after the outage", h.enabled_in_guests())
            .await;
    }
    h.wait_for(
        &leaving,
        "disabled after the outage",
        h.disabled_in_disabled_ou(),
    )
    .await;
    let took = back.elapsed();
    // The jobs still in hand (a delta round's, for the same guests) finish too.
    wait_until(SETTLE, || async { h.status().await["queue"]["depth"] == 0 })
        .await
        .expect("the queue drains");
    let s = h.status().await;
    row(
        "DC unreachable (TCP proxy cut)",
        &format!(
            "{} s, {} invited and 1 disabled meanwhile",
            size.dc_outage.as_secs(),
            arriving.len()
        ),
        &format!(
            "0 lost; {} dead letters; all converged {:.1} s after the DC came back",
            s["queue"]["dead_letters"],
            took.as_secs_f64()
        ),
    );
    assert!(
        took < Duration::from_secs(60),
        "converged {took:?} after the DC came back"
    );
    assert_eq!(s["queue"]["dead_letters"], 0, "{s}");
}

#[tokio::test]
async fn graph_failing_thirty_percent_of_reads_loses_nothing_and_every_retry_after_is_honoured() {
    let size = Size::from_env();
    let config = format!("[reconciler]\ninterval = \"5s\"\n\n{NO_THRESHOLD}");
    let mut h = Host::start(BIN, &config).await;
    // About 30% of shadowsync's reads (the test's own writes go through): 429 with a
    // fractional Retry-After, 503 with one, 500 and 504 without.
    let read = |status: u16, p: f64, retry_after_ms: Option<u64>| FaultRule {
        path: "/v1.0/*".into(),
        method: Some("GET".into()),
        status: Some(status),
        retry_after_ms,
        probability: Some(p),
        ..FaultRule::default()
    };
    for rule in [
        read(429, 0.15, Some(1500)),
        read(503, 0.08, Some(1000)),
        read(500, 0.05, None),
        read(504, 0.05, None),
    ] {
        h.graph.set_fault(rule).await.unwrap();
    }
    let mut rng = StdRng::seed_from_u64(size.seed);
    let mut truth: BTreeMap<String, Truth> = BTreeMap::new();
    let start = Instant::now();
    let mut n = 0;
    while start.elapsed() < size.graph_faults {
        let name = format!("Chaos faults {n}");
        truth.insert(
            invite(&h, &name).await,
            Truth {
                name,
                enabled: true,
            },
        );
        if n % 3 == 2 {
            let ids: Vec<String> = truth.keys().cloned().collect();
            let id = &ids[rng.gen_range(0..ids.len())];
            let want = truth.get_mut(id).unwrap();
            want.enabled = !want.enabled;
            h.graph
                .patch_user(id, json!({"accountEnabled": want.enabled}))
                .await
                .unwrap();
        }
        n += 1;
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    let faults = h.graph.fault_stats().await.unwrap();
    h.graph.clear_faults().await.unwrap();
    let recovered = Instant::now();
    let settled = settle(&mut h, SETTLE * 2, |h, accounts| {
        wrong_states(h, &truth, accounts) == 0
    })
    .await;
    let accounts = owned_accounts(&mut h).await;
    let wrong = wrong_states(&h, &truth, &accounts);
    let s = status(&h).await;
    row(
        "Graph answering ~30% of reads with 429/5xx",
        &format!(
            "{} s, {} guests invited, {} changed",
            size.graph_faults.as_secs(),
            truth.len(),
            n / 3
        ),
        &format!(
            "{wrong} lost or wrong; {} faults injected ({} with Retry-After), {} retries before their Retry-After; {} dead letters; settled {:.1} s after the faults stopped",
            faults.injected,
            faults.with_retry_after,
            faults.early_retries,
            s["queue"]["dead_letters"],
            settled.map_or(f64::NAN, |_| recovered.elapsed().as_secs_f64()),
        ),
    );
    assert_eq!(wrong, 0, "lost or wrong: {s}");
    assert!(
        faults.injected > 0 && faults.with_retry_after > 0,
        "{faults:?}"
    );
    assert_eq!(faults.early_retries, 0, "Retry-After honoured");
    assert_eq!(s["queue"]["dead_letters"], 0, "{s}");
}

// The upstream faults: each would have every guest disabled, then deleted after the retention.

/// At most this many disables an hour in the upstream scenarios.
const THRESHOLD: usize = 2;
const UPSTREAM_GUESTS: usize = 5;

fn upstream_config() -> String {
    format!("[reconciler]\ninterval = \"2s\"\n\n[safety]\nmax_disables_per_hour = {THRESHOLD}\n")
}

/// Guests with an account each.
async fn guests_with_accounts(h: &mut Host, prefix: &str) -> Vec<String> {
    let mut ids = Vec::new();
    for i in 0..UPSTREAM_GUESTS {
        ids.push(h.invite(&format!("{prefix}{i}")).await);
    }
    for id in &ids {
        h.wait_for(id, "an account", h.enabled_in_guests()).await;
    }
    ids
}

/// Enabled, disabled and deleted accounts among `ids`.
async fn tally(h: &mut Host, ids: &[String]) -> (usize, usize, usize) {
    let accounts = owned_accounts(h).await;
    let (enabled, disabled) = (h.enabled_in_guests(), h.disabled_in_disabled_ou());
    let mut t = (0, 0, 0);
    for id in ids {
        match accounts.get(id).and_then(|v| v.first()) {
            Some(a) if enabled(Some(a)) => t.0 += 1,
            Some(a) if disabled(Some(a)) => t.1 += 1,
            Some(_) => {}
            None => t.2 += 1,
        }
    }
    t
}

fn upstream_row(fault: &str, (enabled, disabled, deleted): (usize, usize, usize), reason: &str) {
    row(
        fault,
        &format!("{UPSTREAM_GUESTS} guests, max_disables_per_hour = {THRESHOLD}"),
        &format!(
            "{disabled} disabled, {deleted} deleted, {enabled} still enabled; status: {reason}"
        ),
    );
}

/// Restarts serve with its configuration changed by `edit`.
async fn reconfigure(h: &mut Host, edit: impl FnOnce(String) -> String) {
    h.serve.stop().await.unwrap();
    let path = h.serve.cli.config_path.clone();
    let config = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, edit(config)).unwrap();
    h.serve.spawn().await.unwrap();
}

#[tokio::test]
async fn a_deleted_scope_group_disables_nobody_and_says_why() {
    let mut h = Host::start(BIN, &upstream_config()).await;
    let group = h.graph.create_group("Partners").await.unwrap();
    let group = group["id"].as_str().unwrap().to_string();
    let ids = guests_with_accounts(&mut h, "scoped").await;
    for id in &ids {
        h.graph.add_member(&group, id).await.unwrap();
    }
    // The scope group in the configuration, as an administrator would set it.
    reconfigure(&mut h, |c| {
        format!("{c}\n[policy]\nscope_group_id = \"{group}\"\n")
    })
    .await;

    h.graph.delete_group(&group).await.unwrap();
    // A full sync looks at everyone now.
    h.serve.cli.run(&["sync"], &[]).await.unwrap();
    wait_until(SETTLE, || async {
        status(&h).await["safety"]["held"] == UPSTREAM_GUESTS
    })
    .await
    .expect("every disable held");
    let t = tally(&mut h, &ids).await;
    let list = h.serve.cli.run(&["held", "list"], &[]).await.unwrap();
    let reason = "does not exist in Graph";
    upstream_row("scope group deleted", t, &format!("held: …{reason}"));
    assert!(list.contains(reason), "{list}");
    assert_eq!(t, (UPSTREAM_GUESTS, 0, 0));
    let s = status(&h).await;
    assert!(s["safety"]["tripped"].is_null(), "{s}");
}

#[tokio::test]
async fn a_configuration_pointed_at_another_tenant_disables_nobody_and_says_why() {
    let mut h = Host::start(BIN, &upstream_config()).await;
    let ids = guests_with_accounts(&mut h, "tenant").await;
    // One genuine disable: shadowsync records which tenant its accounts come from.
    h.graph.delete_user(&ids[0]).await.unwrap();
    h.wait_for(&ids[0], "disabled", h.disabled_in_disabled_ou())
        .await;

    // Another tenant, where none of these guests exist.
    let other = graph_sim::start(
        SimConfig {
            tenant_id: "0d5c4b3a-2f1e-4d0c-9b8a-7f6e5d4c3b2a".into(),
            ..SimConfig::default()
        },
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap();
    let (old_url, old_tenant) = (h.sim.base_url(), h.sim.config().tenant_id.clone());
    reconfigure(&mut h, |c| {
        c.replace(&old_url, &other.base_url())
            .replace(&old_tenant, &other.config().tenant_id)
    })
    .await;
    h.serve.cli.run(&["sync"], &[]).await.unwrap();
    // A user with an account is gone only when a second read, 30 s later, agrees.
    wait_until(SETTLE * 2, || async {
        status(&h).await["safety"]["held"] == UPSTREAM_GUESTS - 1
    })
    .await
    .expect("every disable held");
    let t = tally(&mut h, &ids).await;
    let list = h.serve.cli.run(&["held", "list"], &[]).await.unwrap();
    upstream_row(
        "configuration pointed at another tenant",
        (t.0, t.1 - 1, t.2),
        "held: the tenant differs from the one the accounts were made from",
    );
    assert!(list.contains(&other.config().tenant_id), "{list}");
    assert_eq!(t, (UPSTREAM_GUESTS - 1, 1, 0), "only the genuine disable");
}

#[tokio::test]
async fn a_removed_permission_disables_nobody_and_says_why() {
    let mut h = Host::start(BIN, &upstream_config()).await;
    let ids = guests_with_accounts(&mut h, "consent").await;
    h.graph.set_permission_removed(true).await.unwrap();
    // A full sync cannot even list the guests, and says so.
    let sync = h
        .serve
        .cli
        .run(&["sync"], &[])
        .await
        .unwrap_err()
        .to_string();
    assert!(sync.contains("403"), "{sync}");
    // Each guest's job (a notification, a sweep's) meets the refusal.
    for id in &ids {
        h.notify(id).await;
    }
    wait_until(SETTLE, || async {
        status(&h).await["graph_access"]["parked_jobs"]
            .as_u64()
            .is_some_and(|n| n >= UPSTREAM_GUESTS as u64)
    })
    .await
    .expect("the jobs parked");
    let t = tally(&mut h, &ids).await;
    let text = h.serve.cli.run(&["status"], &[]).await.unwrap();
    upstream_row(
        "permission removed",
        t,
        "GRAPH REFUSES access …, jobs parked",
    );
    assert!(text.contains("GRAPH REFUSES"), "{text}");
    assert_eq!(t, (UPSTREAM_GUESTS, 0, 0));

    // Consent given again: the parked jobs run, and still nothing is disabled.
    h.graph.set_permission_removed(false).await.unwrap();
    wait_until(SETTLE, || async {
        status(&h).await["graph_access"]["parked_jobs"] == 0
    })
    .await
    .expect("the parked jobs run once Graph answers");
    assert_eq!(tally(&mut h, &ids).await, (UPSTREAM_GUESTS, 0, 0));
}

/// libfaketime, which makes a process see another time (Debian's `faketime` package; tests/run.sh
/// installs it).
fn libfaketime() -> String {
    let candidates = [
        "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1",
        "/usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1",
        "/usr/lib/faketime/libfaketime.so.1",
    ];
    candidates
        .iter()
        .find(|p| std::path::Path::new(p).exists())
        .unwrap_or_else(|| {
            panic!("libfaketime not found in {candidates:?}: apt-get install faketime")
        })
        .to_string()
}

#[tokio::test]
async fn a_clock_a_year_ahead_deletes_nothing_and_says_why() {
    let mut h = Host::start(BIN, &upstream_config()).await;
    let ids = guests_with_accounts(&mut h, "clock").await;
    // One guest deleted in Graph: disabled now, deleted after the retention (30 days).
    h.graph.delete_user(&ids[0]).await.unwrap();
    h.wait_for(&ids[0], "disabled", h.disabled_in_disabled_ou())
        .await;

    // The host's clock jumps a year (the monotonic clock, which timers use, does not).
    h.serve.stop().await.unwrap();
    h.serve.cli.env.extend([
        ("LD_PRELOAD".to_string(), Some(libfaketime())),
        ("FAKETIME".to_string(), Some("+365d".to_string())),
        (
            "FAKETIME_DONT_FAKE_MONOTONIC".to_string(),
            Some("1".to_string()),
        ),
        ("FAKETIME_DONT_RESET".to_string(), Some("1".to_string())),
    ]);
    h.serve.spawn().await.unwrap();
    let year_ahead = chrono::Utc::now() + chrono::Duration::days(364);
    let swept_after_jump = || async {
        status(&h).await["last_sweep"]
            .as_str()
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            .is_some_and(|t| t > year_ahead)
    };
    wait_until(SETTLE, swept_after_jump)
        .await
        .expect("a sweep by the jumped clock");
    // Delta rounds every 2 s: a few of them, and a full sync.
    h.serve.cli.run(&["sync"], &[]).await.unwrap();
    wait_until(SETTLE, || async { status(&h).await["queue"]["depth"] == 0 })
        .await
        .expect("the queue drains");
    tokio::time::sleep(Duration::from_secs(5)).await;
    let t = tally(&mut h, &ids).await;
    let s = status(&h).await;
    let offset = s["clock_offset_seconds"].as_i64().unwrap_or(0);
    let text = h.serve.cli.run(&["status"], &[]).await.unwrap();
    upstream_row(
        "host clock a year ahead",
        (t.0, t.1 - 1, t.2),
        &format!(
            "CLOCK … {} days ahead of Microsoft Graph's",
            -offset / 86_400
        ),
    );
    assert_eq!(
        t,
        (UPSTREAM_GUESTS - 1, 1, 0),
        "nothing deleted, nothing disabled"
    );
    assert!(offset < -364 * 86_400, "{s}");
    assert!(text.contains("CLOCK"), "{text}");
}
