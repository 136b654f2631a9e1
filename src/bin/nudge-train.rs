//! `nudge-train`: the ML engineer's tool — schema migrations, the population simulator,
//! the feature pipeline and the end-to-end demo (training and promotion to come).

use anyhow::Context;
use chrono::NaiveDate;
use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use nudge::config::{DatabaseArgs, HashKeyArgs, RedisArgs, SimulateArgs};
use nudge::features::catalog::FeatureCatalog;
use nudge::features::materialize::materialize;
use nudge::features::{DayRange, labels, refresh, status};
use nudge::ingest::hashing::UserHasher;
use nudge::sim::report::oracle_report;
use nudge::sim::run::{RunOptions, run};
use nudge::sim::{SimConfig, policy::DEFAULT_EXPLORATION};
use nudge::store::database;
use nudge::store::online::OnlineStore;
use sqlx::PgPool;

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
    /// Simulate a population day by day: events go through the ingest path into
    /// bronze.events, the true probability of every outcome into the sim schema. Ends with
    /// a summary and the oracle AUC of each label.
    Simulate {
        #[command(flatten)]
        database: DatabaseArgs,
        #[command(flatten)]
        key: HashKeyArgs,
        #[command(flatten)]
        sim: SimulateArgs,
    },
    /// The feature pipeline.
    Features {
        #[command(subcommand)]
        command: FeaturesCommand,
    },
    /// Reports on the simulated population the database holds.
    Sim {
        #[command(subcommand)]
        command: SimCommand,
    },
    /// Run the whole loop end to end; for now: migrate → simulate a small population →
    /// summary and oracle AUCs. Replaces any simulated population in the database.
    Demo {
        #[command(flatten)]
        database: DatabaseArgs,
        /// Key for keyed hashing of user ids; unset = the development key.
        #[arg(long, env = "NUDGE_HASH_KEY", hide_env_values = true)]
        hash_key: Option<String>,
        /// Simulated users.
        #[arg(long, default_value_t = 2_000)]
        users: u32,
        /// Simulated days.
        #[arg(long, default_value_t = 42)]
        days: i32,
        /// Seed.
        #[arg(long, default_value_t = 7)]
        seed: u64,
    },
}

#[derive(Subcommand)]
enum FeaturesCommand {
    /// Rebuild silver (identity links, stitched events, sessions, notifications) and gold
    /// (daily aggregates, snapshots as of the end of each day) for the UTC days
    /// [--from, --to), stage by stage, one chunk per core side by side. Idempotent; refused
    /// while another refresh runs. Without dates: from the earliest event received since
    /// the last refresh through today.
    Refresh {
        #[command(flatten)]
        database: DatabaseArgs,
        /// First day (YYYY-MM-DD).
        #[arg(long, requires = "to")]
        from: Option<NaiveDate>,
        /// Day after the last (YYYY-MM-DD).
        #[arg(long, requires = "from")]
        to: Option<NaiveDate>,
        /// Chunks of days refreshed side by side (Postgres backends); default: one per core.
        #[arg(long, value_parser = clap::value_parser!(u16).range(1..))]
        jobs: Option<u16>,
    },
    /// Copy every user's newest snapshot into Redis under a new version, then switch
    /// readers to it in one step (a reader never sees half a materialisation); the
    /// replaced version is deleted. Needs REDIS_URL: without Redis, nudge-serve's
    /// embedded store loads the snapshots from Postgres by itself.
    Materialize {
        #[command(flatten)]
        database: DatabaseArgs,
        #[command(flatten)]
        redis: RedisArgs,
    },
    /// Newest event, newest snapshot and the lag between them; the share of the last
    /// 24 hours' events that passed validation, against the 95% gate.
    Status {
        #[command(flatten)]
        database: DatabaseArgs,
    },
}

#[derive(Subcommand)]
enum SimCommand {
    /// Base rate, mean true probability and oracle AUC of each label, for examples dated
    /// in [--from, --to).
    Report {
        #[command(flatten)]
        database: DatabaseArgs,
        /// First example date included (YYYY-MM-DD); unset = from the start.
        #[arg(long)]
        from: Option<NaiveDate>,
        /// First example date excluded (YYYY-MM-DD); unset = to the end.
        #[arg(long)]
        to: Option<NaiveDate>,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    nudge::telemetry::init_tracing(nudge::telemetry::TRAIN_LOG_FILTER);
    match Cli::parse().command {
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
            print!("{}", status::status(&pool, chrono::Utc::now()).await?);
            Ok(())
        }
        Command::Sim {
            command: SimCommand::Report { database, from, to },
        } => {
            let pool = connect_migrated(&database.database_url).await?;
            print!("{}", oracle_report(&pool, from, to).await?);
            Ok(())
        }
        Command::Demo {
            database,
            hash_key,
            users,
            days,
            seed,
        } => {
            let key = HashKeyArgs {
                dev: hash_key.is_none(),
                hash_key,
            };
            if key.uses_dev_key() {
                println!(
                    "demo: hashing user ids with the development key (set NUDGE_HASH_KEY for a real one)"
                );
            }
            migrate(&database.database_url).await?;
            let pool = database::connect(&database.database_url, 8).await?;
            let start = NaiveDate::from_ymd_opt(2026, 1, 5).context("demo start date")?;
            let config = SimConfig::new(users, days, seed, start, DEFAULT_EXPLORATION)?;
            let options = RunOptions {
                replace: true,
                ..RunOptions::default()
            };
            simulate(&pool, config, key.hasher()?, options).await?;
            // The day before the start holds the first signups' anonymous funnel events.
            let end = start + chrono::TimeDelta::days(i64::from(days) + 1);
            refresh_features(&pool, Some((start.pred_opt().unwrap_or(start), end)), None).await?;
            print!("{}", labels::label_report(&pool).await?);
            println!("demo: next come train → serve → closed-loop traffic → report.");
            Ok(())
        }
    }
}

async fn simulate(
    pool: &PgPool,
    config: SimConfig,
    hasher: UserHasher,
    options: RunOptions,
) -> anyhow::Result<()> {
    let bar = ProgressBar::new(config.days() as u64).with_style(
        ProgressStyle::with_template("simulate [{bar:30}] day {pos}/{len} · {msg} · {elapsed}")
            .context("progress template")?
            .progress_chars("=> "),
    );
    let summary = run(config, hasher, pool.clone(), options, &bar).await?;
    bar.finish_and_clear();
    println!("{summary}");
    print!("{}", oracle_report(pool, None, None).await?);
    Ok(())
}

async fn refresh_features(
    pool: &PgPool,
    range: Option<(NaiveDate, NaiveDate)>,
    jobs: Option<usize>,
) -> anyhow::Result<()> {
    let range = match range {
        Some((from, to)) => DayRange::new(from, to)?,
        None => match refresh::pending_range(pool, chrono::Utc::now().date_naive()).await? {
            Some(range) => range,
            None => {
                println!("features: nothing received since the last refresh");
                return Ok(());
            }
        },
    };
    let spinner = ProgressBar::new_spinner().with_message(format!(
        "refreshing features for {} → {} ({} days)",
        range.from(),
        range.to(),
        range.days()
    ));
    spinner.enable_steady_tick(std::time::Duration::from_millis(120));
    let started = std::time::Instant::now();
    let report = match jobs {
        Some(jobs) => refresh::refresh_with_jobs(pool, range, jobs).await?,
        None => refresh::refresh(pool, range).await?,
    };
    spinner.finish_and_clear();
    println!(
        "features refreshed for {} → {} in {:.1} s: {} events, {} sessions, {} notifications, {} snapshots",
        range.from(),
        range.to(),
        started.elapsed().as_secs_f64(),
        report.events,
        report.sessions,
        report.notifications,
        report.snapshots
    );
    if report.restitched_days > 0 {
        println!(
            "late identity links moved events of {} earlier days; their sessions and daily aggregates were rebuilt",
            report.restitched_days
        );
    }
    Ok(())
}

async fn materialize_features(pool: &PgPool, redis: &RedisArgs) -> anyhow::Result<()> {
    let url = redis.url().context(
        "REDIS_URL (--redis-url) is not set: without Redis, nudge-serve's embedded store \
         loads features from Postgres itself, so there is nothing to materialise",
    )?;
    let online = OnlineStore::connect_redis(url, &redis.redis_prefix).await?;
    let catalog = FeatureCatalog::builtin()?;
    let bar = ProgressBar::new_spinner().with_style(
        ProgressStyle::with_template("materialize {spinner} {pos} users · {per_sec} · {elapsed}")
            .context("progress template")?,
    );
    bar.enable_steady_tick(std::time::Duration::from_millis(120));
    let report = materialize(pool, &catalog, &online, &bar).await?;
    bar.finish_and_clear();
    println!("{report}");
    Ok(())
}

async fn connect_migrated(url: &str) -> anyhow::Result<PgPool> {
    let pool = database::connect(url, 8).await?;
    database::check_schema(&pool).await?;
    Ok(pool)
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
