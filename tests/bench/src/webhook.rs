//! Section 1, webhook: notifications per second and time to answer, shadowsync's handler (durable
//! embedded queue, group commit) beside a bare axum handler that answers 202, under the same load.

use crate::report::{Measure, Row, Section};
use crate::stats::{summarize, Summary};
use crate::Ctx;
use anyhow::{ensure, Context, Result};
use axum::body::Bytes;
use axum::http::StatusCode;
use axum::routing::post;
use axum::Router;
use secrecy::SecretString;
use shadowsync_core::ObjectId;
use shadowsync_queue::{ChangeType, EmbeddedQueue, Job, JobSource, PendingJobs, Queue};
use shadowsync_state::EmbeddedStore;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

const CLIENT_STATE: &str = "bench-client-state-4f1d9c2b7e";
const SUBSCRIPTION: &str = "7f1e3b52-0c4d-4a8e-9b6f-2d1c0e9a8b7c";
const ROUNDS: u32 = 3;

/// A server on a free loopback port until the token is cancelled.
async fn serve(router: Router, stop: CancellationToken) -> Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, router)
            .with_graceful_shutdown(stop.cancelled_owned())
            .await;
    });
    Ok(addr)
}

/// A change notification body of `items` items in Graph's shape, each for a different user
/// (numbered from `first`), so the queue stores every one.
fn body(tenant: &str, first: u64, items: usize) -> String {
    let values: Vec<String> = (0..items as u64)
        .map(|k| {
            let user = format!("00000000-0000-4000-8000-{:012x}", first + k);
            format!(
                r##"{{"subscriptionId":"{SUBSCRIPTION}","subscriptionExpirationDateTime":"2030-01-01T00:00:00.0000000Z","changeType":"updated","resource":"Users/{user}","resourceData":{{"@odata.type":"#Microsoft.Graph.User","@odata.id":"Users/{user}","id":"{user}","organizationId":"{tenant}"}},"clientState":"{CLIENT_STATE}","tenantId":"{tenant}"}}"##
            )
        })
        .collect();
    format!(r#"{{"value":[{}]}}"#, values.join(","))
}

struct Load {
    latencies: Vec<Duration>,
    elapsed: Duration,
}

/// `concurrency` clients POST bodies of `items` items back to back for `duration`.
async fn load(
    http: &reqwest::Client,
    addr: SocketAddr,
    tenant: &str,
    items: usize,
    concurrency: usize,
    duration: Duration,
    counter: &Arc<AtomicU64>,
) -> Result<Load> {
    let url = format!("http://{addr}/api/notifications");
    let started = Instant::now();
    let deadline = started + duration;
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| {
            let (http, url, tenant, counter) = (
                http.clone(),
                url.clone(),
                tenant.to_string(),
                counter.clone(),
            );
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                while Instant::now() < deadline {
                    let first = counter.fetch_add(items as u64, Ordering::Relaxed);
                    let payload = body(&tenant, first, items);
                    let sent = Instant::now();
                    let response = http
                        .post(&url)
                        .header("content-type", "application/json")
                        .body(payload)
                        .send()
                        .await?;
                    let status = response.status();
                    response.bytes().await?;
                    latencies.push(sent.elapsed());
                    ensure!(status == StatusCode::ACCEPTED, "answered {status}");
                }
                Ok::<_, anyhow::Error>(latencies)
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.extend(t.await??);
    }
    Ok(Load {
        latencies,
        elapsed: started.elapsed(),
    })
}

struct Target {
    latencies: Vec<Duration>,
    elapsed: Duration,
    /// The queue's commits of sends during the load (shadowsync only).
    commits: u64,
}

impl Target {
    fn rps(&self) -> f64 {
        self.latencies.len() as f64 / self.elapsed.as_secs_f64()
    }
    fn summary(&self) -> Summary {
        summarize(self.latencies.clone())
    }
}

/// Medians of one call at a time, no HTTP: what the handler waits for.
struct Alone {
    /// `send_batch` of 1 and of 20 jobs straight to the queue.
    send: (Summary, Summary),
    /// `PendingJobs::send` of 1 and of 20 jobs: what the handler calls (marks, then send_batch).
    marked: (Summary, Summary),
}

/// Each of the four calls `n` times, in turn.
async fn enqueue_alone(queue: &EmbeddedQueue, pending: &PendingJobs, n: usize) -> Result<Alone> {
    let mut samples: [Vec<Duration>; 4] = Default::default();
    let mut next = 0usize;
    for _ in 0..n {
        for (slot, items) in [1usize, 20, 1, 20].into_iter().enumerate() {
            let jobs: Vec<Job> = (0..items)
                .map(|j| Job::Converge {
                    user_id: ObjectId::parse(&format!("ffffffff-0000-4000-8000-{:012x}", next + j))
                        .expect("a GUID"),
                    change_type: Some(ChangeType::Updated),
                    subscription_id: Some(SUBSCRIPTION.into()),
                    received_at: chrono::Utc::now(),
                    source: JobSource::Notification,
                })
                .collect();
            next += items;
            let started = Instant::now();
            if slot < 2 {
                queue.send_batch(jobs).await?;
            } else {
                pending.send(queue, jobs).await?;
            }
            samples[slot].push(started.elapsed());
        }
    }
    let [send_1, send_20, marked_1, marked_20] = samples.map(summarize);
    Ok(Alone {
        send: (send_1, send_20),
        marked: (marked_1, marked_20),
    })
}

/// One small redb write transaction committed `n` times, with and without the fsync: what the
/// durability of a commit costs on this disk.
fn redb_commits(dir: &std::path::Path, n: usize) -> Result<(Summary, Summary)> {
    use shadowsync_state::redb::{Database, Durability, TableDefinition};
    const TABLE: TableDefinition<u64, &[u8]> = TableDefinition::new("bench");
    let db = Database::create(dir.join("commits.redb"))?;
    let mut durable = Vec::new();
    let mut volatile = Vec::new();
    let value = [7u8; 300];
    for k in 0..n as u64 {
        for (fsync, samples) in [(true, &mut durable), (false, &mut volatile)] {
            let started = Instant::now();
            let mut tx = db.begin_write()?;
            if !fsync {
                tx.set_durability(Durability::None);
            }
            tx.open_table(TABLE)?
                .insert(k * 2 + u64::from(fsync), value.as_slice())?;
            tx.commit()?;
            samples.push(started.elapsed());
        }
    }
    Ok((summarize(durable), summarize(volatile)))
}

pub async fn run(ctx: &Ctx) -> Result<Section> {
    let mut section = Section::new(
        "webhook",
        "Webhook: notifications per second and time to answer",
    );
    let per_target = Duration::from_secs_f64(ctx.webhook_seconds());
    let concurrency = ctx.args.concurrency;
    let tenant = graph_sim::SimConfig::default().tenant_id;

    let dir = tempfile::tempdir()?;
    let store = EmbeddedStore::open(dir.path().join("state.redb"))?;
    let queue = Arc::new(EmbeddedQueue::new(&store, 8)?);
    let stop = CancellationToken::new();
    // As `serve` has it (`Storage::embedded`): the marks of waiting jobs in a map in memory.
    let pending = Arc::new(PendingJobs::in_process());
    let webhook = shadowsync_notifications::router(shadowsync_notifications::WebhookState::new(
        queue.clone(),
        pending.clone(),
        SecretString::from(CLIENT_STATE),
        tenant.parse().context("tenant id")?,
    ));
    let webhook_addr = serve(webhook, stop.clone()).await?;
    let bare = Router::new().route(
        "/api/notifications",
        post(|_body: Bytes| async { StatusCode::ACCEPTED }),
    );
    let bare_addr = serve(bare, stop.clone()).await?;
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency * 2)
        .build()?;
    let counter = Arc::new(AtomicU64::new(1));

    section.setup = format!(
        "Both servers in the bench process on 127.0.0.1, each its own axum listener; the load \
         generator is reqwest over HTTP/1.1 keep-alive with {concurrency} concurrent clients \
         posting back to back, every body a Graph change notification in Microsoft's shape with \
         distinct users (so the queue stores every item). shadowsync: `shadowsync_notifications::router` \
         on the durable `EmbeddedQueue` (redb, fsync'd transactions; the batches of requests that \
         arrive while a commit runs are written together in the next one, group commit; tracing \
         off). Bare: an axum route that reads the body and answers 202. {ROUNDS} alternating \
         rounds per target and batch size, {:.1} s per target in all, after a warm-up.",
        per_target.as_secs_f64()
    );

    let mut enqueued_items = 0u64;
    // Requests per commit of the queue, 1-item then 20-item bodies.
    let mut per_commit = Vec::new();
    for items in [1usize, 20] {
        // Warm-up: connections open, queue file grown a little.
        for addr in [bare_addr, webhook_addr] {
            let warm = load(
                &http,
                addr,
                &tenant,
                items,
                concurrency,
                Duration::from_millis(200),
                &counter,
            )
            .await?;
            if addr == webhook_addr {
                enqueued_items += (warm.latencies.len() * items) as u64;
            }
        }
        let mut shadow = Target {
            latencies: Vec::new(),
            elapsed: Duration::ZERO,
            commits: 0,
        };
        let mut baseline = Target {
            latencies: Vec::new(),
            elapsed: Duration::ZERO,
            commits: 0,
        };
        for _ in 0..ROUNDS {
            for (addr, target) in [(bare_addr, &mut baseline), (webhook_addr, &mut shadow)] {
                let commits = queue.send_commits();
                let l = load(
                    &http,
                    addr,
                    &tenant,
                    items,
                    concurrency,
                    per_target / ROUNDS,
                    &counter,
                )
                .await?;
                if addr == webhook_addr {
                    enqueued_items += (l.latencies.len() * items) as u64;
                }
                target.latencies.extend(l.latencies);
                target.elapsed += l.elapsed;
                target.commits += queue.send_commits() - commits;
            }
        }
        let (s, b) = (shadow.summary(), baseline.summary());
        let label = if items == 1 {
            "1-item batches"
        } else {
            "20-item batches"
        };
        let per = s.n as f64 / shadow.commits.max(1) as f64;
        per_commit.push(per);
        let rps = Row::new(
            format!("{label}: notifications/s"),
            Measure::rate(shadow.rps() * items as f64, "notif"),
        )
        .against(
            "bare 202",
            Measure::rate(baseline.rps() * items as f64, "notif"),
        )
        .note(format!(
            "{} requests/s ({} requests, {:.1} per commit)",
            crate::report::Measure::rate(shadow.rps(), "req")
                .to_string()
                .trim_end_matches(" req/s"),
            s.n,
            per,
        ));
        // Both in the summary: 20 items is bulk changes, 1 item what a lone change costs (issue
        // 16 asks for half the bare handler's rate at 16 clients).
        section.push(rps.headline());
        section.push(
            Row::new(format!("{label}: p50 time to answer"), Measure::ms(s.p50))
                .against("bare 202", Measure::ms(b.p50)),
        );
        section.push(
            Row::new(format!("{label}: p99 time to answer"), Measure::ms(s.p99))
                .against("bare 202", Measure::ms(b.p99)),
        );
    }

    // What the handler waits for, measured alone.
    let alone = enqueue_alone(&queue, &pending, if ctx.args.smoke { 20 } else { 200 }).await?;
    let (alone_1, alone_20) = (&alone.send.0, &alone.send.1);
    section.push(
        Row::new("send_batch alone, 1 job: p50", Measure::ms(alone_1.p50))
            .note("EmbeddedQueue::send_batch called in-process, one at a time: the redb commit"),
    );
    section.push(
        Row::new("send_batch alone, 20 jobs: p50", Measure::ms(alone_20.p50))
            .note("same, one transaction for the 20 jobs (calls alternate with the 1-job ones)"),
    );
    let (marked_1, marked_20) = (&alone.marked.0, &alone.marked.1);
    section.push(
        Row::new(
            "marks and send_batch alone, 1 job: p50",
            Measure::ms(marked_1.p50),
        )
        .against("send_batch alone", Measure::ms(alone_1.p50))
        .note(
            "PendingJobs::send, as the handler calls it: each job marked in the in-process \
                 map before send_batch and after",
        ),
    );
    section.push(
        Row::new(
            "marks and send_batch alone, 20 jobs: p50",
            Measure::ms(marked_20.p50),
        )
        .against("send_batch alone", Measure::ms(alone_20.p50))
        .note("same, 20 jobs"),
    );

    let commits = if ctx.args.smoke { 20 } else { 200 };
    let (durable, volatile) = tokio::task::spawn_blocking({
        let dir = dir.path().to_path_buf();
        move || redb_commits(&dir, commits)
    })
    .await??;
    section.push(
        Row::new(
            "redb commit of one small write: p50",
            Measure::ms(durable.p50),
        )
        .against("same without fsync", Measure::ms(volatile.p50))
        .note("a table of its own, in the same directory"),
    );

    let depth = queue.stats().await?.depth;
    ensure!(
        depth >= enqueued_items,
        "the queue holds {depth} jobs, fewer than the {enqueued_items} notifications accepted"
    );
    stop.cancel();

    let one = &section.rows[0];
    let twenty = &section.rows[3];
    section.bounds = format!(
        "Every accepted notification is in the queue, committed with an fsync, before the 202 \
         (the queue promises that an accepted notification survives a crash), and redb has one \
         writer at a time. So the queue writes the batches of every request that arrives while \
         a commit runs together in the next transaction (group commit): at {concurrency} \
         clients {:.1} requests share a commit with 1-item bodies, and the fsync (a bare redb \
         commit costs {} with it and {} without) is paid once per group instead of once per \
         request. A send only appends its jobs to the queue's inbox, one B-tree written at its \
         right edge; the next receive files them into groups, ready heads and dedup keys (none \
         runs here, so the inbox grows through the section, as in a burst). A request that \
         arrives alone still pays a commit of its own ({} for a send_batch of one job, one call \
         at a time). Before the queue and after it, the handler \
         marks each job so that a redelivered notification folds into the waiting job \
         (`PendingJobs`); `serve` keeps those marks in a map in its memory (no transaction), so \
         one call at a time, marks and queue cost {} for one job and {} for 20, where \
         send_batch alone costs {} and {}: what is left is the queue's commit ({:.1} requests \
         per commit with 20-item bodies). The webhook answers {:.2} of \
         the bare handler's rate with 1-item bodies and {} with 20-item ones ({}), on the two \
         cores the load generator uses too. With {concurrency} clients each waiting for its \
         answer, the rate is {concurrency} over the time to answer: a request waits for the \
         commit under way and then its own, so what remains is the fsync'd redb commit itself \
         (a write-ahead log of our own, fsync'd alone, would be the next step; its risk to the \
         queue's durability is not worth it while either figure is far above what the \
         provisioner can apply to AD, section 3).",
        per_commit[0],
        Measure::ms(durable.p50),
        Measure::ms(volatile.p50),
        Measure::ms(alone_1.p50),
        Measure::ms(marked_1.p50),
        Measure::ms(marked_20.p50),
        Measure::ms(alone_1.p50),
        Measure::ms(alone_20.p50),
        per_commit[1],
        one.ratio().unwrap_or(0.0),
        twenty
            .ratio()
            .map_or("–".to_string(), |r| format!("{r:.3}")),
        twenty.figure,
    );
    Ok(section)
}
