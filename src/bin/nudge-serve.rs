//! `nudge-serve`: the production service — scoring with policy gates and rollout arms,
//! event ingest, the decision log — and the runtime flags it follows.

use anyhow::Context;
use chrono::Utc;
use clap::{Parser, Subcommand};
use nudge::config::{DatabaseArgs, RedisArgs, ServeArgs, ServeConfig};
use nudge::policy::Mode;
use nudge::rollout::{KillSwitchFlag, RolloutFlag, checked_percent};
use nudge::store::flags::FlagStore;

/// mimalloc instead of glibc's allocator: the request path allocates many small, short-lived
/// buffers across worker threads, where glibc's malloc and free cost about a tenth of the
/// server's CPU under load (BENCHMARKS.md, "Scoring load").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Serves EverReach's growth models and ingests product events. Without a subcommand,
/// runs the server.
#[derive(Parser)]
#[command(version, about, long_about = None, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Read or change the runtime flags every replica follows within its poll interval
    /// (`--flag-poll-ms`): in Redis when REDIS_URL is set, else in Postgres. Works with
    /// no server running.
    Flag {
        #[command(flatten)]
        database: DatabaseArgs,
        #[command(flatten)]
        redis: RedisArgs,
        #[command(subcommand)]
        command: FlagCommand,
    },
}

#[derive(Subcommand)]
enum FlagCommand {
    /// Show the flags (unset flags leave the policy file in force).
    Show,
    /// Override the rollout's mode and canary percent.
    Set {
        /// off | shadow | canary | full.
        #[arg(long)]
        mode: Mode,
        /// Canary share in percent, 0..=100 (required with --mode canary).
        #[arg(long, required_if_eq("mode", "canary"), value_parser = percent_arg)]
        percent: Option<f64>,
        /// Why (kept with the flag and shown by GET /admin/rollout).
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Remove the rollout override: the policy file's rollout is in force again.
    Clear,
    /// Stop (`on`) or resume (`off`) every send on every replica.
    KillSwitch {
        /// on | off.
        #[arg(value_parser = ["on", "off"])]
        state: String,
        /// Why.
        #[arg(long, default_value = "")]
        reason: String,
    },
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    nudge::telemetry::exit_status(command().await)
}

/// Parses the command line and runs what it asks.
async fn command() -> anyhow::Result<()> {
    nudge::telemetry::init_tracing(nudge::telemetry::SERVE_LOG_FILTER);
    let cli = Cli::parse();
    match cli.command {
        None => {
            let config = ServeConfig::try_from(cli.serve)?;
            nudge::serving::run(config, shutdown_signal()).await?;
        }
        Some(Command::Flag {
            database,
            redis,
            command,
        }) => {
            let store =
                FlagStore::connect(redis.url(), &redis.redis_prefix, &database.database_url)
                    .await
                    .context("connecting to the flag store")?;
            flag(&store, command).await?;
            let flags = store.read().await?;
            println!("flag store: {}", store.kind());
            println!("rollout: {}", describe(flags.rollout.as_ref())?);
            println!("kill_switch: {}", describe(flags.kill_switch.as_ref())?);
        }
    }
    Ok(())
}

/// A flag as JSON, or what holds when it is unset.
fn describe(flag: Option<&impl serde::Serialize>) -> anyhow::Result<String> {
    Ok(match flag {
        Some(flag) => serde_json::to_string(flag)?,
        None => "unset (policy file in force)".to_owned(),
    })
}

/// `--percent`: a number within 0..=100, checked as the admin API checks it.
fn percent_arg(text: &str) -> Result<f64, String> {
    let percent: f64 = text.parse().map_err(|e| format!("{e}"))?;
    checked_percent(percent).map_err(|e| e.to_string())
}

/// Applies a flag command.
async fn flag(store: &FlagStore, command: FlagCommand) -> anyhow::Result<()> {
    match command {
        FlagCommand::Show => {}
        FlagCommand::Set {
            mode,
            percent,
            reason,
        } => {
            let flag = RolloutFlag::new(mode, percent, reason, "cli", Utc::now())?;
            store.set_rollout(Some(&flag)).await?;
        }
        FlagCommand::Clear => store.set_rollout(None).await?,
        FlagCommand::KillSwitch { state, reason } => {
            store
                .set_kill_switch(&KillSwitchFlag {
                    on: state == "on",
                    reason,
                    set_by: "cli".into(),
                    set_at: Utc::now(),
                })
                .await?
        }
    }
    Ok(())
}

/// Resolves on Ctrl-C or SIGTERM, so in-flight requests finish before exit.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut sig) => {
                sig.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! { _ = ctrl_c => {}, _ = terminate => {} }
    tracing::info!("shutting down");
}
