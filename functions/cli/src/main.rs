//! `shadowsync`: the all-in-one host and the administrator's commands.

mod config;
mod serve;

use anyhow::Result;
use clap::{Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "shadowsync",
    version,
    about = "Keeps an Active Directory shadow account for every Entra ID B2B guest in scope."
)]
struct Cli {
    /// Log format on standard error.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run everything in one process: webhook listener, provisioner workers, subscription keeper.
    Serve {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Check the configuration file (and environment) and exit.
    CheckConfig {
        #[arg(long, short)]
        config: PathBuf,
    },
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .init(),
    }
}

fn load(path: &std::path::Path) -> Result<config::Config> {
    config::Config::load(path).map_err(|e| anyhow::anyhow!("{e}"))
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let result = match cli.command {
        Command::Serve { config } => match load(&config) {
            Ok(config) => serve::serve(config).await,
            Err(e) => Err(e),
        },
        Command::CheckConfig { config } => {
            load(&config).map(|_| println!("configuration is valid"))
        }
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("shadowsync: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
