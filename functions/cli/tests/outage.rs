//! `shadowsync serve` through a domain controller outage: the DC is reached through a TCP proxy
//! the test cuts (every connection closed, new ones refused, as in a reboot for patching) while
//! guests are invited and disabled. Nothing may be lost or dead-lettered, and everything must
//! converge soon after the DC answers again.

use shadowsync_e2e::host::{Host, HostOptions, SETTLE};
use shadowsync_e2e::outage::Proxy;
use shadowsync_e2e::samba;
use shadowsync_e2e::serve::wait_until;
use std::net::ToSocketAddrs;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_shadowsync");
/// Long enough to exhaust the retries of old (a handful of attempts from 2 s), short for CI.
const OUTAGE: Duration = Duration::from_secs(20);

#[tokio::test]
async fn a_domain_controller_outage_loses_nothing() {
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
    let mut arriving = Vec::new();
    for n in 0..3 {
        arriving.push(h.invite(&format!("outage-arriving{n}")).await);
    }
    h.graph
        .patch_user(&leaving, serde_json::json!({"accountEnabled": false}))
        .await
        .unwrap();
    tokio::time::sleep(OUTAGE).await;
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
    eprintln!("outage: converged {took:?} after the DC came back");
    assert!(
        took < Duration::from_secs(60),
        "converged {took:?} after the DC came back"
    );
    // The jobs still in hand (a delta round's, for the same guests) finish too.
    wait_until(SETTLE, || async { h.status().await["queue"]["depth"] == 0 })
        .await
        .expect("the queue drains");
    let status = h.status().await;
    assert_eq!(status["queue"]["dead_letters"], 0, "{status}");
}
