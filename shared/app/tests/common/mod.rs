//! An `App` built from the test kit's fakes, the embedded store in memory and its queue, with
//! manual clocks: every test runs in milliseconds.

#![allow(dead_code)] // each test binary uses its own part of this

use async_trait::async_trait;
use chrono::Duration;
use secrecy::SecretString;
use shadowsync_app::{
    App, Converger, KeeperConfig, Outcome, PartnerParts, PartnerSettings, Parts, SafetyLimits,
    Schedule, WorkerConfig,
};
use shadowsync_core::partner::{Mode, PartnerAttribute, PartnerScope};
use shadowsync_core::{ActualAccount, Backoff, Clock, ManualClock, ObjectId, Policy};
use shadowsync_ports::Directory;
use shadowsync_queue::{EmbeddedQueue, Job, PendingJobs, Queue};
use shadowsync_state::{EmbeddedStore, GuestRecord, KeyValueStore, StateError, Versioned};
use shadowsync_testkit::{epoch, FakeDirectory, FakeGraph, FakeGuestGraph};
use std::sync::{Arc, Mutex};

pub const BASE: &str = "DC=corp,DC=example,DC=test";
pub const GUESTS_OU: &str = "OU=Guests,DC=corp,DC=example,DC=test";
pub const DISABLED_OU: &str = "OU=Disabled Guests,DC=corp,DC=example,DC=test";
pub const STAFF_OU: &str = "OU=Staff,DC=corp,DC=example,DC=test";
pub const NOTIFICATION_URL: &str = "https://shadowsync.example.com/api/notifications";
pub const LIFECYCLE_URL: &str = "https://shadowsync.example.com/api/lifecycle";
pub const CLIENT_STATE: &str = "a-random-client-state-of-40-characters!!";
pub const DAY: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

pub fn policy() -> Policy {
    Policy::new(GUESTS_OU, DISABLED_OU)
}

pub fn keeper_config() -> KeeperConfig {
    KeeperConfig::new(
        NOTIFICATION_URL,
        LIFECYCLE_URL,
        SecretString::from(CLIENT_STATE),
    )
}

/// What to build; `Setup::default().build()` is a host with everything but a keeper.
pub struct Setup {
    pub policy: Policy,
    /// Whether the host reaches AD.
    pub directory: bool,
    pub keeper: Option<KeeperConfig>,
    pub max_attempts: u32,
    pub schedule: Schedule,
    /// Creates a group in Graph and makes it the policy's scope group.
    pub scope_group: bool,
    pub safety: SafetyLimits,
    /// The partner direction, on.
    pub partners: Option<PartnerSettings>,
}

pub const PARTNERS_OU: &str = "OU=Partners,DC=corp,DC=example,DC=test";
pub const LINK_ATTRIBUTE: &str = "extensionAttribute15";

/// The partner direction in `mode`: accounts directly under [`PARTNERS_OU`], every attribute,
/// a 30-day retention.
pub fn partner_settings(mode: Mode) -> PartnerSettings {
    PartnerSettings {
        mode,
        scope: PartnerScope {
            ous: vec![PARTNERS_OU.into()],
            upn_suffixes: vec![],
            tenant_domains: vec!["contoso.com".into()],
            retention: Some(std::time::Duration::from_secs(30 * 24 * 3600)),
            excluded_ous: vec![GUESTS_OU.into(), DISABLED_OU.into()],
        },
        filter: None,
        link_attribute: LINK_ATTRIBUTE.into(),
        attributes: PartnerAttribute::ALL.to_vec(),
        redirect_url: "https://myapplications.microsoft.com/".into(),
        send_invitation_message: false,
        message_language: None,
    }
}

impl Default for Setup {
    fn default() -> Self {
        Self {
            policy: policy(),
            directory: true,
            keeper: None,
            max_attempts: 3,
            schedule: Schedule::default(),
            scope_group: false,
            safety: SafetyLimits::default(),
            partners: None,
        }
    }
}

/// The application and its fakes. Two clocks, as in production: the local one (converge,
/// retention, the reconciler, the queue) and Graph's (subscriptions, delta token age).
pub struct World {
    pub app: App,
    pub graph: Arc<FakeGraph>,
    /// The partner direction's Graph.
    pub guests: Arc<FakeGuestGraph>,
    pub directory: Arc<FakeDirectory>,
    pub store: Arc<RacingStore>,
    pub queue: Arc<EmbeddedQueue>,
    pub clock: Arc<ManualClock>,
    pub policy: Policy,
    pub scope_group: Option<ObjectId>,
}

impl Setup {
    pub fn with_policy(policy: Policy) -> Self {
        Self {
            policy,
            ..Self::default()
        }
    }

    pub fn build(mut self) -> World {
        let clock = Arc::new(ManualClock::new(epoch()));
        let graph = Arc::new(FakeGraph::new());
        let scope_group = self.scope_group.then(|| graph.create_group());
        if scope_group.is_some() {
            self.policy.scope_group_id = scope_group.clone();
        }
        let directory =
            Arc::new(FakeDirectory::with_managed_ous(BASE, &self.policy).expect("the managed OUs"));
        directory.add_ou(STAFF_OU).expect("the staff OU");
        directory.add_ou(PARTNERS_OU).expect("the partners OU");
        let guests = Arc::new(FakeGuestGraph::new());
        let embedded = EmbeddedStore::in_memory().expect("an in-memory store");
        let queue = Arc::new(
            EmbeddedQueue::with_clock(&embedded, self.max_attempts, clock.clone())
                .expect("the queue"),
        );
        let store = Arc::new(RacingStore::new(embedded));
        let app = App::from_parts(Parts {
            graph: graph.clone(),
            state: store.clone(),
            queue: queue.clone(),
            directory: self.directory.then(|| {
                let d: Arc<dyn Directory> = directory.clone();
                (d, self.policy.clone())
            }),
            keeper: self.keeper,
            clock: clock.clone(),
            schedule: self.schedule,
            workers: WorkerConfig {
                workers: 2,
                poll_interval: std::time::Duration::from_millis(10),
                retry: Backoff::new(
                    std::time::Duration::from_secs(2),
                    std::time::Duration::from_secs(60),
                ),
                ..WorkerConfig::default()
            },
            safety: self.safety,
            pending: Arc::new(PendingJobs::new(store.clone())),
            partners: self.partners.map(|settings| PartnerParts {
                guests: guests.clone(),
                directory: directory.clone(),
                settings,
                poll_interval: std::time::Duration::from_secs(5),
            }),
        });
        World {
            app,
            graph,
            guests,
            directory,
            store,
            queue,
            clock,
            policy: self.policy,
            scope_group,
        }
    }
}

impl World {
    pub fn new() -> Self {
        Setup::default().build()
    }

    pub fn converger(&self) -> &Converger {
        self.app.converger().expect("a host with a directory")
    }

    pub async fn converge(&self, id: &ObjectId) -> Outcome {
        self.converger()
            .converge(id, Default::default())
            .await
            .expect("converge")
    }

    pub async fn record(&self, id: &ObjectId) -> Option<Versioned<GuestRecord>> {
        GuestRecord::load(self.store.as_ref(), id)
            .await
            .expect("the record")
    }

    pub fn anchor(&self, id: &ObjectId) -> String {
        self.policy.anchor.value_for(id)
    }

    /// The guest's one account, if any (two are a test failure here).
    pub fn account_of(&self, id: &ObjectId) -> Option<ActualAccount> {
        let mut found = self.directory.accounts_with_anchor(&self.anchor(id));
        assert!(found.len() <= 1, "{} accounts for {id}", found.len());
        found.pop()
    }

    /// Moves local time and Graph's time together.
    pub fn advance(&self, by: Duration) {
        self.clock.advance(by);
        self.graph.clock().advance(by);
    }

    /// Every job on the queue, taken off it (acknowledged).
    pub async fn drain(&self) -> Vec<Job> {
        let mut jobs = Vec::new();
        loop {
            let batch = self
                .queue
                .receive(100, std::time::Duration::from_secs(60))
                .await
                .expect("receive");
            if batch.is_empty() {
                return jobs;
            }
            for d in batch {
                self.queue.ack(&d.receipt).await.expect("ack");
                jobs.push(d.job);
            }
        }
    }
}

/// The user ids of converge jobs, sorted.
pub fn converge_ids(jobs: &[Job]) -> Vec<ObjectId> {
    let mut ids: Vec<ObjectId> = jobs
        .iter()
        .filter_map(|j| match j {
            Job::Converge { user_id, .. } => Some(user_id.clone()),
            Job::Lifecycle { .. } | Job::Partner { .. } | Job::GroupChanged { .. } => None,
        })
        .collect();
    ids.sort();
    ids
}

pub fn sorted(mut ids: Vec<ObjectId>) -> Vec<ObjectId> {
    ids.sort();
    ids
}

/// The embedded store, with a way to lose a compare-and-set honestly: another writer's value
/// lands on a key just before our next write to it.
pub struct RacingStore {
    inner: EmbeddedStore,
    race: Mutex<Option<(String, String, Vec<u8>)>>,
}

impl RacingStore {
    pub fn new(inner: EmbeddedStore) -> Self {
        Self {
            inner,
            race: Mutex::new(None),
        }
    }

    /// Just before the next write to `table`/`key`, "another worker" writes `value` there.
    pub fn race_next_put(&self, table: &str, key: &str, value: Vec<u8>) {
        *self.race.lock().unwrap() = Some((table.into(), key.into(), value));
    }
}

#[async_trait]
impl KeyValueStore for RacingStore {
    async fn get(&self, table: &str, key: &str) -> Result<Option<Versioned<Vec<u8>>>, StateError> {
        self.inner.get(table, key).await
    }

    async fn put(
        &self,
        table: &str,
        key: &str,
        value: Vec<u8>,
        expected: Option<u64>,
    ) -> Result<u64, StateError> {
        let due = {
            let mut race = self.race.lock().unwrap();
            match race.as_ref() {
                Some((t, k, _)) if t == table && k == key => race.take(),
                _ => None,
            }
        };
        if let Some((_, _, theirs)) = due {
            let current = self.inner.get(table, key).await?.map(|v| v.version);
            self.inner.put(table, key, theirs, current).await?;
        }
        self.inner.put(table, key, value, expected).await
    }

    async fn delete(
        &self,
        table: &str,
        key: &str,
        expected: Option<u64>,
    ) -> Result<(), StateError> {
        self.inner.delete(table, key, expected).await
    }

    async fn scan(
        &self,
        table: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, Versioned<Vec<u8>>)>, StateError> {
        self.inner.scan(table, start_after, limit).await
    }
}

/// The local clock's time now.
pub fn now(world: &World) -> chrono::DateTime<chrono::Utc> {
    world.clock.now()
}

/// The users delta checkpoint in state.
pub async fn checkpoint(w: &World) -> Option<Versioned<shadowsync_state::DeltaCheckpoint>> {
    shadowsync_state::get_json(
        w.store.as_ref(),
        shadowsync_state::records::CHECKPOINTS,
        shadowsync_state::records::USERS_DELTA,
    )
    .await
    .unwrap()
}

/// Graph down for a moment (503).
pub fn server_error() -> shadowsync_ports::GraphError {
    shadowsync_ports::GraphError::Server {
        status: 503,
        code: "serviceNotAvailable".into(),
        message: "try later".into(),
    }
}
