//! `graph-sim` binary: serves the simulator until Ctrl-C.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use graph_sim::SimConfig;

#[derive(Parser, Debug)]
#[command(
    name = "graph-sim",
    about = "Microsoft Graph + identity platform simulator for shadowsync"
)]
struct Args {
    #[arg(long, default_value = "127.0.0.1:8700")]
    listen: SocketAddr,
    #[arg(long)]
    tenant_id: Option<String>,
    #[arg(long)]
    tenant_domain: Option<String>,
    #[arg(long)]
    client_id: Option<String>,
    #[arg(long)]
    client_secret: Option<String>,
    /// PEM file with the app's registered certificate (for JWT client assertions).
    #[arg(long)]
    certificate: Option<std::path::PathBuf>,
    /// Access token lifetime in seconds.
    #[arg(long, default_value_t = 3599)]
    token_lifetime: u64,
    #[arg(long, default_value_t = 100)]
    delta_page_size: usize,
    /// Delta token lifetime in seconds (simulated time).
    #[arg(long, default_value_t = 7 * 24 * 3600)]
    delta_token_max_age: u64,
    /// Notification batching window in milliseconds.
    #[arg(long, default_value_t = 100)]
    batch_window_ms: u64,
    /// Retry horizon for failed deliveries, in seconds (simulated time).
    #[arg(long, default_value_t = 4 * 3600)]
    retry_horizon: u64,
    /// Accept http:// notification URLs on any host (default: only loopback).
    #[arg(long)]
    allow_insecure_notification_urls: bool,
    /// Seed for random faults.
    #[arg(long, default_value_t = 42)]
    fault_seed: u64,
    /// Base URL to write into nextLink/deltaLink (default http://<listen>).
    #[arg(long)]
    public_base_url: Option<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = Args::parse();
    let mut config = SimConfig::default();
    if let Some(v) = args.tenant_id {
        config.tenant_id = v;
    }
    if let Some(v) = args.tenant_domain {
        config.tenant_domain = v;
    }
    if let Some(v) = args.client_id {
        config.client_id = v;
    }
    if let Some(v) = args.client_secret {
        config.client_secret = v;
    }
    if let Some(path) = args.certificate {
        config.certificate_pem = Some(std::fs::read_to_string(&path)?);
    }
    config.token_lifetime = Duration::from_secs(args.token_lifetime);
    config.delta_page_size = args.delta_page_size;
    config.delta_token_max_age = Duration::from_secs(args.delta_token_max_age);
    config.batch_window = Duration::from_millis(args.batch_window_ms);
    config.retry_horizon = Duration::from_secs(args.retry_horizon);
    config.allow_insecure_notification_urls = args.allow_insecure_notification_urls;
    config.fault_seed = args.fault_seed;
    config.public_base_url = args.public_base_url;

    let sim = graph_sim::start(config, args.listen).await?;
    tracing::info!(
        base_url = %sim.base_url(),
        tenant_id = %sim.config().tenant_id,
        client_id = %sim.config().client_id,
        "graph-sim listening"
    );
    println!("graph-sim listening on {}", sim.base_url());
    tokio::signal::ctrl_c().await?;
    sim.shutdown().await;
    Ok(())
}
