//! `nudge-train`: the ML engineer's tool (schema migrations now; simulation, features,
//! training and promotion to come).

use clap::{Parser, Subcommand};
use nudge::config::DatabaseArgs;
use nudge::store::database;

/// Trains EverReach's growth models from Postgres and manages the model registry.
#[derive(Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create the database if missing and apply every pending schema migration.
    Migrate {
        #[command(flatten)]
        database: DatabaseArgs,
    },
    /// Run the whole loop end to end (simulate → ingest → features → train → serve → report).
    Demo {
        #[command(flatten)]
        database: DatabaseArgs,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    nudge::telemetry::init_tracing();
    match Cli::parse().command {
        Command::Migrate { database } => migrate(&database.database_url).await,
        Command::Demo { database } => {
            migrate(&database.database_url).await?;
            println!(
                "demo: not yet — the schema is ready; the simulator and the rest of the loop \
                 arrive with the next releases."
            );
            Ok(())
        }
    }
}

async fn migrate(url: &str) -> anyhow::Result<()> {
    if database::create_database_if_missing(url).await? {
        println!("created database");
    }
    let pool = database::connect(url, 2).await?;
    database::migrate(&pool).await?;
    database::check_schema(&pool).await?;
    let versions: Vec<String> = database::MIGRATOR
        .iter()
        .map(|m| m.version.to_string())
        .collect();
    println!("schema current (migrations {})", versions.join(", "));
    Ok(())
}
