//! `nudge-train`: the ML engineer's tool — schema migrations, the population simulator,
//! the feature pipeline, spec-driven training, the model registry and the end-to-end demo.
//! This file reads the command line and hands each subcommand to its module.

#[macro_use]
mod print;
mod cli;
mod demo;
mod fit;
mod kpis;
mod pipeline;

use anyhow::Context;
use clap::Parser;
use indicatif::MultiProgress;
use nudge::features::status;
use nudge::models::registry::Registry;
use nudge::sim::report::oracle_report;
use nudge::training::train::{self, Stages};

use crate::cli::{Cli, Command, FeaturesCommand, ModelsCommand, SimCommand};
use crate::fit::{list_models, promote_version};
use crate::kpis::kpi_report;
use crate::pipeline::{
    connect_migrated, materialize_features, migrate, refresh_features, simulate,
};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    nudge::telemetry::exit_status(command().await)
}

/// Parses the command line and runs what it asks.
async fn command() -> anyhow::Result<()> {
    let cli = Cli::parse();
    nudge::telemetry::init_tracing(match cli.command {
        Command::Demo { .. } => nudge::telemetry::DEMO_LOG_FILTER,
        _ => nudge::telemetry::TRAIN_LOG_FILTER,
    });
    match cli.command {
        Command::Migrate { database } => migrate(&database.database_url).await,
        Command::Simulate { database, key, sim } => {
            let pool = connect_migrated(&database.database_url).await?;
            simulate(&pool, sim.config()?, key.hasher()?, sim.options()).await
        }
        Command::Features {
            command:
                FeaturesCommand::Refresh {
                    database,
                    from,
                    to,
                    jobs,
                },
        } => {
            let pool = connect_migrated(&database.database_url).await?;
            refresh_features(&pool, from.zip(to), jobs.map(usize::from)).await
        }
        Command::Features {
            command: FeaturesCommand::Materialize { database, redis },
        } => {
            let pool = connect_migrated(&database.database_url).await?;
            materialize_features(&pool, &redis).await
        }
        Command::Features {
            command: FeaturesCommand::Status { database },
        } => {
            let pool = connect_migrated(&database.database_url).await?;
            out!("{}", status::status(&pool, chrono::Utc::now()).await?);
            Ok(())
        }
        Command::Sim {
            command: SimCommand::Report { database, from, to },
        } => {
            let pool = connect_migrated(&database.database_url).await?;
            out!("{}", oracle_report(&pool, from, to).await?);
            Ok(())
        }
        Command::Fit {
            spec,
            database,
            models,
            promote,
        } => fit::run(&spec, &database.database_url, &models.models_dir, promote).await,
        Command::Evaluate {
            name,
            version,
            database,
            models,
        } => {
            let pool = connect_migrated(&database.database_url).await?;
            let registry = Registry::new(&models.models_dir);
            let version = match version {
                Some(v) => v,
                None => registry
                    .versions(&name)?
                    .pop()
                    .with_context(|| format!("model {name} has no versions"))?,
            };
            let stages = Stages::new(MultiProgress::new());
            let card = train::evaluate(&pool, &registry, &name, &version, &stages).await?;
            outln!("{}", card.headline());
            Ok(())
        }
        Command::Promote {
            name,
            version,
            models,
        } => promote_version(&Registry::new(&models.models_dir), &name, &version),
        Command::Rollback { name, models } => {
            let change = Registry::new(&models.models_dir).rollback(&name)?;
            outln!(
                "{name}: champion rolled back from {} to {}",
                change.from.as_deref().unwrap_or("(none)"),
                change.to
            );
            Ok(())
        }
        Command::Models {
            command: ModelsCommand::List { models },
        } => list_models(&Registry::new(&models.models_dir)),
        Command::Kpis {
            database,
            from,
            to,
            every_days,
        } => {
            let pool = connect_migrated(&database.database_url).await?;
            kpi_report(&pool, from, to, every_days).await
        }
        Command::Demo {
            database,
            models,
            specs,
            hash_key,
            users,
            days,
            loop_days,
            policy,
            seed,
        } => {
            let demo = demo::Demo {
                database_url: &database.database_url,
                models_dir: &models.models_dir,
                specs: &specs,
                hash_key,
                users,
                days,
                loop_days,
                policy: &policy,
            };
            demo.play(&seed).await
        }
    }
}
