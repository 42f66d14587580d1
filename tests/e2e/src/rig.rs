//! The reconciler's test rig: the Graph simulator in-process, the real Samba DC, the real
//! converge step and provisioner draining an embedded queue.
//!
//! Each rig gets managed OUs of its own, directly under the domain (`OU=rec-<unique>-guests` and
//! `OU=rec-<unique>-disabled`), outside the DC's shared Guests and Disabled Guests OUs. A sweep
//! (or any full sync) lists everything in its managed OUs, subtree included, and judges each
//! anchored account against its own simulator: run over a shared OU, it would take other tests'
//! accounts for orphans and disable them, and theirs would do the same to ours.

use crate::{samba, text, unique, AdProbe, RawEntry};
use anyhow::{ensure, Context, Result};
use graph_sim::{RunningSim, SimClient, SimConfig};
use ldap3::controls::RawControl;
use ldap3::{LdapConnAsync, LdapConnSettings};
use shadowsync_app::worker::process;
use shadowsync_app::{App, Converger, Jobs, Parts, Reconciler, Schedule, WorkerConfig};
use shadowsync_core::account::uac;
use shadowsync_core::{dn, Backoff, Clock, ObjectId, Policy, SystemClock};
use shadowsync_directory::LdapDirectory;
use shadowsync_queue::{EmbeddedQueue, PendingJobs, Queue};
use shadowsync_state::{EmbeddedStore, KeyValueStore};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Deliveries of one job before it is dead-lettered.
const MAX_ATTEMPTS: u32 = 10;

pub struct Rig {
    pub sim: RunningSim,
    pub graph: SimClient,
    pub probe: AdProbe,
    pub policy: Policy,
    pub queue: Arc<EmbeddedQueue>,
    pub converger: Arc<Converger>,
    pub jobs: Arc<Jobs>,
    pub reconciler: Arc<Reconciler>,
    /// The scope group, when the rig was started with one.
    pub scope_group: Option<String>,
    _dir: tempfile::TempDir,
}

pub struct RigOptions {
    pub sim: SimConfig,
    pub clock: Arc<dyn Clock>,
    /// Creates a group in the simulator and makes it the policy's scope group.
    pub scope_group: bool,
}

impl Default for RigOptions {
    fn default() -> Self {
        Self {
            sim: SimConfig::default(),
            clock: Arc::new(SystemClock),
            scope_group: false,
        }
    }
}

impl Rig {
    pub async fn start() -> Result<Self> {
        Self::with(RigOptions::default()).await
    }

    pub async fn with(options: RigOptions) -> Result<Self> {
        let samba = samba();
        let sim = graph_sim::start(options.sim, "127.0.0.1:0".parse()?).await?;
        let graph = SimClient::new(sim.base_url(), sim.config());
        // No subscription exists, and none would be heard: the reconciler is on its own.
        graph.set_notifications_lost(true).await?;
        let mut probe = AdProbe::connect(samba).await?;

        let ou = format!("rec-{}", unique());
        let (guests, disabled) = (format!("{ou}-guests"), format!("{ou}-disabled"));
        let mut policy = Policy::new(
            format!("OU={guests},{}", samba.base_dn),
            format!("OU={disabled},{}", samba.base_dn),
        );
        policy.retention = Some(std::time::Duration::from_secs(30 * 24 * 3600));
        for (dn, name) in [
            (&policy.guests_ou, &guests),
            (&policy.disabled_ou, &disabled),
        ] {
            probe
                .add(
                    dn,
                    vec![("objectClass", "organizationalUnit"), ("ou", name)],
                )
                .await
                .with_context(|| format!("create {dn}"))?;
        }
        let scope_group = match options.scope_group {
            true => {
                let group = graph.create_group("Shadow account holders").await?;
                Some(group["id"].as_str().context("group id")?.to_string())
            }
            false => None,
        };
        let scope_group_id = scope_group.as_deref().map(ObjectId::parse).transpose()?;
        policy.scope_group_id = scope_group_id;

        let dir = tempfile::tempdir()?;
        let store = EmbeddedStore::open(dir.path().join("state.redb"))?;
        let queue = Arc::new(EmbeddedQueue::new(&store, MAX_ATTEMPTS)?);
        let directory = Arc::new(LdapDirectory::connect(samba.directory_config(), &policy).await?);
        let store: Arc<dyn KeyValueStore> = Arc::new(store);
        let app = App::from_parts(Parts {
            graph: Arc::new(crate::graph_client(&sim)?),
            pending: Arc::new(PendingJobs::new(store.clone())),
            state: store,
            queue: queue.clone(),
            directory: Some((directory, policy.clone())),
            keeper: None,
            clock: options.clock,
            schedule: Schedule::default(),
            workers: WorkerConfig::default(),
            safety: Default::default(),
            partners: None,
        });
        Ok(Self {
            sim,
            graph,
            probe,
            policy,
            queue,
            converger: app.converger()?.clone(),
            jobs: app.jobs.clone(),
            reconciler: app.reconciler.clone(),
            scope_group,
            _dir: dir,
        })
    }

    /// Deletes the rig's OUs with everything in them (LDAP tree delete). Tests call it at the
    /// end, so a failed test leaves its accounts behind for inspection.
    pub async fn cleanup(self) -> Result<()> {
        let samba = samba();
        let tls = shadowsync_directory::tls_client_config(Some(&samba.ca_file))?;
        let settings = LdapConnSettings::new().set_config(tls);
        let (conn, mut ldap) = LdapConnAsync::with_settings(settings, &samba.ldaps_url).await?;
        ldap3::drive!(conn);
        ldap.simple_bind(&samba.bind_dn, &samba.bind_password)
            .await?
            .success()?;
        for ou in [&self.policy.guests_ou, &self.policy.disabled_ou] {
            let tree_delete = RawControl {
                ctype: "1.2.840.113556.1.4.805".into(),
                crit: true,
                val: None,
            };
            ldap.with_controls(tree_delete)
                .delete(ou)
                .await?
                .success()
                .with_context(|| format!("delete {ou}"))?;
        }
        ldap.unbind().await?;
        self.sim.shutdown().await;
        Ok(())
    }

    /// Invites a guest with a unique address; returns their objectId.
    pub async fn invite(&self, local: &str, display_name: &str) -> Result<String> {
        let user = self
            .graph
            .invite(&format!("{local}@{}.example.com", unique()), display_name)
            .await?;
        Ok(user["id"].as_str().context("user id")?.to_string())
    }

    /// Runs the real provisioner over the queue until it is empty; returns the jobs processed.
    /// Fails if any job was dead-lettered (converge failed for good).
    pub async fn drain(&self) -> Result<usize> {
        // Retries quick enough for a test, patient enough (about 25 s over MAX_ATTEMPTS) to ride
        // out a restart of the shared DC by another test binary.
        let config = WorkerConfig {
            retry: Backoff::new(Duration::from_millis(200), Duration::from_secs(5)),
            ..WorkerConfig::default()
        };
        let queue: &dyn Queue = self.queue.as_ref();
        let deadline = Instant::now() + Duration::from_secs(600);
        let mut processed = 0;
        loop {
            let deliveries = queue.receive(6, config.visibility).await?;
            if deliveries.is_empty() {
                if queue.stats().await?.depth == 0 {
                    break;
                }
                // Jobs waiting out a retry delay.
                ensure!(Instant::now() < deadline, "the queue did not drain");
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
            processed += deliveries.len();
            // Different users at once, like the provisioner's workers.
            futures::future::join_all(
                deliveries
                    .into_iter()
                    .map(|d| process(queue, self.jobs.as_ref(), &config, d)),
            )
            .await;
        }
        let dead = queue.dead_letters().await?;
        ensure!(dead.is_empty(), "dead letters: {dead:#?}");
        Ok(processed)
    }

    /// The account carrying `id`'s anchor, if any.
    pub async fn account(&mut self, id: &str) -> Result<Option<Account>> {
        Ok(self.probe.by_anchor(id).await?.map(|(dn, entry)| Account {
            enabled: uac_of(&entry) & uac::ACCOUNTDISABLE == 0,
            in_guests_ou: dn::same(&dn::parent(&dn).unwrap_or_default(), &self.policy.guests_ou),
            in_disabled_ou: dn::same(
                &dn::parent(&dn).unwrap_or_default(),
                &self.policy.disabled_ou,
            ),
            dn,
            entry,
        }))
    }

    /// Asserts `id` has an enabled account in the guests OU; returns it.
    pub async fn assert_enabled(&mut self, id: &str) -> Result<Account> {
        let a = self
            .account(id)
            .await?
            .with_context(|| format!("{id} has no account"))?;
        ensure!(
            a.enabled && a.in_guests_ou,
            "{id}: expected enabled in the guests OU: {a:?}"
        );
        Ok(a)
    }

    /// Asserts `id` has a disabled account in the disabled OU.
    pub async fn assert_disabled(&mut self, id: &str) -> Result<Account> {
        let a = self
            .account(id)
            .await?
            .with_context(|| format!("{id} has no account"))?;
        ensure!(
            !a.enabled && a.in_disabled_ou,
            "{id}: expected disabled in the disabled OU: {a:?}"
        );
        Ok(a)
    }
}

#[derive(Debug)]
pub struct Account {
    pub dn: String,
    pub entry: RawEntry,
    pub enabled: bool,
    pub in_guests_ou: bool,
    pub in_disabled_ou: bool,
}

pub fn uac_of(entry: &RawEntry) -> u32 {
    text(entry, "userAccountControl")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// A GUID nobody in any simulator has.
pub fn random_object_id() -> String {
    uuid::Uuid::new_v4().to_string()
}
