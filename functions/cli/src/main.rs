//! `shadowsync`: the all-in-one host and the administrator's commands.

mod admin;
mod commands;
mod connector;
mod metrics;
mod serve;

use shadowsync_config as config;

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
    /// The on-premises provisioner of a cloud deployment in connector mode: long-polls the
    /// cloud's job queue (outbound HTTPS only) and converges each guest into the local AD.
    Connector {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Check the configuration file (and environment) and exit.
    CheckConfig {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// What a full sync would do to AD, per guest, changing nothing.
    Plan {
        #[arg(long, short)]
        config: PathBuf,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// A full sync now, with a progress bar and a summary.
    Sync {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// The subscription, the delta checkpoint, the queue and the accounts; or one guest (by
    /// objectId, userPrincipalName or sAMAccountName) as Graph, AD and state see it.
    Status {
        #[arg(long, short)]
        config: PathBuf,
        user: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Jobs that failed for good.
    DeadLetters {
        #[command(subcommand)]
        action: DeadLetterCommand,
    },
    /// Disables and deletes the safety rails hold (the accidental-change threshold, a failed
    /// pre-flight), until an administrator releases or discards them.
    Held {
        #[command(subcommand)]
        action: HeldCommand,
    },
}

#[derive(Subcommand)]
enum HeldCommand {
    List {
        #[arg(long, short)]
        config: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Apply held changes: those of the guests named (objectId or userPrincipalName), or all.
    /// Released in full, the threshold resets and the configured tenant is accepted.
    Release {
        #[arg(long, short)]
        config: PathBuf,
        users: Vec<String>,
    },
    /// Drop held changes unapplied: those of the guests named, or all. The threshold stays
    /// tripped; `release` resumes.
    Discard {
        #[arg(long, short)]
        config: PathBuf,
        users: Vec<String>,
    },
}

#[derive(Subcommand)]
enum DeadLetterCommand {
    List {
        #[arg(long, short)]
        config: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Queue a dead letter (or all, without an id) again.
    Retry {
        #[arg(long, short)]
        config: PathBuf,
        id: Option<String>,
    },
    /// Discard a dead letter (or all, without an id).
    Drop {
        #[arg(long, short)]
        config: PathBuf,
        id: Option<String>,
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
    Ok(config::Config::load(path)?)
}

/// Loads the config and runs an admin command where the store is.
async fn run<F, Fut>(path: &std::path::Path, command: F) -> Result<()>
where
    F: FnOnce(commands::Backend) -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    command(commands::Backend::open(load(path)?)?).await
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
        Command::Connector { config } => match connector::load(&config).await {
            Ok(config) => connector::connector(config).await,
            Err(e) => Err(e),
        },
        Command::CheckConfig { config } => {
            load(&config).map(|_| println!("configuration is valid"))
        }
        Command::Plan { config, json } => run(&config, |b| commands::plan(b, json)).await,
        Command::Sync { config } => run(&config, commands::sync).await,
        Command::Status { config, user, json } => {
            run(&config, |b| commands::status(b, user, json)).await
        }
        Command::DeadLetters { action } => {
            let (config, action) = match action {
                DeadLetterCommand::List { config, json } => {
                    (config, commands::DeadLetterAction::List { json })
                }
                DeadLetterCommand::Retry { config, id } => {
                    (config, commands::DeadLetterAction::Retry { id })
                }
                DeadLetterCommand::Drop { config, id } => {
                    (config, commands::DeadLetterAction::Drop { id })
                }
            };
            run(&config, |b| commands::dead_letters(b, action)).await
        }
        Command::Held { action } => {
            let (config, action) = match action {
                HeldCommand::List { config, json } => (config, commands::HeldAction::List { json }),
                HeldCommand::Release { config, users } => {
                    (config, commands::HeldAction::Release { users })
                }
                HeldCommand::Discard { config, users } => {
                    (config, commands::HeldAction::Discard { users })
                }
            };
            run(&config, |b| commands::held(b, action)).await
        }
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("shadowsync: {}", message(&e));
            std::process::ExitCode::FAILURE
        }
    }
}

/// The error and its causes, each said once: the application's errors already include their
/// cause's words, which `{:#}` would repeat.
fn message(error: &anyhow::Error) -> String {
    let mut message = String::new();
    for cause in error.chain() {
        let text = cause.to_string();
        if !message.contains(&text) {
            if !message.is_empty() {
                message.push_str(": ");
            }
            message.push_str(&text);
        }
    }
    message
}

#[cfg(test)]
mod tests {
    use super::message;

    #[test]
    fn each_cause_is_said_once() {
        let graph = std::io::Error::other("403: Authorization_RequestDenied");
        let error =
            anyhow::Error::new(graph).context("listing guests: 403: Authorization_RequestDenied");
        assert_eq!(
            message(&error),
            "listing guests: 403: Authorization_RequestDenied"
        );
        let error = anyhow::anyhow!("disk full").context("writing the token");
        assert_eq!(message(&error), "writing the token: disk full");
    }
}
