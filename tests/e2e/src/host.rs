//! A `shadowsync serve` host for end-to-end tests: its own simulator, its own managed OUs in
//! the test DC, a probe to read AD, and the waits the tests share.

use crate::serve::{wait_until, Change, ServeProcess, CLIENT_STATE};
use crate::{samba, text, unique, AdProbe, RawEntry};
use graph_sim::{RunningSim, SimClient, SimConfig};
use serde_json::Value;
use shadowsync_core::account::uac;
use shadowsync_core::dn;
use std::path::Path;
use std::time::{Duration, Instant};

/// A limit for reaching a state, not a speed target: generous for loaded CI machines.
pub const SETTLE: Duration = Duration::from_secs(60);

pub struct Host {
    pub sim: RunningSim,
    pub graph: SimClient,
    pub serve: ServeProcess,
    pub probe: AdProbe,
    pub dir: tempfile::TempDir,
}

/// What a host starts with.
pub struct HostOptions<'a> {
    pub sim: SimConfig,
    /// Appended to serve's config file (sections of their own).
    pub config: &'a str,
    /// Environment overrides, see [`crate::serve::Cli::env`].
    pub env: Vec<(String, Option<String>)>,
    /// Waits until serve has created its subscription and finished its reconciliation at
    /// start (a delta round and a sweep, which converges every guest then in Graph), so that
    /// what a test does afterwards is what serve reacts to.
    pub wait_for_subscription: bool,
}

impl Default for HostOptions<'_> {
    fn default() -> Self {
        Self {
            sim: SimConfig::default(),
            config: "",
            env: Vec::new(),
            wait_for_subscription: true,
        }
    }
}

impl Host {
    /// `binary serve` with `config` appended to its config file.
    pub async fn start(binary: &str, config: &str) -> Host {
        Self::start_with(
            binary,
            HostOptions {
                config,
                ..HostOptions::default()
            },
        )
        .await
    }

    pub async fn start_with(binary: &str, options: HostOptions<'_>) -> Host {
        let sim = graph_sim::start(options.sim, "127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let graph = SimClient::new(sim.base_url(), sim.config());
        let dir = tempfile::tempdir().unwrap();
        let mut probe = AdProbe::connect(samba()).await.unwrap();
        // OUs of its own: serve sweeps its OUs, and on shared ones it would converge every
        // account other tests left there.
        let guests = probe.ou("Serve Guests").await.unwrap();
        let disabled = probe.ou("Serve Disabled").await.unwrap();
        let serve = ServeProcess::start_with(
            Path::new(binary),
            &sim,
            samba(),
            (&guests, &disabled),
            dir.path(),
            options.config,
            options.env,
        )
        .await
        .unwrap();
        let host = Host {
            probe,
            sim,
            graph,
            serve,
            dir,
        };
        if options.wait_for_subscription {
            wait_until(SETTLE, || async { host.subscriptions().await.len() == 1 })
                .await
                .expect("serve creates the subscription at start");
            wait_until(SETTLE, || async {
                !host.status().await["last_sweep"].is_null()
            })
            .await
            .expect("serve sweeps at start");
        }
        host
    }

    /// Graph's subscriptions, as Graph lists them (no clientState).
    pub async fn subscriptions(&self) -> Vec<Value> {
        let response = self
            .graph
            .graph(reqwest::Method::GET, "/v1.0/subscriptions", None)
            .await
            .unwrap();
        let body: Value = response.json().await.unwrap();
        body["value"].as_array().cloned().unwrap_or_default()
    }

    /// The simulator's own view of the subscriptions (clientState, paused delivery…).
    pub async fn sim_subscriptions(&self) -> Vec<Value> {
        self.graph.sim_subscriptions().await.unwrap()
    }

    /// Invites a guest with a unique address; returns their objectId.
    pub async fn invite(&self, name: &str) -> String {
        let user = self
            .graph
            .invite(&format!("{name}@{}.example.com", unique()), name)
            .await
            .unwrap();
        user["invitedUser"]["id"]
            .as_str()
            .or(user["id"].as_str())
            .unwrap()
            .to_string()
    }

    /// Invites a guest without Graph notifying anyone.
    pub async fn invite_quietly(&self, name: &str) -> String {
        self.graph.set_notifications_lost(true).await.unwrap();
        let id = self.invite(name).await;
        self.graph.set_notifications_lost(false).await.unwrap();
        id
    }

    /// Posts a notification for `user_id` straight to the webhook, with `client_state`;
    /// returns the HTTP status.
    pub async fn post_notification(&self, user_id: &str, client_state: &str) -> u16 {
        self.post_change(user_id, Change::Updated, client_state)
            .await
    }

    /// The same, for any `change`.
    pub async fn post_change(&self, user_id: &str, change: Change, client_state: &str) -> u16 {
        // Through the control API: Graph's may be refusing (a removed permission).
        let sub = self.sim_subscriptions().await[0]["id"]
            .as_str()
            .unwrap()
            .to_string();
        crate::serve::post_notification(
            self.serve.listen,
            &sub,
            (user_id, change),
            client_state,
            &self.sim.config().tenant_id,
        )
        .await
        .unwrap()
    }

    /// A genuine notification for `user_id`, accepted.
    pub async fn notify(&self, user_id: &str) {
        assert_eq!(self.post_notification(user_id, CLIENT_STATE).await, 202);
    }

    pub async fn account(&mut self, id: &str) -> Option<(String, RawEntry)> {
        self.probe.by_anchor(id).await.unwrap()
    }

    /// Waits until the account of `id` satisfies `check`; returns how long that took.
    pub async fn wait_for(
        &mut self,
        id: &str,
        what: &str,
        check: impl Fn(Option<&(String, RawEntry)>) -> bool,
    ) -> Duration {
        let start = Instant::now();
        while start.elapsed() < SETTLE {
            let account = self.account(id).await;
            if check(account.as_ref()) {
                return start.elapsed();
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!(
            "{what}: not reached within {SETTLE:?}; account is {:?}",
            self.account(id).await.map(|(dn, _)| dn)
        );
    }

    pub fn enabled_in_guests(&self) -> impl Fn(Option<&(String, RawEntry)>) -> bool + 'static {
        let ou = self.serve.guests_ou.clone();
        move |a| a.is_some_and(|(d, e)| uac_of(e) == uac::ENABLED && in_ou(d, &ou))
    }

    pub fn disabled_in_disabled_ou(
        &self,
    ) -> impl Fn(Option<&(String, RawEntry)>) -> bool + 'static {
        let ou = self.serve.disabled_ou.clone();
        move |a| a.is_some_and(|(d, e)| uac_of(e) == uac::DISABLED && in_ou(d, &ou))
    }

    /// `shadowsync status --json` on this host's store (through its admin API).
    pub async fn status(&self) -> Value {
        let out = self.serve.cli.run(&["status"], &["--json"]).await.unwrap();
        serde_json::from_str(&out).unwrap()
    }
}

pub fn uac_of(e: &RawEntry) -> u32 {
    text(e, "userAccountControl").unwrap().parse().unwrap()
}

pub fn in_ou(dn_: &str, ou: &str) -> bool {
    dn::parent(dn_).is_some_and(|p| dn::same(&p, ou))
}
