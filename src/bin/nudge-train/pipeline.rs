//! The data commands: schema migrations, the simulator and the feature pipeline.

use anyhow::Context;
use chrono::NaiveDate;
use indicatif::{ProgressBar, ProgressStyle};
use nudge::config::RedisArgs;
use nudge::features::catalog::FeatureCatalog;
use nudge::features::materialize::materialize;
use nudge::features::{DayRange, refresh};
use nudge::ingest::hashing::UserHasher;
use nudge::sim::SimConfig;
use nudge::sim::report::oracle_report;
use nudge::sim::run::{RunOptions, run};
use nudge::store::database;
use nudge::store::online::OnlineStore;
use sqlx::PgPool;

/// `nudge-train simulate`: plays the population with a progress bar, then prints its
/// summary and the oracle report.
pub(crate) async fn simulate(
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
    outln!("{summary}");
    out!("{}", oracle_report(pool, None, None).await?);
    Ok(())
}

/// `nudge-train features refresh`: the days given, or those received since the last
/// refresh.
pub(crate) async fn refresh_features(
    pool: &PgPool,
    range: Option<(NaiveDate, NaiveDate)>,
    jobs: Option<usize>,
) -> anyhow::Result<()> {
    let range = match range {
        Some((from, to)) => DayRange::new(from, to)?,
        None => match refresh::pending_range(pool, chrono::Utc::now().date_naive()).await? {
            Some(range) => range,
            None => {
                outln!("features: nothing received since the last refresh");
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
    outln!(
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
        outln!(
            "late identity links moved events of {} earlier days; their sessions and daily aggregates were rebuilt",
            report.restitched_days
        );
    }
    Ok(())
}

/// `nudge-train features materialize`: the newest snapshots into Redis.
pub(crate) async fn materialize_features(pool: &PgPool, redis: &RedisArgs) -> anyhow::Result<()> {
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
    outln!("{report}");
    Ok(())
}

/// A pool on a database whose schema is the one this build knows.
pub(crate) async fn connect_migrated(url: &str) -> anyhow::Result<PgPool> {
    let pool = database::connect(url, 8).await?;
    database::check_schema(&pool).await?;
    Ok(pool)
}

/// `nudge-train migrate`: creates the database if missing and applies every pending
/// migration.
pub(crate) async fn migrate(url: &str) -> anyhow::Result<()> {
    if database::create_database_if_missing(url).await? {
        outln!("created database");
    }
    let pool = database::connect(url, 2).await?;
    database::migrate(&pool).await?;
    database::check_schema(&pool).await?;
    let versions: Vec<String> = database::MIGRATOR
        .iter()
        .map(|m| m.version.to_string())
        .collect();
    outln!("schema current (migrations {})", versions.join(", "));
    Ok(())
}
