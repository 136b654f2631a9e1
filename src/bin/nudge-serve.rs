//! `nudge-serve`: the production service (ingest now; scoring, rollout and control to come).

use clap::Parser;
use nudge::config::{ServeArgs, ServeConfig};

/// Serves EverReach's growth models and ingests product events.
#[derive(Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    #[command(flatten)]
    serve: ServeArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    nudge::telemetry::init_tracing(nudge::telemetry::SERVE_LOG_FILTER);
    let config = ServeConfig::try_from(Cli::parse().serve)?;
    nudge::serving::run(config, shutdown_signal()).await?;
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
