//! Section 4, reconcile at scale: delta rounds over a large simulated tenant, each in a child
//! process (this binary again, hidden subcommand) so that its peak RSS is its own; beside the
//! same child fetching the same delta pages raw.

use crate::machine::status_kib;
use crate::report::{int, plural, Measure, Row, Section};
use crate::stats::median;
use crate::Ctx;
use anyhow::{ensure, Context, Result};
use graph_sim::users::BulkUsers;
use graph_sim::{SimClient, SimConfig};
use serde::{Deserialize, Serialize};
use shadowsync_app::{App, Parts};
use shadowsync_core::user::USER_SELECT;
use shadowsync_core::ObjectId;
use shadowsync_directory::LdapDirectory;
use shadowsync_graph::{Credential, GraphClient, GraphConfig};
use shadowsync_queue::{
    DeadLetter, Delivery, Disposition, EmbeddedQueue, Job, JobSource, Queue, QueueError,
    QueueStats, Receipt,
};
use shadowsync_state::records::{CHECKPOINTS, USERS_DELTA};
use shadowsync_state::{get_json, put_json, DeltaCheckpoint, EmbeddedStore, KeyValueStore};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

/// Share of the simulated users who are guests.
const GUEST_PERCENT: usize = 30;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Mode {
    /// `Reconciler::run_delta` from the checkpoint in the store (none: a full round).
    Shadowsync,
    /// The same with a queue that discards the jobs: the reconciler without the queue's cost.
    Discarding,
    /// GETs from `start_url`, following `@odata.nextLink`, nothing else.
    Raw,
}

/// A queue that takes every job and keeps none.
struct Discard;

#[async_trait::async_trait]
impl Queue for Discard {
    async fn send_batch(&self, _: Vec<Job>) -> Result<(), QueueError> {
        Ok(())
    }
    async fn receive(&self, _: usize, _: std::time::Duration) -> Result<Vec<Delivery>, QueueError> {
        Ok(Vec::new())
    }
    async fn ack(&self, r: &Receipt) -> Result<(), QueueError> {
        Err(QueueError::UnknownReceipt(r.message_id.clone()))
    }
    async fn retry_later(
        &self,
        r: &Receipt,
        _: std::time::Duration,
        _: &str,
    ) -> Result<Disposition, QueueError> {
        Err(QueueError::UnknownReceipt(r.message_id.clone()))
    }
    async fn dead_letter(&self, r: &Receipt, _: &str) -> Result<(), QueueError> {
        Err(QueueError::UnknownReceipt(r.message_id.clone()))
    }
    async fn extend(&self, r: &Receipt, _: std::time::Duration) -> Result<(), QueueError> {
        Err(QueueError::UnknownReceipt(r.message_id.clone()))
    }
    async fn stats(&self) -> Result<QueueStats, QueueError> {
        Ok(QueueStats::default())
    }
    async fn dead_letters(&self) -> Result<Vec<DeadLetter>, QueueError> {
        Ok(Vec::new())
    }
    async fn redrive(&self, id: &str) -> Result<(), QueueError> {
        Err(QueueError::UnknownDeadLetter(id.into()))
    }
    async fn drop_dead_letter(&self, id: &str) -> Result<(), QueueError> {
        Err(QueueError::UnknownDeadLetter(id.into()))
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChildSpec {
    pub mode: Mode,
    pub sim_base: String,
    pub state_path: PathBuf,
    pub start_url: String,
    /// Stop the round after this long (`Reconciler::run_delta_until`), as the reconciler
    /// Lambda does before its deadline; the next child resumes it.
    #[serde(default)]
    pub budget_ms: Option<u64>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct ChildResult {
    pub elapsed_ms: f64,
    pub pages: usize,
    pub items: usize,
    pub jobs: usize,
    /// VmRSS once set up, before the round.
    pub idle_kib: u64,
    /// VmHWM at the end: the process's peak.
    pub peak_kib: u64,
    /// The round reached its deltaLink (a budget may stop it before).
    pub complete: bool,
}

#[derive(Deserialize)]
struct RawPage {
    value: Vec<serde::de::IgnoredAny>,
    #[serde(rename = "@odata.nextLink")]
    next: Option<String>,
}

/// The child's side: one round, then one JSON line on standard output.
pub async fn child(spec: &str) -> Result<()> {
    let spec: ChildSpec = serde_json::from_str(spec)?;
    let sim = SimConfig::default();
    let result = match spec.mode {
        Mode::Raw => {
            let client = SimClient::new(&spec.sim_base, &sim);
            let idle_kib = status_kib("self", "VmRSS");
            let started = Instant::now();
            let (mut pages, mut items) = (0, 0);
            let mut url = Some(spec.start_url.clone());
            while let Some(u) = url {
                let response = client.graph(reqwest::Method::GET, &u, None).await?;
                ensure!(
                    response.status().is_success(),
                    "GET {u}: {}",
                    response.status()
                );
                let page: RawPage = serde_json::from_slice(&response.bytes().await?)?;
                pages += 1;
                items += page.value.len();
                url = page.next;
            }
            ChildResult {
                elapsed_ms: started.elapsed().as_secs_f64() * 1000.0,
                pages,
                items,
                jobs: 0,
                idle_kib,
                peak_kib: 0,
                complete: true,
            }
        }
        Mode::Shadowsync | Mode::Discarding => {
            let samba = shadowsync_e2e::samba();
            let policy = samba.policy();
            let store = EmbeddedStore::open(&spec.state_path)?;
            let queue: Arc<dyn Queue> = match spec.mode {
                Mode::Discarding => Arc::new(Discard),
                _ => Arc::new(EmbeddedQueue::new(&store, 10)?),
            };
            let mut config = GraphConfig::new(
                &sim.tenant_id,
                &sim.client_id,
                Credential::secret(&sim.client_secret),
            );
            config.login_endpoint = spec.sim_base.parse()?;
            config.graph_endpoint = spec.sim_base.parse()?;
            let directory = LdapDirectory::connect(samba.directory_config(), &policy).await?;
            let app = App::from_parts(
                Parts::new(Arc::new(GraphClient::new(config)?), Arc::new(store), queue)
                    .directory(Arc::new(directory), policy),
            );
            let reconciler = &app.reconciler;
            let idle_kib = status_kib("self", "VmRSS");
            let started = Instant::now();
            let deadline = spec
                .budget_ms
                .map(|ms| chrono::Utc::now() + chrono::Duration::milliseconds(ms as i64));
            let report = reconciler.run_delta_until(deadline).await?;
            ChildResult {
                elapsed_ms: started.elapsed().as_secs_f64() * 1000.0,
                pages: report.pages,
                items: report.users_seen,
                jobs: report.jobs_enqueued,
                idle_kib,
                peak_kib: 0,
                complete: report.complete,
            }
        }
    };
    let result = ChildResult {
        peak_kib: status_kib("self", "VmHWM"),
        ..result
    };
    println!("{}", serde_json::to_string(&result)?);
    Ok(())
}

/// `jobs` converge jobs into a fresh embedded queue in batches of `batch`.
async fn enqueue_in_batches(dir: &Path, jobs: usize, batch: usize) -> Result<f64> {
    let store = EmbeddedStore::open(dir.join(format!("batches-{batch}.redb")))?;
    let queue = EmbeddedQueue::new(&store, 10)?;
    let now = chrono::Utc::now();
    let all: Vec<Job> = (0..jobs)
        .map(|i| Job::Converge {
            user_id: ObjectId::parse(&format!("00000000-0000-4000-8000-{i:012x}")).expect("a GUID"),
            change_type: None,
            subscription_id: None,
            received_at: now,
            source: JobSource::Reconciler,
        })
        .collect();
    let started = Instant::now();
    for chunk in all.chunks(batch) {
        queue.send_batch(chunk.to_vec()).await?;
    }
    Ok(started.elapsed().as_secs_f64() * 1000.0)
}

async fn spawn_child(spec: &ChildSpec) -> Result<ChildResult> {
    let out = tokio::process::Command::new(std::env::current_exe()?)
        .arg("reconcile-child")
        .arg(serde_json::to_string(spec)?)
        .stdin(std::process::Stdio::null())
        .output()
        .await?;
    ensure!(
        out.status.success(),
        "child {:?} failed: {}",
        spec.mode,
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout.lines().last().context("no output from the child")?;
    Ok(serde_json::from_str(last)?)
}

async fn checkpoint(path: &Path) -> Result<(DeltaCheckpoint, u64)> {
    let store = EmbeddedStore::open(path)?;
    let cp = get_json::<DeltaCheckpoint>(&store, CHECKPOINTS, USERS_DELTA)
        .await?
        .context("no delta checkpoint after a round")?;
    Ok((cp.value, cp.version))
}

/// Puts the checkpoint back where an earlier round left it, so the same round can be repeated.
async fn restore_checkpoint(path: &Path, cp: &DeltaCheckpoint) -> Result<()> {
    let store = EmbeddedStore::open(path)?;
    let version = store
        .get(CHECKPOINTS, USERS_DELTA)
        .await?
        .map(|v| v.version);
    put_json(&store, CHECKPOINTS, USERS_DELTA, cp, version).await?;
    Ok(())
}

/// Medians of repeated runs (time, peak RSS) and the last run's counts.
struct Repeated {
    ms: f64,
    peak_kib: u64,
    idle_kib: u64,
    last: ChildResult,
}

fn repeated(results: &[ChildResult]) -> Repeated {
    let ms: Vec<f64> = results.iter().map(|r| r.elapsed_ms).collect();
    let peaks: Vec<f64> = results.iter().map(|r| r.peak_kib as f64).collect();
    let idle: Vec<f64> = results.iter().map(|r| r.idle_kib as f64).collect();
    Repeated {
        ms: median(&ms),
        peak_kib: median(&peaks) as u64,
        idle_kib: median(&idle) as u64,
        last: *results.last().expect("at least one run"),
    }
}

/// A full round over `users` stopped by a budget and resumed by the next child until it
/// completes, beside the same round uninterrupted; both with a queue that discards the jobs
/// (the reconciler alone).
struct Resumed {
    users: usize,
    budget_ms: u64,
    runs: Vec<ChildResult>,
    whole: ChildResult,
}

async fn resumed_round(ctx: &Ctx, dir: &Path) -> Result<Resumed> {
    let users = ctx.resume_users();
    let guests = users * GUEST_PERCENT / 100;
    let sim = graph_sim::start(SimConfig::default(), "127.0.0.1:0".parse()?).await?;
    let graph = SimClient::new(sim.base_url(), sim.config());
    let seeded = Instant::now();
    graph
        .bulk_users(&BulkUsers {
            guests,
            members: users - guests,
            prefix: format!("{}r", ctx.tag),
            ..Default::default()
        })
        .await?;
    println!(
        "    seeded {} users for the resumed round in {:.1} s",
        int(users),
        seeded.elapsed().as_secs_f64()
    );
    let spec = |state: &Path, budget_ms| ChildSpec {
        mode: Mode::Discarding,
        sim_base: sim.base_url(),
        state_path: state.to_path_buf(),
        start_url: String::new(),
        budget_ms,
    };
    let whole = spawn_child(&spec(&dir.join("whole.redb"), None)).await?;
    ensure!(
        whole.complete && whole.items == users && whole.jobs == guests,
        "the uninterrupted round: {whole:?}"
    );
    // About eight runs, as a tenant too large for one invocation would take.
    let budget_ms = ((whole.elapsed_ms / 8.0) as u64).max(50);
    let state = dir.join("resumed.redb");
    let mut runs = Vec::new();
    loop {
        let run = spawn_child(&spec(&state, Some(budget_ms))).await?;
        runs.push(run);
        if run.complete {
            break;
        }
        ensure!(runs.len() < 1000, "the resumed round does not end");
    }
    sim.shutdown().await;
    let last = runs.last().expect("one run at least");
    ensure!(
        runs.len() > 1,
        "the round ended in one run of {budget_ms} ms: nothing was resumed"
    );
    ensure!(
        last.items == users && last.jobs == guests,
        "the resumed round saw {} users and sent {} jobs over {} runs; {} and {} expected",
        last.items,
        last.jobs,
        runs.len(),
        users,
        guests
    );
    Ok(Resumed {
        users,
        budget_ms,
        runs,
        whole,
    })
}

pub async fn run(ctx: &Ctx) -> Result<Section> {
    let users = ctx.users();
    let reps = if ctx.args.smoke { 1 } else { 3 };
    let guests = users * GUEST_PERCENT / 100;
    let changed = (guests / 100).max(1);
    let mut section = Section::new(
        "reconcile",
        format!("Reconcile at scale: delta rounds over {} users", int(users)),
    );
    let sim = graph_sim::start(SimConfig::default(), "127.0.0.1:0".parse()?).await?;
    let graph = SimClient::new(sim.base_url(), sim.config());
    let seeded = Instant::now();
    let created = graph
        .bulk_users(&BulkUsers {
            guests,
            members: users - guests,
            prefix: ctx.tag.clone(),
            ..Default::default()
        })
        .await?;
    println!(
        "    seeded {} users ({} guests) in {:.1} s",
        int(users),
        int(guests),
        seeded.elapsed().as_secs_f64()
    );
    let dir = tempfile::tempdir()?;
    let base = sim.base_url();
    let full_url = format!("{base}/v1.0/users/delta?$select={USER_SELECT}");
    let spec = |mode, state: &Path, start_url: &str| ChildSpec {
        mode,
        sim_base: base.clone(),
        state_path: state.to_path_buf(),
        start_url: start_url.to_string(),
        budget_ms: None,
    };

    // Full rounds: a fresh store each time (no checkpoint); the last one's store is kept.
    let mut full = (Vec::new(), Vec::new());
    let mut discarding = Vec::new();
    let mut state = PathBuf::new();
    for rep in 0..reps {
        let scratch = dir.path().join(format!("discarding-{rep}.redb"));
        state = dir.path().join(format!("full-{rep}.redb"));
        full.0
            .push(spawn_child(&spec(Mode::Raw, &state, &full_url)).await?);
        full.1
            .push(spawn_child(&spec(Mode::Shadowsync, &state, "")).await?);
        discarding.push(spawn_child(&spec(Mode::Discarding, &scratch, "")).await?);
    }
    let queue_file_mib = std::fs::metadata(&state)?.len() as f64 / 1024.0 / 1024.0;
    let (cp_full, _) = checkpoint(&state).await?;

    // 1% of the guests change.
    for id in created
        .guests
        .iter()
        .step_by(guests / changed)
        .take(changed)
    {
        graph
            .patch_user(
                id,
                serde_json::json!({"displayName": format!("Changed {id}")}),
            )
            .await?;
    }
    let mut incremental = (Vec::new(), Vec::new());
    for _ in 0..reps {
        restore_checkpoint(&state, &cp_full).await?;
        incremental
            .0
            .push(spawn_child(&spec(Mode::Raw, &state, &cp_full.delta_link)).await?);
        incremental
            .1
            .push(spawn_child(&spec(Mode::Shadowsync, &state, "")).await?);
    }
    let (cp_after, _) = checkpoint(&state).await?;

    // Nothing changes.
    let mut unchanged = (Vec::new(), Vec::new());
    for _ in 0..reps {
        restore_checkpoint(&state, &cp_after).await?;
        unchanged
            .0
            .push(spawn_child(&spec(Mode::Raw, &state, &cp_after.delta_link)).await?);
        unchanged
            .1
            .push(spawn_child(&spec(Mode::Shadowsync, &state, "")).await?);
    }
    sim.shutdown().await;

    let rounds = [
        ("full round", repeated(&full.0), repeated(&full.1)),
        (
            "1% of guests changed",
            repeated(&incremental.0),
            repeated(&incremental.1),
        ),
        (
            "nothing changed",
            repeated(&unchanged.0),
            repeated(&unchanged.1),
        ),
    ];
    for (what, raw, shadow) in &rounds {
        ensure!(
            raw.last.items == shadow.last.items && raw.last.pages == shadow.last.pages,
            "{what}: raw saw {} items in {} pages, shadowsync {} in {}",
            raw.last.items,
            raw.last.pages,
            shadow.last.items,
            shadow.last.pages
        );
    }
    let (full_raw, full_s) = (&rounds[0].1, &rounds[0].2);
    let full_d = repeated(&discarding);
    ensure!(
        full_s.last.jobs == guests,
        "full round enqueued {} jobs",
        full_s.last.jobs
    );
    let inc_s = &rounds[1].2;
    ensure!(
        inc_s.last.items == changed && inc_s.last.jobs == changed,
        "incremental round saw {} items, enqueued {} jobs; {changed} changed",
        inc_s.last.items,
        inc_s.last.jobs
    );

    section.setup = format!(
        "{} users in the simulator ({} guests, the rest members, interleaved), \
         delta pages of {} users as the simulator serves them. Each round runs in a child \
         process (this binary re-executed) so its peak RSS (`VmHWM`) is its own; the parent holds \
         the simulator. shadowsync: `Reconciler::run_delta` on the embedded store and queue \
         (jobs enqueued in batches of 100, checkpoint saved; the AD writes are not part of it). \
         Baseline: the same child fetching the same pages raw (GET, skim the page for \
         `@odata.nextLink`, nothing else). Times are the round alone (token fetch included, \
         process start excluded); {}, alternating. Rounds: the first (full) round; then {} \
         guests (1%) change their displayName and a round starts from the full round's \
         deltaLink; then a round in which nothing changed.",
        int(users),
        int(guests),
        SimConfig::default().delta_page_size,
        if reps == 1 {
            "one run each".to_string()
        } else {
            format!("median of {reps} runs each")
        },
        int(changed),
    );
    for (what, raw, shadow) in &rounds {
        let time_row = Row::new(format!("{what}: time"), Measure::ms_f(shadow.ms))
            .against("raw GETs", Measure::ms_f(raw.ms))
            .note(format!(
                "{} in {}, {}",
                plural(shadow.last.items, "user"),
                plural(shadow.last.pages, "page"),
                plural(shadow.last.jobs, "job")
            ));
        section.push(if *what == "1% of guests changed" {
            time_row.headline()
        } else {
            time_row
        });
        section.push(
            Row::new(
                format!("{what}: peak RSS"),
                Measure::mib_from_kib(shadow.peak_kib),
            )
            .against("raw GETs", Measure::mib_from_kib(raw.peak_kib))
            .note(format!(
                "{} before the round (raw {})",
                Measure::mib_from_kib(shadow.idle_kib),
                Measure::mib_from_kib(raw.idle_kib)
            )),
        );
    }
    section.push(
        Row::new("full round, jobs discarded: time", Measure::ms_f(full_d.ms))
            .against("raw GETs", Measure::ms_f(full_raw.ms))
            .note("the same round with a queue that keeps nothing: the reconciler alone"),
    );
    section.push(
        Row::new(
            "full round, jobs discarded: peak RSS",
            Measure::mib_from_kib(full_d.peak_kib),
        )
        .against("raw GETs", Measure::mib_from_kib(full_raw.peak_kib))
        .note(format!(
            "the embedded queue's file after the full round: {queue_file_mib:.1} MiB"
        )),
    );
    let by_100 = enqueue_in_batches(dir.path(), guests, 100).await?;
    let by_1000 = enqueue_in_batches(dir.path(), guests, 1000).await?;
    section.push(
        Row::new(
            format!(
                "{} jobs into the embedded queue, batches of 100",
                int(guests)
            ),
            Measure::ms_f(by_100),
        )
        .against("batches of 1,000", Measure::ms_f(by_1000))
        .note("send_batch alone, in this process: the reconciler sends batches of 100"),
    );
    let resumed = resumed_round(ctx, dir.path()).await?;
    let resumed_ms: f64 = resumed.runs.iter().map(|r| r.elapsed_ms).sum();
    let resumed_peak = resumed.runs.iter().map(|r| r.peak_kib).max().unwrap_or(0);
    section.push(
        Row::new(
            format!(
                "full round over {} users resumed across {} runs: time",
                int(resumed.users),
                resumed.runs.len()
            ),
            Measure::ms_f(resumed_ms),
        )
        .against("the same round uninterrupted", Measure::ms_f(resumed.whole.elapsed_ms))
        .note(format!(
            "each run stopped after {} ms and the next resumed from its saved position; jobs discarded",
            resumed.budget_ms
        ))
        .headline(),
    );
    section.push(
        Row::new(
            format!(
                "full round over {} users: peak RSS of the largest run",
                int(resumed.users)
            ),
            Measure::mib_from_kib(resumed_peak),
        )
        .against(
            format!("the full round over {} users, jobs discarded", int(users)),
            Measure::mib_from_kib(full_d.peak_kib),
        )
        .note(format!(
            "uninterrupted over {} users: {}",
            int(resumed.users),
            Measure::mib_from_kib(resumed.whole.peak_kib)
        )),
    );
    let per_page_raw = full_raw.ms / full_raw.last.pages.max(1) as f64;
    section.bounds = format!(
        "The embedded queue. The reconciler itself costs little beyond fetching: with a queue \
         that discards the jobs, the full round takes {} against {} to fetch the same pages raw, \
         and peaks at {} against {} (pages are processed as they arrive and nothing is kept per \
         user, so this does not grow with the tenant). The rest of the full round, {}, is \
         storing {} jobs in {} durable transactions of 100 (the same jobs in batches of \
         1,000 take {} instead of {}), and redb's cache of the pages it wrote raises the peak to \
         {} (the queue file is {:.1} MiB; redb caches up to 1 GiB by default; with SQS this \
         memory is not in the process). Incremental rounds read only the changed users: {} \
         in {} cost {} ({:.1} ms per page fetched raw), mostly {} and the checkpoint \
         write; a round with nothing to do costs {}: the token, \
         one page and the checkpoint. Such fixed costs make the ratios of small rounds look \
         large while the times stay in milliseconds. A round too long for one run (the \
         reconciler Lambda's 15 minutes) saves its position every 10 s and when it stops for \
         its deadline; over {} users in {} runs it took {} in all against {} uninterrupted \
         (each run's start: the token, the store, the saved position), and no run's peak passed \
         {}: memory does not grow with the tenant.",
        Measure::ms_f(full_d.ms),
        Measure::ms_f(full_raw.ms),
        Measure::mib_from_kib(full_d.peak_kib),
        Measure::mib_from_kib(full_raw.peak_kib),
        Measure::ms_f((full_s.ms - full_d.ms).max(0.0)),
        int(full_s.last.jobs),
        int(full_s.last.jobs.div_ceil(100)),
        Measure::ms_f(by_1000),
        Measure::ms_f(by_100),
        Measure::mib_from_kib(full_s.peak_kib),
        queue_file_mib,
        plural(inc_s.last.items, "user"),
        plural(inc_s.last.pages, "page"),
        Measure::ms_f(inc_s.ms),
        per_page_raw,
        plural(inc_s.last.jobs.div_ceil(100), "queue transaction"),
        Measure::ms_f(rounds[2].2.ms),
        int(resumed.users),
        resumed.runs.len(),
        Measure::ms_f(resumed_ms),
        Measure::ms_f(resumed.whole.elapsed_ms),
        Measure::mib_from_kib(resumed_peak),
    );
    Ok(section)
}
