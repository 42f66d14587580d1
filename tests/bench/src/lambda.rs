//! Lambda-shaped figures (section 5): each function's binary size, the time from process
//! start to ready (its first poll of the Runtime API) and the peak RSS of one provisioner
//! invocation, each beside a bare `lambda_runtime` function (`shadowsync-lambda-baseline`)
//! built the same way and run under the same Runtime API.

use crate::machine::status_kib;
use crate::report::{int, Measure, Row, Section};
use crate::Ctx;
use anyhow::{bail, Context, Result};
use graph_sim::{SimClient, SimConfig};
use serde_json::Value;
use shadowsync_e2e::aws::{self, RuntimeApi};
use shadowsync_e2e::serve::CLIENT_STATE;
use shadowsync_e2e::{unique, AdProbe};
use shadowsync_queue::{ChangeType, Job, JobSource, Queue};
use shadowsync_queue_sqs::SqsQueue;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

pub const FUNCTIONS: [&str; 4] = ["webhook", "provisioner", "subscriptions", "reconciler"];
pub const BASELINE: &str = "shadowsync-lambda-baseline";

/// Where the binaries are: the cargo-lambda artefacts (release, what deploys) under
/// `$CARGO_TARGET_DIR` (default `target`), or, in a smoke run, the debug builds next to this
/// binary.
fn binary(ctx: &Ctx, name: &str) -> PathBuf {
    if ctx.args.smoke {
        std::env::current_exe()
            .expect("current exe")
            .with_file_name(name)
    } else {
        // cargo-lambda puts its artefacts under the cargo target directory.
        std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| shadowsync_e2e::repo_root().join("target"))
            .join("lambda")
            .join(name)
            .join("bootstrap")
    }
}

/// Everything the functions read at start, as infra/template.yaml sets it (secrets as ARNs).
struct Deployment {
    env: Vec<(String, String)>,
    queue: SqsQueue,
    queue_url: String,
    sim: graph_sim::RunningSim,
}

async fn deployment(ctx: &Ctx) -> Result<Deployment> {
    let sim = graph_sim::start(SimConfig::default(), "127.0.0.1:0".parse()?).await?;
    let mut probe = AdProbe::connect(ctx.samba).await?;
    let guests_ou = probe.ou(&format!("bench-lambda-{}", ctx.tag)).await?;
    let disabled_ou = probe
        .ou(&format!("bench-lambda-disabled-{}", ctx.tag))
        .await?;
    let (queue_url, dlq_url) = aws::fifo_queues("bench-lambda", 5).await?;
    let table = aws::state_table("bench-lambda").await?;
    let sdk = aws::sdk_config().await;
    let secrets = aws_sdk_secretsmanager::Client::new(&sdk);
    let secret = |value: String| {
        let secrets = secrets.clone();
        async move {
            let out = secrets
                .create_secret()
                .name(format!("bench-{}", unique()))
                .secret_string(value)
                .send()
                .await?;
            anyhow::Ok(out.arn().context("secret ARN")?.to_string())
        }
    };
    let c = sim.config().clone();
    let samba = ctx.samba;
    let env = vec![
        ("SHADOWSYNC_DEPLOYMENT_MODE", "lambda".to_string()),
        ("SHADOWSYNC_QUEUE_URL", queue_url.clone()),
        ("SHADOWSYNC_DLQ_URL", dlq_url.clone()),
        ("SHADOWSYNC_TABLE_NAME", table),
        ("SHADOWSYNC_GRAPH_TENANT_ID", c.tenant_id.clone()),
        ("SHADOWSYNC_GRAPH_CLIENT_ID", c.client_id.clone()),
        (
            "SHADOWSYNC_GRAPH_LOGIN_ENDPOINT",
            sim.base_url().to_string(),
        ),
        (
            "SHADOWSYNC_GRAPH_GRAPH_ENDPOINT",
            sim.base_url().to_string(),
        ),
        (
            "SHADOWSYNC_GRAPH_CLIENT_SECRET_ARN",
            secret(c.client_secret.clone()).await?,
        ),
        (
            "SHADOWSYNC_WEBHOOK_CLIENT_STATE_SECRET_ARN",
            secret(CLIENT_STATE.to_string()).await?,
        ),
        (
            "SHADOWSYNC_WEBHOOK_PUBLIC_URL",
            "https://bench.execute-api.us-east-1.amazonaws.com".to_string(),
        ),
        ("SHADOWSYNC_DIRECTORY_URL", samba.ldaps_url.clone()),
        ("SHADOWSYNC_DIRECTORY_BIND_DN", samba.bind_dn.clone()),
        (
            "SHADOWSYNC_DIRECTORY_BIND_PASSWORD_SECRET_ARN",
            secret(samba.bind_password.clone()).await?,
        ),
        ("SHADOWSYNC_DIRECTORY_GUESTS_OU", guests_ou),
        ("SHADOWSYNC_DIRECTORY_DISABLED_OU", disabled_ou),
        (
            "SHADOWSYNC_DIRECTORY_CA_FILE",
            samba.ca_file.display().to_string(),
        ),
        ("SHADOWSYNC_PROVISIONER_MAX_ATTEMPTS", "5".to_string()),
        ("SHADOWSYNC_RECONCILER_SWEEP_INTERVAL", "24h".to_string()),
        ("RUST_LOG", "warn".to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .chain(aws::moto_env().into_iter().map(|(k, v)| (k.to_string(), v)))
    .collect();
    let queue = SqsQueue::new(
        aws_sdk_sqs::Client::new(&sdk),
        &queue_url,
        &dlq_url,
        5,
        Duration::ZERO,
    );
    Ok(Deployment {
        env,
        queue,
        queue_url,
        sim,
    })
}

/// A function started under a fresh Runtime API.
struct Running {
    child: tokio::process::Child,
    runtime: RuntimeApi,
    started: Instant,
}

async fn start(ctx: &Ctx, name: &str, deployment: &Deployment) -> Result<Running> {
    let path = binary(ctx, name);
    if !path.exists() {
        bail!(
            "{} not found: build it first (tests/bench.sh does)",
            path.display()
        );
    }
    let runtime = RuntimeApi::start().await?;
    let started = Instant::now();
    let child = tokio::process::Command::new(&path)
        .env_clear()
        .envs(deployment.env.iter().cloned())
        .envs(runtime.env(name))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}", path.display()))?;
    Ok(Running {
        child,
        runtime,
        started,
    })
}

impl Running {
    /// Process start → first poll of the Runtime API.
    async fn ready(&mut self) -> Result<Duration> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(at) = self.runtime.ready_at() {
                return Ok(at - self.started);
            }
            if let Some(status) = self.child.try_wait()? {
                bail!("the function exited before it was ready: {status}");
            }
            if Instant::now() > deadline {
                bail!("not ready within 30 s");
            }
            tokio::time::sleep(Duration::from_micros(500)).await;
        }
    }

    fn peak_kib(&self) -> u64 {
        self.child
            .id()
            .map(|pid| status_kib(&pid.to_string(), "VmHWM"))
            .unwrap_or(0)
    }
}

/// The median of `n` cold starts of `name`.
async fn start_to_ready(
    ctx: &Ctx,
    name: &str,
    deployment: &Deployment,
    n: usize,
) -> Result<Duration> {
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let mut running = start(ctx, name, deployment).await?;
        times.push(running.ready().await?);
        running.child.kill().await.ok();
    }
    times.sort();
    Ok(times[times.len() / 2])
}

/// One SQS event holding one converge job of a fresh guest, as the event source hands it over.
async fn one_job_event(deployment: &Deployment) -> Result<Value> {
    let graph = SimClient::new(deployment.sim.base_url(), deployment.sim.config());
    let user = graph
        .invite(&format!("lambda@{}.example.com", unique()), "Lambda Bench")
        .await?;
    let id = shadowsync_core::ObjectId::parse(
        user["invitedUser"]["id"]
            .as_str()
            .or(user["id"].as_str())
            .context("user id")?,
    )?;
    deployment
        .queue
        .send_batch(vec![Job::Converge {
            user_id: id,
            change_type: Some(ChangeType::Updated),
            subscription_id: None,
            received_at: chrono::Utc::now(),
            source: JobSource::Notification,
        }])
        .await?;
    for _ in 0..50 {
        let event = aws::receive_event(&deployment.queue_url, 360).await?;
        if !event["Records"].as_array().is_some_and(|r| r.is_empty()) {
            return Ok(event);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("the job did not come back from SQS")
}

/// Peak RSS after one invocation with `event`; the answer must be a success.
async fn invocation_peak(
    ctx: &Ctx,
    name: &str,
    deployment: &Deployment,
    event: Value,
) -> Result<u64> {
    let mut running = start(ctx, name, deployment).await?;
    running.ready().await?;
    let id = running.runtime.invoke(event);
    match running
        .runtime
        .response(&id, Duration::from_secs(60))
        .await?
    {
        Ok(response) => {
            if name != BASELINE && response["batchItemFailures"] != serde_json::json!([]) {
                bail!("{name} reported failures: {response}");
            }
        }
        Err(error) => bail!("{name} failed the invocation: {error}"),
    }
    let peak = running.peak_kib();
    running.child.kill().await.ok();
    Ok(peak)
}

pub async fn run(ctx: &Ctx) -> Result<Section> {
    let deployment = deployment(ctx).await?;
    let starts = if ctx.args.smoke { 1 } else { 7 };
    let mut section = Section::new("lambda", "Lambda-shaped figures");
    section.setup = format!(
        "{} binaries ({}), started with the environment infra/template.yaml gives them (secrets as \
         Secrets Manager ARNs on moto, Graph simulator, the test DC over LDAPS) under a local \
         Lambda Runtime API. Baseline: `{BASELINE}`, a `lambda_runtime` function that echoes its \
         event, built the same way. Start → ready: spawn until the first poll of \
         `/runtime/invocation/next`, median of {}. Peak RSS: `VmHWM` after one invocation with an \
         SQS event of one converge job (a new guest: Graph read, LDAP searches, one add, a read \
         by DN, DynamoDB write).",
        if ctx.args.smoke { "Debug" } else { "Release" },
        if ctx.args.smoke {
            "smoke run: debug builds, sizes meaningless".to_string()
        } else {
            "cargo-lambda artefacts, x86_64".to_string()
        },
        int(starts),
    );

    let size = |name: &str| -> Result<u64> {
        Ok(std::fs::metadata(binary(ctx, name))
            .with_context(|| format!("{name}: build it first (tests/bench.sh does)"))?
            .len())
    };
    let baseline_size = size(BASELINE)?;
    for f in FUNCTIONS {
        let name = format!("shadowsync-{f}");
        section.push(
            Row::new(
                format!("{name} binary"),
                Measure::mib_from_kib(size(&name)? / 1024),
            )
            .against("bare function", Measure::mib_from_kib(baseline_size / 1024)),
        );
    }

    let baseline_ready = start_to_ready(ctx, BASELINE, &deployment, starts).await?;
    for f in FUNCTIONS {
        let name = format!("shadowsync-{f}");
        let ready = start_to_ready(ctx, &name, &deployment, starts).await?;
        let mut row = Row::new(format!("{name} start → ready"), Measure::ms(ready))
            .against("bare function", Measure::ms(baseline_ready));
        if f == "provisioner" {
            row = row.headline();
        }
        section.push(row);
    }

    let event = one_job_event(&deployment).await?;
    let baseline_peak = invocation_peak(ctx, BASELINE, &deployment, event.clone()).await?;
    let peak = invocation_peak(ctx, "shadowsync-provisioner", &deployment, event).await?;
    section.push(
        Row::new(
            "provisioner peak RSS, one invocation",
            Measure::mib_from_kib(peak),
        )
        .against("bare function", Measure::mib_from_kib(baseline_peak))
        .headline(),
    );
    section.bounds = "Start → ready is what a cold start adds before the first event. All four \
        functions read their secrets from Secrets Manager (their GetSecretValue requests sent \
        together, here to moto over loopback, which answers one at a time: about 8 ms for \
        three) and build their SDK clients, whose HTTPS client loads the system's root \
        certificates (on this Debian machine the bundle and the 292 files of /etc/ssl/certs, \
        4 to 7 ms; measured with strace): that is the webhook's and the keeper's whole \
        difference from the bare function, and every invocation needs both. The provisioner \
        opens its LDAPS connection when its first job needs AD (an invocation whose jobs need \
        none, a Graph outage's retries say, never pays for it); the reconciler opens it at \
        start (TCP, TLS handshake with certificate verification, simple bind, the rootDSE and the schema's anchor attribute): \
        that round trip to the DC is most of its time, so the DC's answer time bounds it, not \
        shadowsync's code. Binary size is \
        the AWS SDK (SQS, DynamoDB, Secrets Manager), rustls, ldap3 and the Graph client; it \
        affects only the package download of a cold start. Peak RSS of a provisioner invocation \
        is the tokio runtime, three SDK clients, the TLS sessions (AWS, Graph, LDAP) and one \
        job: well under the 256 MB the template gives it."
        .to_string();
    Ok(section)
}
