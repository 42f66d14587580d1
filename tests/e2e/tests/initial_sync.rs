//! An initial sync of 1,000 guests: ten delta pages, 1,000 jobs, 1,000 accounts.

use futures::{StreamExt, TryStreamExt};
use graph_sim::SimConfig;
use shadowsync_core::account::uac;
use shadowsync_e2e::rig::{uac_of, Rig, RigOptions};
use std::time::Instant;

const GUESTS: usize = 1_000;

#[tokio::test]
async fn an_initial_sync_of_a_thousand_guests_converges_them_all() {
    let rig = Rig::with(RigOptions {
        sim: SimConfig {
            delta_page_size: 100,
            ..SimConfig::default()
        },
        ..RigOptions::default()
    })
    .await
    .unwrap();

    let started = Instant::now();
    let ids: Vec<String> = futures::stream::iter(0..GUESTS)
        .map(|i| {
            let rig = &rig;
            async move {
                rig.invite(&format!("bulk{i}"), &format!("Bulk Guest {i}"))
                    .await
            }
        })
        .buffer_unordered(16)
        .try_collect()
        .await
        .unwrap();
    eprintln!("invited {GUESTS} guests in {:?}", started.elapsed());

    let started = Instant::now();
    let report = rig.reconciler.run_delta().await.unwrap();
    eprintln!("run_delta: {report:?} in {:?}", started.elapsed());
    assert!(report.full);
    assert_eq!(report.pages, GUESTS / 100);
    assert_eq!(report.users_seen, GUESTS);
    assert_eq!(report.jobs_enqueued, GUESTS);

    let started = Instant::now();
    assert_eq!(rig.drain().await.unwrap(), GUESTS);
    eprintln!("drained {GUESTS} jobs in {:?}", started.elapsed());

    // Count by the anchors of our own ids (the DC is shared with other tests), 100 per search.
    let mut probe = shadowsync_e2e::AdProbe::connect(shadowsync_e2e::samba())
        .await
        .unwrap();
    let mut found = 0;
    for chunk in ids.chunks(100) {
        let filter: String = chunk
            .iter()
            .map(|id| format!("(adminDescription=User_{id})"))
            .collect();
        let entries = probe.search(&format!("(|{filter})")).await.unwrap();
        for (dn, entry) in &entries {
            assert_eq!(uac_of(entry) & uac::ACCOUNTDISABLE, 0, "{dn} is disabled");
            assert!(dn.ends_with(&rig.policy.guests_ou), "{dn}");
        }
        found += entries.len();
    }
    assert_eq!(found, GUESTS);

    // And nothing left to do.
    let again = rig.reconciler.run_delta().await.unwrap();
    assert_eq!((again.full, again.jobs_enqueued), (false, 0), "{again:?}");

    let started = Instant::now();
    rig.cleanup().await.unwrap();
    eprintln!("deleted the accounts in {:?}", started.elapsed());
}
