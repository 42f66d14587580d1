//! The soak test: `shadowsync serve` against the simulator with every sometimes-switch on at
//! once (replication lag, fractional `Retry-After` and random throttling, spontaneous
//! reauthorization, delta duplicates / partial items / empty pages, stale delta tokens, lost,
//! duplicated and reordered notifications, windows without permission) while guests live
//! their lives over simulated weeks (renewals, reauthorizations, token resets). At the end AD
//! must match Graph exactly, and no job may be dead-lettered.
//!
//! Size: `SHADOWSYNC_SOAK_GUESTS` (default 40) guests at the start, `SHADOWSYNC_SOAK_DAYS`
//! (default 14) simulated days, `SHADOWSYNC_SOAK_SEED` (default 7). README states a full run's
//! figures (`SHADOWSYNC_SOAK_GUESTS=300 SHADOWSYNC_SOAK_DAYS=28`).

use graph_sim::{DeltaQuirks, FaultRule, RetryAfterStyle, StaleDeltaTokens};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;
use shadowsync_core::account::uac;
use shadowsync_e2e::host::{in_ou, uac_of, Host};
use shadowsync_e2e::{samba, text, AdProbe, RawEntry};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_shadowsync");
/// Graph's time moves this much per step.
const STEP: Duration = Duration::from_secs(6 * 3600);
const CONFIG: &str = r#"[reconciler]
interval = "2s"

[subscriptions]
check_interval = "1s"
renew_margin = "26d"

# Weeks of simulated changes pass in minutes of real time, and the threshold counts real hours.
[safety]
max_disables_per_hour = 100000
max_deletes_per_hour = 100000
"#;

/// What Graph holds for one user, as the test made it.
#[derive(Debug, Clone, PartialEq)]
enum Truth {
    Guest { name: String, enabled: bool },
    SoftDeleted { name: String, enabled: bool },
    Member,
    Purged,
}

/// What AD must then hold.
#[derive(Debug, PartialEq)]
enum Expected {
    Enabled(String),
    Disabled,
    Absent,
}

impl Truth {
    fn expected(&self) -> Expected {
        match self {
            Truth::Guest {
                name,
                enabled: true,
            } => Expected::Enabled(name.clone()),
            Truth::Guest { .. } | Truth::SoftDeleted { .. } | Truth::Member => Expected::Disabled,
            Truth::Purged => Expected::Absent,
        }
    }
}

fn env_or(key: &str, default: u64) -> u64 {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[derive(Default, Debug)]
struct Figures {
    operations: u64,
    invitations: u64,
    stale_resets: u64,
    refusal_windows: u64,
    lost_windows: u64,
    expirations_seen: BTreeSet<String>,
}

#[tokio::test]
async fn weeks_of_a_harsh_graph_leave_ad_exactly_like_graph() {
    let guests = env_or("SHADOWSYNC_SOAK_GUESTS", 40) as usize;
    let days = env_or("SHADOWSYNC_SOAK_DAYS", 14);
    let mut rng = StdRng::seed_from_u64(env_or("SHADOWSYNC_SOAK_SEED", 7));
    let started = Instant::now();
    let h = Host::start(BIN, CONFIG).await;
    let mut truth: BTreeMap<String, Truth> = BTreeMap::new();
    let mut figures = Figures::default();

    for n in 0..guests {
        let name = format!("Soak {n}");
        truth.insert(
            h.invite(&name).await,
            Truth::Guest {
                name,
                enabled: true,
            },
        );
    }
    figures.invitations = guests as u64;

    // Every sometimes-switch at once, from here to the end.
    let g = &h.graph;
    g.set_replication_lag(2.0).await.unwrap();
    g.set_retry_after_style(RetryAfterStyle::Fractional)
        .await
        .unwrap();
    g.set_spontaneous_reauthorization(12.0 * 3600.0)
        .await
        .unwrap();
    g.set_delta_quirks(DeltaQuirks {
        duplicates: true,
        partial_items: true,
        empty_pages: true,
    })
    .await
    .unwrap();
    g.set_switches(json!({"duplicateNotifications": true, "reorderNotifications": true}))
        .await
        .unwrap();
    g.set_fault(FaultRule {
        method: Some("GET".into()),
        probability: Some(0.05),
        ..FaultRule::throttle_next("/v1.0/users/*", 1, u64::MAX)
    })
    .await
    .unwrap();

    let mut probe = AdProbe::connect(samba()).await.unwrap();
    let mut ever_had_account = BTreeSet::new();
    let steps = days * 24 * 3600 / STEP.as_secs();
    let ops_per_step = (guests / 10).max(3);
    for step in 0..steps {
        let lose = rng.gen_bool(0.15);
        if lose {
            figures.lost_windows += 1;
            h.graph.set_notifications_lost(true).await.unwrap();
        }
        for _ in 0..ops_per_step {
            act(&h, &mut rng, &mut truth, &mut figures).await;
        }
        if lose {
            h.graph.set_notifications_lost(false).await.unwrap();
        }
        if step % 5 == 4 {
            let stale = [
                StaleDeltaTokens::Gone,
                StaleDeltaTokens::BadRequest,
                StaleDeltaTokens::ResyncRequired,
            ][rng.gen_range(0..3)];
            h.graph.set_stale_delta_tokens(Some(stale)).await.unwrap();
            figures.stale_resets += 1;
        }
        if step % 10 == 9 {
            // A window without permission: whatever happens meanwhile must wait, not break.
            figures.refusal_windows += 1;
            h.graph.set_permission_removed(true).await.unwrap();
            tokio::time::sleep(Duration::from_secs(2)).await;
            h.graph.set_permission_removed(false).await.unwrap();
        }
        h.graph.advance_time(STEP.as_secs_f64()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        ever_had_account.extend(accounts(&mut probe, &h).await.into_keys());
        for s in h.sim_subscriptions().await {
            figures
                .expirations_seen
                .insert(s["expirationDateTime"].to_string());
        }
    }

    // Graph is left alone (the switches stay on); AD must come to match it exactly.
    let settle_from = Instant::now();
    loop {
        let wrong = mismatches(&mut probe, &h, &truth, &ever_had_account).await;
        if wrong.is_empty() {
            break;
        }
        assert!(
            settle_from.elapsed() < Duration::from_secs(240),
            "AD does not match Graph: {} guests differ: {wrong:#?}",
            wrong.len()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let settle = settle_from.elapsed();

    let left = accounts(&mut probe, &h).await;
    let unreported: Vec<&String> = truth
        .iter()
        .filter(|(id, t)| **t == Truth::Purged && left.contains_key(*id))
        .map(|(id, _)| id)
        .collect();
    let unreported_purges = unreported.len();
    let status = h.status().await;
    assert_eq!(status["queue"]["dead_letters"], 0, "{status}");
    let subs = h.sim_subscriptions().await;
    assert_eq!(subs.len(), 1, "one subscription: {subs:?}");
    let log = h.graph.delivery_log().await.unwrap();
    // Items, not deliveries: Graph batches notifications (one delivery, several items).
    let count = |kind: &str, outcome: &str| -> usize {
        log.iter()
            .filter(|r| r["kind"] == kind && r["outcome"] == outcome)
            .map(|r| r["body"]["value"].as_array().map_or(1, Vec::len))
            .sum()
    };
    let by_state = truth.values().fold(BTreeMap::new(), |mut m, t| {
        *m.entry(
            format!("{:?}", t.expected())
                .split('(')
                .next()
                .unwrap()
                .to_string(),
        )
        .or_insert(0) += 1;
        m
    });
    println!(
        "soak: {} users ({} invited), {days} simulated days in {steps} steps, {} operations; \
         {} notifications delivered, {} lost, {} denied; {} reauthorization requests delivered; \
         {} subscription expirations seen (renewals + 1); {} delta resets; {} windows without \
         permission; {} windows of lost notifications; end state {by_state:?} ({} unreported \
         purges left disabled); \
         {:.0} s in all, AD matched Graph {:.1} s after the last change",
        truth.len(),
        figures.invitations,
        figures.operations,
        count("notification", "delivered"),
        count("notification", "lost"),
        count("notification", "denied"),
        count("lifecycle", "delivered"),
        figures.expirations_seen.len(),
        figures.stale_resets,
        figures.refusal_windows,
        figures.lost_windows,
        unreported_purges,
        started.elapsed().as_secs_f64(),
        settle.as_secs_f64(),
    );
    assert!(
        figures.expirations_seen.len() >= 2,
        "the subscription was renewed"
    );
    assert!(count("lifecycle", "delivered") >= 2, "reauthorizations");
}

/// One random change to Graph, recorded in `truth`.
async fn act(h: &Host, rng: &mut StdRng, truth: &mut BTreeMap<String, Truth>, f: &mut Figures) {
    f.operations += 1;
    let ids: Vec<String> = truth.keys().cloned().collect();
    let id = ids[rng.gen_range(0..ids.len())].clone();
    let g = &h.graph;
    let roll = rng.gen_range(0..100);
    match truth[&id].clone() {
        _ if roll < 8 => {
            let name = format!("Soak {}", truth.len());
            let new = h.invite(&name).await;
            f.invitations += 1;
            truth.insert(
                new,
                Truth::Guest {
                    name,
                    enabled: true,
                },
            );
        }
        Truth::Guest { name, enabled } => match roll {
            8..=44 => {
                let name = format!("{name} r{}", rng.gen_range(0..1000));
                g.patch_user(&id, json!({"displayName": name}))
                    .await
                    .unwrap();
                truth.insert(id, Truth::Guest { name, enabled });
            }
            45..=69 => {
                g.patch_user(&id, json!({"accountEnabled": !enabled}))
                    .await
                    .unwrap();
                truth.insert(
                    id,
                    Truth::Guest {
                        name,
                        enabled: !enabled,
                    },
                );
            }
            70..=89 => {
                g.delete_user(&id).await.unwrap();
                truth.insert(id, Truth::SoftDeleted { name, enabled });
            }
            _ => {
                g.patch_user(&id, json!({"userType": "Member"}))
                    .await
                    .unwrap();
                truth.insert(id, Truth::Member);
            }
        },
        Truth::SoftDeleted { name, enabled } => {
            if roll < 60 {
                g.restore_user(&id).await.unwrap();
                truth.insert(id, Truth::Guest { name, enabled });
            } else {
                g.purge_user(&id).await.unwrap();
                truth.insert(id, Truth::Purged);
            }
        }
        Truth::Member | Truth::Purged => f.operations -= 1,
    }
}

/// The accounts in the host's managed OUs, by anchor.
async fn accounts(probe: &mut AdProbe, h: &Host) -> BTreeMap<String, (String, RawEntry)> {
    probe
        .search("(adminDescription=User_*)")
        .await
        .unwrap()
        .into_iter()
        .filter(|(dn, _)| in_ou(dn, &h.serve.guests_ou) || in_ou(dn, &h.serve.disabled_ou))
        .filter_map(|(dn, e)| {
            let anchor = text(&e, "adminDescription")?;
            Some((anchor.strip_prefix("User_")?.to_string(), (dn, e)))
        })
        .collect()
}

/// Every guest whose account is not what Graph says it must be: `(id, expected, found)`.
/// Two answers are right in two cases, both by design: a guest disabled (or deleted, or made a
/// member) before shadowsync ever gave them an account has none; a purge Graph never reported
/// (its notification lost, then a full round, which lists only who exists) leaves the
/// account disabled until retention, since a 404 alone never deletes.
async fn mismatches(
    probe: &mut AdProbe,
    h: &Host,
    truth: &BTreeMap<String, Truth>,
    ever_had_account: &BTreeSet<String>,
) -> Vec<(String, String, String)> {
    let accounts = accounts(probe, h).await;
    let mut wrong = Vec::new();
    for (id, t) in truth {
        let found = accounts.get(id);
        let disabled =
            |dn: &str, e: &RawEntry| uac_of(e) == uac::DISABLED && in_ou(dn, &h.serve.disabled_ou);
        let ok = match (t.expected(), found) {
            (Expected::Absent, None) => true,
            (Expected::Absent, Some((dn, e))) => disabled(dn, e),
            (Expected::Enabled(name), Some((dn, e))) => {
                uac_of(e) == uac::ENABLED
                    && in_ou(dn, &h.serve.guests_ou)
                    && text(e, "displayName").as_deref() == Some(name.as_str())
            }
            (Expected::Disabled, Some((dn, e))) => disabled(dn, e),
            (Expected::Disabled, None) => !ever_had_account.contains(id),
            (Expected::Enabled(_), None) => false,
        };
        if !ok {
            wrong.push((
                id.clone(),
                format!("{:?}", t.expected()),
                found.map_or("no account".into(), |(dn, e)| {
                    format!("{dn} uac={:#x} {:?}", uac_of(e), text(e, "displayName"))
                }),
            ));
        }
    }
    wrong
}
