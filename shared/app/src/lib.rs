//! shadowsync's application: everything it does, built once, for every host.
//!
//! | module | what |
//! |---|---|
//! | [`converge`] | the one idempotent step: read Graph, read AD by anchor, plan, apply, record |
//! | [`reconcile`] | delta rounds, sweeps of the managed OUs, and the one schedule of both |
//! | [`keeper`] | the Graph subscription: create, renew, reauthorize, recreate, adopt |
//! | [`partners`] | the partner direction's step: one AD partner account's guest in Entra |
//! | [`partner_watch`] | the AD watcher: partner accounts changed since a `uSNChanged` watermark, as jobs |
//! | [`jobs`] | the dispatcher: what each kind of job does (a new job kind goes here) |
//! | [`worker`] | the workers: jobs off the queue, retries with backoff, dead letters |
//! | [`access`] | Graph refuses (403): jobs parked, the refusal reported, resumed when it answers |
//! | [`scope`] | scope-group changes: the tree of nested groups, each group's delta, converge jobs |
//! | [`safety`] | the safety rails: pre-flight and the accidental-change threshold before any disable or delete |
//! | [`admin`] | status, one guest's report, plan, sync |
//! | [`build`] | [`App::build`]: the application from the settings and the chosen storage |
//!
//! The application talks to Graph and AD only through the ports of `shadowsync-ports`, and to
//! its state and queue only through their traits; a host (a binary in `functions/`) builds an
//! [`App`] once and runs the parts it hosts: `serve` all of them, the connector the workers and
//! sweeps, each Lambda function one.

pub mod access;
pub mod admin;
pub mod build;
pub mod converge;
mod error;
pub mod jobs;
pub mod keeper;
pub mod metrics;
pub mod partner_watch;
pub mod partners;
pub mod reconcile;
pub mod safety;
pub mod scope;
pub mod worker;

pub use access::GraphAccess;
pub use build::{Settings, Storage};
pub use converge::{describe, Converger, Hint, Outcome};
pub use error::{AppError, Doing};
pub use jobs::Jobs;
pub use keeper::{Ensured, KeeperConfig, SubscriptionKeeper};
pub use metrics::{JobMetrics, MetricsSnapshot};
pub use partner_watch::{PartnerWatcher, WatchReport};
pub use partners::{PartnerConverger, PartnerOutcome, PartnerSettings};
pub use reconcile::{ManagedDirectory, Reconciler, Roles, RunReport};
pub use safety::{Safety, SafetyLimits};
pub use scope::ScopeGroups;
pub use worker::{JobError, JobHandler, Settled, WorkerConfig};

use shadowsync_core::{Clock, Policy};
use shadowsync_ports::{Directory, Graph, GuestGraph, PartnerDirectory};
use shadowsync_queue::{PendingJobs, Queue};
use shadowsync_state::KeyValueStore;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// After a change notification whose round found nothing, when to look once more.
const RECHECK_AFTER_NOTIFICATION: Duration = Duration::from_millis(250);

/// When the scheduled work runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Schedule {
    /// Between two delta rounds (or, where the host does not run them, two checks whether a
    /// sweep is due).
    pub interval: Duration,
    /// Between two sweeps of the managed OUs (a full delta round also leads to one).
    pub sweep_interval: Duration,
    /// Between two checks of the subscription.
    pub subscription_check: Duration,
}

impl Default for Schedule {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(15 * 60),
            sweep_interval: Duration::from_secs(24 * 3600),
            subscription_check: Duration::from_secs(3600),
        }
    }
}

/// What an [`App`] is made of: the ports, already connected. Tests pass fakes here; hosts go
/// through [`App::build`].
pub struct Parts {
    pub graph: Arc<dyn Graph>,
    pub state: Arc<dyn KeyValueStore>,
    pub queue: Arc<dyn Queue>,
    /// AD and the policy naming its managed OUs, where this host reaches AD.
    pub directory: Option<(Arc<dyn Directory>, Policy)>,
    /// The subscription this host keeps, if it keeps one.
    pub keeper: Option<KeeperConfig>,
    /// The clock of converge and the reconciler (the keeper follows Graph's clock).
    pub clock: Arc<dyn Clock>,
    pub schedule: Schedule,
    pub workers: WorkerConfig,
    /// The accidental-change threshold.
    pub safety: SafetyLimits,
    /// Marks of jobs made from notifications that wait, shared with the webhook that folds
    /// repeats into them.
    pub pending: Arc<PendingJobs>,
    /// The partner direction, where `[partners]` is on and this host reaches AD.
    pub partners: Option<PartnerParts>,
}

/// What the partner direction is made of.
pub struct PartnerParts {
    pub guests: Arc<dyn GuestGraph>,
    pub directory: Arc<dyn PartnerDirectory>,
    pub settings: PartnerSettings,
    /// Between two rounds of the AD watcher.
    pub poll_interval: Duration,
}

impl Parts {
    /// Graph, state and queue, with no directory and no keeper, the system clock, the default
    /// schedule and workers; add what a test or a bench needs with the methods below.
    pub fn new(
        graph: Arc<dyn Graph>,
        state: Arc<dyn KeyValueStore>,
        queue: Arc<dyn Queue>,
    ) -> Self {
        Self {
            graph,
            queue,
            directory: None,
            keeper: None,
            clock: Arc::new(shadowsync_core::SystemClock),
            schedule: Schedule::default(),
            workers: WorkerConfig::default(),
            safety: SafetyLimits::default(),
            pending: Arc::new(PendingJobs::new(state.clone())),
            partners: None,
            state,
        }
    }

    pub fn partners(mut self, partners: PartnerParts) -> Self {
        self.partners = Some(partners);
        self
    }

    pub fn directory(mut self, directory: Arc<dyn Directory>, policy: Policy) -> Self {
        self.directory = Some((directory, policy));
        self
    }

    pub fn keeper(mut self, keeper: KeeperConfig) -> Self {
        self.keeper = Some(keeper);
        self
    }

    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    pub fn workers(mut self, workers: WorkerConfig) -> Self {
        self.workers = workers;
        self
    }

    pub fn safety(mut self, limits: SafetyLimits) -> Self {
        self.safety = limits;
        self
    }
}

/// The application, built once per process. Cheap to share (`Arc` inside).
pub struct App {
    pub graph: Arc<dyn Graph>,
    pub state: Arc<dyn KeyValueStore>,
    pub queue: Arc<dyn Queue>,
    /// `None` where AD is out of reach.
    pub converger: Option<Arc<Converger>>,
    pub reconciler: Arc<Reconciler>,
    /// `None` where no subscription is configured.
    pub keeper: Option<Arc<SubscriptionKeeper>>,
    pub jobs: Arc<Jobs>,
    pub metrics: Arc<JobMetrics>,
    /// The safety rails every converge asks before a disable or delete.
    pub safety: Arc<Safety>,
    pub schedule: Schedule,
    pub workers: WorkerConfig,
    /// Woken by `missed` and `subscriptionRemoved`: a delta round now.
    reconcile_now: Arc<Notify>,
    /// Hand it to the webhook of the same deployment, so that it folds repeats.
    pub pending: Arc<PendingJobs>,
    /// The partner direction's step; `None` where it is off.
    pub partners: Option<Arc<PartnerConverger>>,
    /// The AD watcher and its pause; `None` where the partner direction is off.
    pub partner_watcher: Option<(Arc<PartnerWatcher>, Duration)>,
    /// The scope group's tree; `None` without a scope group (or where the policy is unknown).
    pub scope_groups: Option<Arc<ScopeGroups>>,
}

impl App {
    pub fn from_parts(parts: Parts) -> Self {
        let Parts {
            graph,
            state,
            queue,
            directory,
            keeper,
            clock,
            schedule,
            workers,
            safety,
            pending,
            partners,
        } = parts;
        let safety = Arc::new(Safety::new(
            graph.clone(),
            state.clone(),
            clock.clone(),
            safety,
            directory
                .as_ref()
                .and_then(|(_, policy)| policy.scope_group_id.clone()),
        ));
        let converger = directory.as_ref().map(|(directory, policy)| {
            Arc::new(Converger {
                graph: graph.clone(),
                directory: directory.clone(),
                state: state.clone(),
                policy: policy.clone(),
                clock: clock.clone(),
                safety: safety.clone(),
            })
        });
        let graph_clock = graph.clock();
        let partner_converger = partners.as_ref().map(|p| {
            Arc::new(PartnerConverger {
                guests: p.guests.clone(),
                directory: p.directory.clone(),
                state: state.clone(),
                settings: p.settings.clone(),
                clock: graph_clock.clone(),
                safety: safety.clone(),
            })
        });
        let partner_watcher = partners.map(|p| {
            let watcher = PartnerWatcher {
                directory: p.directory,
                guests: p.guests,
                state: state.clone(),
                queue: queue.clone(),
                settings: p.settings,
                full_every: schedule.sweep_interval,
                clock: clock.clone(),
            };
            (Arc::new(watcher), p.poll_interval)
        });
        let scope_groups = directory
            .as_ref()
            .and_then(|(_, policy)| policy.scope_group_id.clone())
            .map(|root| {
                Arc::new(ScopeGroups {
                    graph: graph.clone(),
                    state: state.clone(),
                    queue: queue.clone(),
                    root,
                    clock: clock.clone(),
                })
            });
        let access = Arc::new(GraphAccess {
            state: state.clone(),
            clock: clock.clone(),
        });
        let reconciler = Arc::new(Reconciler {
            graph: graph.clone(),
            queue: queue.clone(),
            state: state.clone(),
            managed: directory.map(|(directory, policy)| ManagedDirectory { directory, policy }),
            access: access.clone(),
            clock,
        });
        let keeper = keeper.map(|config| {
            Arc::new(SubscriptionKeeper {
                graph: graph.clone(),
                state: state.clone(),
                config,
                clock: graph.clock(),
            })
        });
        let metrics = Arc::new(JobMetrics::new());
        let reconcile_now = Arc::new(Notify::new());
        let jobs = Arc::new(Jobs {
            converger: converger.clone(),
            partners: partner_converger.clone(),
            scope_groups: scope_groups.clone(),
            keeper: keeper.clone(),
            reconcile_now: Some(reconcile_now.clone()),
            metrics: metrics.clone(),
            access,
            pending: pending.clone(),
        });
        Self {
            graph,
            state,
            queue,
            converger,
            reconciler,
            keeper,
            jobs,
            metrics,
            safety,
            schedule,
            workers,
            reconcile_now,
            pending,
            partners: partner_converger,
            partner_watcher,
            scope_groups,
        }
    }

    /// Checks the scope group's tree against Graph (groups joined or left since) and queues a
    /// round of every group's changes, where there is a scope group: what notifications missed
    /// is caught up every `interval`. A failure is logged: the next check tries again.
    pub async fn check_scope_tree(&self) {
        let Some(scope) = &self.scope_groups else {
            return;
        };
        let checked = async {
            let tree = scope.ensure_tree().await?;
            let polled = scope.poll_all().await?;
            // A group joined or left: where this host keeps the subscriptions, it follows now
            // (otherwise the keeper's own check keeps them, at start and every check interval).
            let subscriptions = match &self.keeper {
                Some(keeper) if tree.joined + tree.left > 0 => Some(keeper.ensure_groups().await?),
                _ => None,
            };
            Ok::<_, AppError>((tree, polled, subscriptions))
        };
        match checked.await {
            Ok((tree, polled, subscriptions)) => {
                tracing::info!(?tree, polled, ?subscriptions, "scope group tree checked")
            }
            Err(e) => tracing::error!(error = %e, "checking the scope group tree failed"),
        }
    }

    /// The partner direction's step; an error where `[partners]` is off.
    pub fn partners(&self) -> Result<&Arc<PartnerConverger>, AppError> {
        self.partners
            .as_ref()
            .ok_or(AppError::Missing("the partner direction ([partners])"))
    }

    /// The AD watcher's rounds, every poll interval and at once when AD's change notifications
    /// report a change in a partner OU, until `shutdown` (nothing where the partner direction is
    /// off). A failed round is logged and the next one tries again from the same watermark;
    /// notifications that fail leave the polling alone, and are tried again a minute later.
    pub async fn watch_partners(&self, shutdown: CancellationToken) {
        let Some((watcher, every)) = &self.partner_watcher else {
            return;
        };
        let wake = Arc::new(Notify::new());
        let mut woken = false;
        let notifications = {
            let (directory, ous, wake) = (
                watcher.directory.clone(),
                watcher.settings.scope.ous.clone(),
                wake.clone(),
            );
            let stop = shutdown.clone();
            tokio::spawn(async move {
                if ous.is_empty() {
                    return;
                }
                let mut said = false;
                loop {
                    let signal = wake.clone();
                    let on_change = move || signal.notify_one();
                    tokio::select! {
                        result = directory.watch_changes(&ous, &on_change) => {
                            if let Err(e) = result {
                                // Said once, not every minute: the polling carries on.
                                if !said {
                                    tracing::warn!(error = %e, "AD change notifications unavailable: watching by polling alone");
                                    said = true;
                                }
                            }
                        }
                        _ = stop.cancelled() => return,
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(60)) => {}
                        _ = stop.cancelled() => return,
                    }
                }
            })
        };
        loop {
            let found = match watcher.round().await {
                Ok(report) if report.queued > 0 || report.full => {
                    tracing::info!(?report, "partner accounts watched");
                    true
                }
                Ok(report) => {
                    tracing::debug!(?report, "partner accounts watched");
                    false
                }
                Err(e) => {
                    tracing::error!(error = %e, "watching partner accounts failed");
                    false
                }
            };
            // A notification can come before its change is committed (the round then finds
            // nothing): one more round shortly after, rather than a whole poll interval later.
            let pause = match (woken, found) {
                (true, false) => RECHECK_AFTER_NOTIFICATION.min(*every),
                _ => *every,
            };
            woken = tokio::select! {
                _ = tokio::time::sleep(pause) => false,
                _ = wake.notified() => true,
                _ = shutdown.cancelled() => break,
            };
        }
        let _ = notifications.await;
    }

    /// The converge step; an error where AD is out of reach.
    pub fn converger(&self) -> Result<&Arc<Converger>, AppError> {
        self.converger
            .as_ref()
            .ok_or(AppError::Missing("the directory"))
    }

    /// The subscription keeper; an error where no subscription is configured.
    pub fn keeper(&self) -> Result<&Arc<SubscriptionKeeper>, AppError> {
        self.keeper
            .as_ref()
            .ok_or(AppError::Missing("the subscription keeper"))
    }

    /// The workers, until `shutdown`; then the jobs in hand finish.
    pub async fn run_workers(&self, shutdown: CancellationToken) {
        worker::run(
            self.queue.clone(),
            self.jobs.clone(),
            self.workers.clone(),
            shutdown,
        )
        .await
    }

    /// Ensures the subscription now and then every `subscription_check`; after a failure,
    /// tries again sooner.
    pub async fn keep_subscription(&self, shutdown: CancellationToken) {
        let Some(keeper) = &self.keeper else { return };
        let every = self.schedule.subscription_check;
        loop {
            let pause = match keeper.ensure().await {
                Ok(ensured) => {
                    tracing::info!(outcome = ?ensured.outcome, "subscription checked");
                    every
                }
                Err(e) => {
                    tracing::error!(error = %e, "subscription check failed");
                    every.min(Duration::from_secs(60))
                }
            };
            // A group's subscription that fails (Group.Read.All not granted, say) is said and
            // tried at the next check: every group's changes are read every interval anyway.
            match keeper.ensure_groups().await {
                Ok(groups) if groups.failed > 0 => {
                    tracing::warn!(?groups, "scope groups' subscriptions checked")
                }
                Ok(groups) if groups != Default::default() => {
                    tracing::info!(?groups, "scope groups' subscriptions checked")
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::error!(error = %e, "checking the scope groups' subscriptions failed")
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = shutdown.cancelled() => return,
            }
        }
    }

    /// The schedule of [`Reconciler::scheduled_run`] at start and every `interval`, and at once
    /// when a lifecycle event asks for a delta round (where this host runs them).
    pub async fn run_schedule(&self, roles: Roles, shutdown: CancellationToken) {
        loop {
            self.check_scope_tree().await;
            match self
                .reconciler
                .scheduled_run(roles, self.schedule.sweep_interval)
                .await
            {
                Ok(report) => tracing::info!(?report, "reconciliation done"),
                Err(e) => tracing::error!(error = %e, "reconciliation failed"),
            }
            let woken = async {
                match roles.delta {
                    true => self.reconcile_now.notified().await,
                    false => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(self.schedule.interval) => {}
                _ = woken => tracing::info!("lifecycle event: reconciling now"),
                _ = shutdown.cancelled() => return,
            }
        }
    }
}
