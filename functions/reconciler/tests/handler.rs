//! The reconciler's handler, called with the events its two schedules send (one fixture each),
//! on an application built from the test kit's fakes.

use serde_json::Value;
use shadowsync_app::{App, PartnerParts, PartnerSettings, Parts};
use shadowsync_core::partner::{Mode, PartnerAttribute, PartnerScope};
use shadowsync_core::Policy;
use shadowsync_queue::{EmbeddedQueue, Job, Queue};
use shadowsync_state::EmbeddedStore;
use shadowsync_testkit::{FakeDirectory, FakeGraph, FakeGuestGraph};
use std::sync::Arc;
use std::time::Duration;

const BASE: &str = "DC=corp,DC=example,DC=test";
const PARTNERS: &str = "OU=Partners,DC=corp,DC=example,DC=test";

fn fixture(name: &str) -> Value {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// An application with AD, and the partner direction when `partners`.
fn app(partners: bool) -> (App, Arc<FakeDirectory>, Arc<EmbeddedQueue>) {
    app_on(Arc::new(FakeGraph::new()), partners)
}

/// [`app`] on `graph`.
fn app_on(graph: Arc<FakeGraph>, partners: bool) -> (App, Arc<FakeDirectory>, Arc<EmbeddedQueue>) {
    let policy = Policy::new(
        format!("OU=Guests,{BASE}"),
        format!("OU=Disabled Guests,{BASE}"),
    );
    let directory = Arc::new(FakeDirectory::with_managed_ous(BASE, &policy).unwrap());
    directory.add_ou(PARTNERS).unwrap();
    let store = EmbeddedStore::in_memory().unwrap();
    let queue = Arc::new(EmbeddedQueue::new(&store, 3).unwrap());
    let mut parts = Parts::new(graph, Arc::new(store), queue.clone())
        .directory(directory.clone(), policy.clone());
    if partners {
        parts = parts.partners(PartnerParts {
            guests: Arc::new(FakeGuestGraph::new()),
            directory: directory.clone(),
            settings: PartnerSettings {
                mode: Mode::Invite,
                scope: PartnerScope {
                    ous: vec![PARTNERS.into()],
                    excluded_ous: vec![policy.guests_ou.clone(), policy.disabled_ou.clone()],
                    ..PartnerScope::default()
                },
                filter: None,
                link_attribute: "extensionAttribute15".into(),
                attributes: PartnerAttribute::ALL.to_vec(),
                redirect_url: "https://myapplications.microsoft.com/".into(),
                send_invitation_message: false,
                message_language: None,
            },
            poll_interval: Duration::from_secs(60),
        });
    }
    (App::from_parts(parts), directory, queue)
}

#[tokio::test]
async fn the_partner_schedule_runs_a_watcher_round() {
    let (app, directory, queue) = app(true);
    let guid = directory
        .add_partner(PARTNERS, "Pat", "pat", &[("mail", "pat@fabrikam.com")])
        .unwrap();
    let report =
        shadowsync_reconciler::handle(&app, &fixture("scheduler-partner-watch.json"), None)
            .await
            .unwrap();
    assert_eq!(report["full"], true, "{report}");
    assert_eq!(report["queued"], 1);
    let jobs = queue.receive(10, Duration::from_secs(30)).await.unwrap();
    assert!(
        matches!(&jobs[0].job, Job::Partner { guid: g, .. } if *g == guid),
        "{jobs:?}"
    );
}

#[tokio::test]
async fn without_the_partner_direction_the_watch_is_skipped_and_the_default_schedule_reconciles() {
    let (app, _, queue) = app(false);
    let skipped =
        shadowsync_reconciler::handle(&app, &fixture("scheduler-partner-watch.json"), None)
            .await
            .unwrap();
    assert!(skipped["skipped"].is_string(), "{skipped}");
    assert_eq!(queue.stats().await.unwrap().depth, 0);

    let report = shadowsync_reconciler::handle(&app, &fixture("scheduler-default.json"), None)
        .await
        .unwrap();
    assert!(report.get("skipped").is_none(), "{report}");
    assert!(report.is_object(), "a reconciliation report: {report}");
}

#[tokio::test]
async fn a_run_stops_its_delta_round_before_the_lambda_deadline_and_the_next_run_resumes_it() {
    let graph = Arc::new(FakeGraph::new());
    graph.set_delta_page_size(1);
    for n in 0..3 {
        graph.invite_guest(&format!("g{n}@fabrikam.com"));
    }
    let (app, _, queue) = app_on(graph, false);
    let event = fixture("scheduler-default.json");

    // Less than the margin left: the round reads one page, saves its place, and no sweep starts.
    let deadline = chrono::Utc::now() + shadowsync_reconciler::DEADLINE_MARGIN / 2;
    let report = shadowsync_reconciler::handle(&app, &event, Some(deadline))
        .await
        .unwrap();
    assert_eq!(report["delta"]["complete"], false, "{report}");
    assert_eq!(report["delta"]["pages"], 1, "{report}");
    assert!(report["sweep"].is_null(), "{report}");
    assert_eq!(queue.stats().await.unwrap().depth, 1);

    let report = shadowsync_reconciler::handle(&app, &event, None)
        .await
        .unwrap();
    let delta = &report["delta"];
    assert_eq!(
        (&delta["complete"], &delta["resumed"], &delta["full"]),
        (&true.into(), &true.into(), &true.into()),
        "{report}"
    );
    assert_eq!(
        (&delta["pages"], &delta["jobs_enqueued"]),
        (&3.into(), &3.into())
    );
    // The sweep the completed round made due leaves the guests to the round's jobs.
    let sweep = &report["sweep"];
    assert_eq!(
        (
            &sweep["guests_covered_by_full_round"],
            &sweep["jobs_enqueued"]
        ),
        (&true.into(), &0.into()),
        "never swept: {report}"
    );
    assert_eq!(
        queue.stats().await.unwrap().depth,
        3,
        "one delta job per guest"
    );
}
