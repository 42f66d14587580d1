//! `shadowsync serve` as a real process against the simulator and the test DC.

use crate::Samba;
use anyhow::{bail, Context, Result};
use graph_sim::RunningSim;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::process::{Child, Command};

/// The clientState the test hosts use.
pub const CLIENT_STATE: &str = "e2e-client-state-6f1c0b9a2d4e";

/// The `shadowsync` binary with a test config file and the secrets in its environment.
pub struct Cli {
    binary: PathBuf,
    pub config_path: PathBuf,
    pub listen: SocketAddr,
    sim_secret: String,
    bind_password: String,
    /// Environment set after the defaults; `None` removes a variable (a test host that
    /// authenticates with a certificate has no client secret).
    pub env: Vec<(String, Option<String>)>,
}

impl Cli {
    /// Writes the config into `dir` (managed OUs `ous`).
    pub fn new(
        binary: &Path,
        sim: &RunningSim,
        samba: &Samba,
        ous: (&str, &str),
        dir: &Path,
        extra: &str,
    ) -> Result<Self> {
        let listen = free_port()?;
        let config_path = dir.join("shadowsync.toml");
        std::fs::write(
            &config_path,
            config_toml(sim, samba, ous, listen, dir, extra),
        )?;
        Ok(Self {
            binary: binary.to_path_buf(),
            config_path,
            listen,
            sim_secret: sim.config().client_secret.clone(),
            bind_password: samba.bind_password.clone(),
            env: Vec::new(),
        })
    }

    /// `shadowsync <subcommand> --config <file> <args…>`, ready to spawn.
    pub fn command(&self, subcommand: &[&str], args: &[&str]) -> Command {
        let mut command = Command::new(&self.binary);
        command
            .args(subcommand)
            .arg("--config")
            .arg(&self.config_path)
            .args(args)
            .env("SHADOWSYNC_GRAPH_CLIENT_SECRET", &self.sim_secret)
            .env("SHADOWSYNC_WEBHOOK_CLIENT_STATE", CLIENT_STATE)
            .env("SHADOWSYNC_DIRECTORY_BIND_PASSWORD", &self.bind_password)
            .env(
                "RUST_LOG",
                std::env::var("SHADOWSYNC_E2E_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdin(Stdio::null());
        for (key, value) in &self.env {
            match value {
                Some(v) => command.env(key, v),
                None => command.env_remove(key),
            };
        }
        command
    }

    /// Runs a subcommand to the end; fails unless it succeeds. Returns its standard output.
    pub async fn run(&self, subcommand: &[&str], args: &[&str]) -> Result<String> {
        let out = self.command(subcommand, args).output().await?;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        if !out.status.success() {
            bail!(
                "shadowsync {subcommand:?} {args:?} failed ({}):\n{stdout}\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(stdout)
    }
}

/// A `shadowsync serve` child process and the config it runs with.
pub struct ServeProcess {
    pub cli: Cli,
    pub listen: SocketAddr,
    /// The managed OUs this serve owns.
    pub guests_ou: String,
    pub disabled_ou: String,
    child: Option<Child>,
}

/// A loopback port nobody listens on right now.
pub fn free_port() -> Result<SocketAddr> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?)
}

/// The config file `serve` gets: simulator endpoints, test DC and its managed OUs, state under
/// `dir`, a free loopback port for the admin API.
pub fn config_toml(
    sim: &RunningSim,
    samba: &Samba,
    ous: (&str, &str),
    listen: SocketAddr,
    dir: &Path,
    extra: &str,
) -> String {
    let c = sim.config();
    format!(
        r#"[graph]
tenant_id = "{tenant}"
client_id = "{client}"
login_endpoint = "{base}"
graph_endpoint = "{base}"

[webhook]
listen = "{listen}"
public_url = "http://{listen}"

[directory]
url = "{ldap}"
bind_dn = "{bind_dn}"
ca_file = "{ca}"
guests_ou = "{guests}"
disabled_ou = "{disabled}"

[state]
path = "{state}"

[admin]
listen = "{admin}"
{extra}"#,
        tenant = c.tenant_id,
        client = c.client_id,
        base = sim.base_url(),
        ldap = samba.ldaps_url,
        bind_dn = samba.bind_dn,
        ca = samba.ca_file.display(),
        guests = ous.0,
        disabled = ous.1,
        admin = free_port().expect("a free port"),
        state = dir.join("state.redb").display(),
    )
}

impl ServeProcess {
    /// Writes the config into `dir` and starts `binary serve` on managed OUs of its own: serve
    /// sweeps its OUs at start, and on the shared ones it would converge (and slow down on)
    /// every account other tests left there.
    pub async fn start(
        binary: &Path,
        sim: &RunningSim,
        samba: &Samba,
        dir: &Path,
        extra: &str,
    ) -> Result<Self> {
        let mut probe = crate::AdProbe::connect(samba).await?;
        let guests = probe.ou("Serve Guests").await?;
        let disabled = probe.ou("Serve Disabled").await?;
        Self::start_in(binary, sim, samba, (&guests, &disabled), dir, extra).await
    }

    /// The same, managing the OUs `ous`.
    pub async fn start_in(
        binary: &Path,
        sim: &RunningSim,
        samba: &Samba,
        ous: (&str, &str),
        dir: &Path,
        extra: &str,
    ) -> Result<Self> {
        Self::start_with(binary, sim, samba, ous, dir, extra, Vec::new()).await
    }

    /// The same, with environment overrides (see [`Cli::env`]).
    pub async fn start_with(
        binary: &Path,
        sim: &RunningSim,
        samba: &Samba,
        ous: (&str, &str),
        dir: &Path,
        extra: &str,
        env: Vec<(String, Option<String>)>,
    ) -> Result<Self> {
        let mut cli = Cli::new(binary, sim, samba, ous, dir, extra)?;
        cli.env = env;
        let mut serve = Self {
            listen: cli.listen,
            cli,
            guests_ou: ous.0.to_string(),
            disabled_ou: ous.1.to_string(),
            child: None,
        };
        serve.spawn().await?;
        Ok(serve)
    }

    /// Starts the process (again) and waits until the webhook answers.
    pub async fn spawn(&mut self) -> Result<()> {
        let child = self
            .cli
            .command(&["serve"], &[])
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", self.cli.binary.display()))?;
        self.child = Some(child);
        let url = format!(
            "http://{}/api/notifications?validationToken=up",
            self.listen
        );
        let http = reqwest_client();
        wait_until(Duration::from_secs(30), || async {
            http.post(&url)
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
        })
        .await
        .context("serve did not start listening")?;
        Ok(())
    }

    /// SIGKILL: the process gets no chance to finish anything.
    pub async fn kill(&mut self) -> Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill().await?;
        }
        Ok(())
    }

    /// SIGTERM, then waits for a clean exit.
    pub async fn stop(&mut self) -> Result<std::process::ExitStatus> {
        let mut child = self.child.take().context("not running")?;
        let pid = child.id().context("no pid")?;
        Command::new("kill")
            .arg("-TERM")
            .arg(pid.to_string())
            .status()
            .await?;
        Ok(tokio::time::timeout(Duration::from_secs(30), child.wait()).await??)
    }
}

/// What a notification reports about a user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Created,
    Updated,
    Deleted,
}

impl Change {
    fn as_str(self) -> &'static str {
        match self {
            Change::Created => "created",
            Change::Updated => "updated",
            Change::Deleted => "deleted",
        }
    }
}

/// POSTs a users change notification for `user_id` to the webhook, in Graph's shape; returns
/// the HTTP status.
pub async fn post_notification(
    listen: SocketAddr,
    subscription_id: &str,
    (user_id, change): (&str, Change),
    client_state: &str,
    tenant_id: &str,
) -> Result<u16> {
    let body = serde_json::json!({"value": [{
        "subscriptionId": subscription_id,
        "subscriptionExpirationDateTime": "2030-01-01T00:00:00Z",
        "changeType": change.as_str(),
        "resource": format!("Users/{user_id}"),
        "resourceData": {"@odata.type": "#Microsoft.Graph.User", "@odata.id": format!("Users/{user_id}"), "id": user_id},
        "clientState": client_state,
        "tenantId": tenant_id,
    }]});
    let response = reqwest_client()
        .post(format!("http://{listen}/api/notifications"))
        .json(&body)
        .send()
        .await?;
    Ok(response.status().as_u16())
}

fn reqwest_client() -> reqwest::Client {
    reqwest::Client::new()
}

/// Polls `check` every 50 ms until it is true; returns how long that took.
pub async fn wait_until<F, Fut>(timeout: Duration, mut check: F) -> Result<Duration>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while start.elapsed() < timeout {
        if check().await {
            return Ok(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("condition not met within {timeout:?}")
}
