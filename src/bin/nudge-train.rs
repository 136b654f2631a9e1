//! `nudge-train`: the ML engineer's tool — schema migrations, the population simulator,
//! the feature pipeline, spec-driven training, the model registry and the end-to-end demo.

use anyhow::Context;
use chrono::NaiveDate;
use clap::{Parser, Subcommand};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use nudge::config::ServeConfig;
use nudge::config::{DatabaseArgs, HashKeyArgs, ModelsDirArgs, RedisArgs, SimulateArgs};
use nudge::control::closed_loop::{self, ClosedLoopError, ServeClient};
use nudge::control::{calibration, churn_watch, guardrail, kpi, tick};
use nudge::features::catalog::FeatureCatalog;
use nudge::features::materialize::materialize;
use nudge::features::{DayRange, labels, refresh, status};
use nudge::ingest::hashing::UserHasher;
use nudge::models::registry::Registry;
use nudge::sim::report::oracle_report;
use nudge::sim::run::{RunOptions, SimDriver, run};
use nudge::sim::{SimConfig, policy::DEFAULT_EXPLORATION};
use nudge::store::database;
use nudge::store::online::OnlineStore;
use nudge::training::card::Card;
use nudge::training::spec::ModelSpec;
use nudge::training::train::{self, Stages};
use sqlx::PgPool;

/// `print!` to stdout; a closed stdout (`nudge-train … | head`) ends the process quietly.
macro_rules! out {
    ($($arg:tt)*) => { print_or_exit(format_args!($($arg)*)) };
}

/// `println!` to stdout; a closed stdout ends the process quietly.
macro_rules! outln {
    ($($arg:tt)*) => { print_or_exit(format_args!("{}\n", format_args!($($arg)*))) };
}

/// What became of a write to stdout.
#[derive(Debug, PartialEq)]
enum Printed {
    /// Written.
    Done,
    /// The reader went away: nobody wants the rest.
    ReaderGone,
    /// Any other failure (a full disk behind a redirect).
    Failed(std::io::ErrorKind),
}

/// Writes `args` to `to`, telling a closed pipe from a real failure.
fn print_to(mut to: impl std::io::Write, args: std::fmt::Arguments<'_>) -> Printed {
    match to.write_fmt(args).and_then(|()| to.flush()) {
        Ok(()) => Printed::Done,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Printed::ReaderGone,
        Err(e) => Printed::Failed(e.kind()),
    }
}

/// Prints to stdout. `println!` would panic with a backtrace when the reader has gone;
/// like other command-line tools this exits with success then, and with an error when
/// stdout fails otherwise, so no output is lost silently.
fn print_or_exit(args: std::fmt::Arguments<'_>) {
    match print_to(std::io::stdout().lock(), args) {
        Printed::Done => {}
        Printed::ReaderGone => std::process::exit(0),
        Printed::Failed(kind) => {
            eprintln!("nudge-train: cannot write to stdout: {kind}");
            std::process::exit(1);
        }
    }
}

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
    /// Train a model from a spec (training/*.yaml): read its examples from Postgres,
    /// split them, fit every candidate, keep the best on validation, calibrate it, measure
    /// it on test (against the oracle and the current champion) and save it with its
    /// card as a new version. Given a directory, trains every spec in it by name (the
    /// monthly retrain: `fit training/ --promote`); a spec that fails does not stop the
    /// others, and a table of every model ends the run. Does not promote unless asked.
    Fit {
        /// A spec file, or a directory of them (every *.yaml).
        spec: std::path::PathBuf,
        #[command(flatten)]
        database: DatabaseArgs,
        #[command(flatten)]
        models: ModelsDirArgs,
        /// Promote each new version that passes its gates; the command fails if any
        /// spec could not be fitted or promoted.
        #[arg(long)]
        promote: bool,
    },
    /// Re-measure a saved version on its spec's current test window against the current
    /// champion, and rewrite its card.
    Evaluate {
        /// Model name.
        name: String,
        /// Version; unset = the newest.
        version: Option<String>,
        #[command(flatten)]
        database: DatabaseArgs,
        #[command(flatten)]
        models: ModelsDirArgs,
    },
    /// Make a version the champion nudge-serve loads. Refused, with every reason, when
    /// its test AUC is below the spec's floor, worse than the champion's on the same test
    /// examples beyond the tolerance, or measured against another champion.
    Promote {
        /// Model name.
        name: String,
        /// Version.
        version: String,
        #[command(flatten)]
        models: ModelsDirArgs,
    },
    /// Restore the champion before the current one.
    Rollback {
        /// Model name.
        name: String,
        #[command(flatten)]
        models: ModelsDirArgs,
    },
    /// KPIs of nudge-serve's decisions per arm (sends per user, ROI, open rate, opt-out
    /// rate, D7 retention, with 95 % intervals, and canary minus control, D7 also
    /// adjusted for the users' activity in the 14 days before the experiment; whether
    /// canary minus control shows the goal, D7 + 3 points at no more sends per user;
    /// crash-free users once a crash is reported), from the
    /// decision log and the silver events; outcomes count once observed (up to the
    /// newest silver event). Decisions in [--from, --to), by default all of them. Then
    /// the logged /v1/churn scores of snapshots as of the same days (by default all)
    /// beside the share of those users who churned, by model version, band and arm,
    /// once their 14 days are observed.
    Kpis {
        #[command(flatten)]
        database: DatabaseArgs,
        /// First day of decisions (UTC); default: the first logged.
        #[arg(long)]
        from: Option<NaiveDate>,
        /// Day after the last (UTC); default: the day after the last logged.
        #[arg(long)]
        to: Option<NaiveDate>,
        /// One table per window of this many days; default: one for the whole range.
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
        every_days: Option<u32>,
    },
    /// The model registry.
    Models {
        #[command(subcommand)]
        command: ModelsCommand,
    },
    /// Run the whole loop end to end: migrate → simulate a population's history under
    /// the logging policy → features → fit every spec in training/ → promote what passes
    /// its gates → start nudge-serve (in process, on loopback) → closed-loop days in
    /// which nudge-serve decides every notification, features are refreshed daily and the
    /// controller and guardrails tick on simulated time → a per-arm report, the
    /// controller's trajectory, the guardrails' last check and the churn watch (the
    /// served churn scores of one day's active users beside their true risk and what
    /// they then did). Replaces any simulated population and serving state in the
    /// database, and stops if another nudge-serve ticks that database's control loop.
    Demo {
        #[command(flatten)]
        database: DatabaseArgs,
        #[command(flatten)]
        models: ModelsDirArgs,
        /// Directory of the model specs to fit.
        #[arg(long, default_value = "training")]
        specs: std::path::PathBuf,
        /// Key for keyed hashing of user ids; unset = the development key.
        #[arg(long, env = "NUDGE_HASH_KEY", hide_env_values = true)]
        hash_key: Option<String>,
        /// Simulated users.
        #[arg(long, default_value_t = 2_000)]
        users: u32,
        /// Simulated days of history (logging policy) before training.
        #[arg(long, default_value_t = closed_loop::DEMO_HISTORY_DAYS)]
        days: i32,
        /// Simulated days in closed loop with nudge-serve after training (0 = none).
        #[arg(long, default_value_t = closed_loop::DEMO_LOOP_DAYS)]
        loop_days: i32,
        /// nudge-serve's policy in the closed loop.
        #[arg(long, default_value = "policy/closed-loop.yaml")]
        policy: std::path::PathBuf,
        /// Seed; several, comma-separated (7,8,9), run the whole loop once per seed, one
        /// after the other in the same database, and end with canary minus control for
        /// each seed and their mean.
        #[arg(long, value_delimiter = ',', num_args = 1.., default_value = "7")]
        seed: Vec<u64>,
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
enum ModelsCommand {
    /// Every model name with its versions, champion first, and each one's test AUC.
    List {
        #[command(flatten)]
        models: ModelsDirArgs,
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
        } => {
            let specs = if spec.is_dir() {
                read_specs(&spec)?
            } else {
                vec![read_spec(&spec)?]
            };
            let pool = connect_migrated(&database.database_url).await?;
            let registry = Registry::new(&models.models_dir);
            let fitted = fit_specs(&pool, &registry, &specs, promote).await;
            if specs.len() > 1 {
                print_fitted(&fitted);
            }
            let not_fitted = fitted
                .iter()
                .filter(|f| matches!(f, Fitted::Failed { .. }))
                .count();
            let refused = fitted
                .iter()
                .filter(|f| {
                    matches!(
                        f,
                        Fitted::Saved {
                            promotion: Promotion::Refused,
                            ..
                        }
                    )
                })
                .count();
            anyhow::ensure!(
                not_fitted + refused == 0,
                "{not_fitted} of {} specs could not be fitted; {refused} new versions were refused promotion",
                specs.len()
            );
            Ok(())
        }
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
            let key = HashKeyArgs {
                dev: hash_key.is_none(),
                hash_key,
            };
            if key.uses_dev_key() {
                outln!(
                    "demo: hashing user ids with the development key (set NUDGE_HASH_KEY for a real one)"
                );
            }
            // A spec that does not parse stops the demo before minutes of simulation.
            let specs = read_specs(&specs)?;
            migrate(&database.database_url).await?;
            let pool = database::connect(&database.database_url, 8).await?;
            let run = DemoRun {
                database_url: &database.database_url,
                pool: &pool,
                registry: Registry::new(&models.models_dir),
                models_dir: &models.models_dir,
                specs: &specs,
                hasher: key.hasher()?,
                users,
                days,
                loop_days,
                policy: &policy,
            };
            let several = seed.len() > 1;
            let mut runs = Vec::with_capacity(seed.len());
            for &seed in &seed {
                if several {
                    outln!("\n== demo, seed {seed} ==");
                }
                if let Some(lifts) = run.play(seed).await? {
                    runs.push((seed, lifts));
                }
            }
            if several && !runs.is_empty() {
                let by_seed =
                    |pick: fn(&LoopLifts) -> Option<kpi::Lifts>| -> Vec<(u64, kpi::Lifts)> {
                        runs.iter()
                            .filter_map(|(seed, lifts)| Some((*seed, pick(lifts)?)))
                            .collect()
                    };
                outln!("\ncanary − control by seed, the whole closed loop (95 % intervals):");
                out!("{}", kpi::seeds_table(&by_seed(|l| l.whole)));
                let settled = by_seed(|l| l.settled);
                if !settled.is_empty() {
                    outln!(
                        "\ncanary − control by seed, after {STEADY_AFTER_DAYS} days in the loop:"
                    );
                    out!("{}", kpi::seeds_table(&settled));
                }
            }
            Ok(())
        }
    }
}

/// What every seed of `nudge-train demo` shares.
struct DemoRun<'a> {
    database_url: &'a str,
    pool: &'a PgPool,
    registry: Registry,
    models_dir: &'a std::path::Path,
    specs: &'a [ModelSpec],
    hasher: UserHasher,
    users: u32,
    days: i32,
    loop_days: i32,
    policy: &'a std::path::Path,
}

/// Canary minus control in a demo's closed loop: over all of it, and after
/// [`STEADY_AFTER_DAYS`] in it (each `None` without both arms).
struct LoopLifts {
    whole: Option<kpi::Lifts>,
    settled: Option<kpi::Lifts>,
}

impl DemoRun<'_> {
    /// One seed's whole loop, its report printed as it goes; canary minus control, or
    /// `None` without a closed loop.
    async fn play(&self, seed: u64) -> anyhow::Result<Option<LoopLifts>> {
        let (pool, users, days, loop_days) = (self.pool, self.users, self.days, self.loop_days);
        database::reset_serving_state(pool).await?;
        let start = NaiveDate::from_ymd_opt(2026, 1, 5).context("demo start date")?;
        // The day before the start holds the first signups' anonymous funnel events.
        let first_day = start.pred_opt().unwrap_or(start);
        refresh::forget_from(pool, first_day).await?;
        let config = SimConfig::new(users, days + loop_days, seed, start, DEFAULT_EXPLORATION)?;
        let options = RunOptions {
            replace: true,
            ..RunOptions::default()
        };
        let hasher = &self.hasher;
        let mut driver = SimDriver::start(config, hasher.clone(), pool.clone(), options).await?;
        let bar = progress_bar("history")?;
        driver.play_logged(days, &bar).await?;
        bar.finish_and_clear();
        outln!("demo: simulated {users} users × {days} days of history");
        let end = start + chrono::TimeDelta::days(i64::from(days) + 1);
        refresh_features(pool, Some((first_day, end)), None).await?;
        out!("{}", labels::label_report(pool).await?);
        // A model that fails its gates is left unpromoted; one that cannot be fitted
        // stops the demo.
        let fitted = fit_specs(pool, &self.registry, self.specs, true).await;
        print_fitted(&fitted);
        if let Some(Fitted::Failed { name, .. }) =
            fitted.iter().find(|f| matches!(f, Fitted::Failed { .. }))
        {
            anyhow::bail!("demo stopped: {name} could not be fitted");
        }
        let mut lifts = None;
        if loop_days > 0 {
            let serve = DemoServer::start(
                self.database_url,
                self.models_dir,
                self.policy,
                hasher.clone(),
            )
            .await?;
            let bar = progress_bar("closed loop")?;
            // The churn watch scores the users active on the day it runs; run early
            // enough, their next 14 days are played before the report.
            let after_watch = if loop_days > CHURN_LABEL_DAYS {
                CHURN_LABEL_DAYS
            } else {
                0
            };
            let (client, watch_start) = (&serve.client, loop_days - after_watch);
            let first =
                closed_loop::run(&mut driver, client, pool, start, watch_start, &bar).await?;
            let watch = churn_watch(pool, client, hasher, users, &first).await?;
            // The features the watch scored are those of the snapshot as of its end.
            let watched = first.to.date_naive();
            let rest =
                closed_loop::run(&mut driver, client, pool, start, after_watch, &bar).await?;
            let summary = first.then(rest);
            bar.finish_and_clear();
            let (report, loop_lifts) = closed_loop_report(pool, client, &summary).await?;
            out!("{report}");
            out!("{watch}");
            let next_day = watched + chrono::Days::new(1);
            out!(
                "{}",
                churn_outcomes(pool, Some(watched), Some(next_day)).await?
            );
            serve.stop().await?;
            lifts = Some(loop_lifts);
        }
        let summary = driver.finish().await?;
        outln!("{summary}");
        Ok(lifts)
    }
}

/// `nudge-train kpis`: a table per window of the decision log.
async fn kpi_report(
    pool: &PgPool,
    from: Option<NaiveDate>,
    to: Option<NaiveDate>,
    every_days: Option<u32>,
) -> anyhow::Result<()> {
    if let Some(span) = kpi::logged_span(pool).await? {
        let midnight = |d: NaiveDate| d.and_time(chrono::NaiveTime::MIN).and_utc();
        let from = midnight(from.unwrap_or(span.first.date_naive()));
        let to = midnight(to.unwrap_or(span.last.date_naive() + chrono::Days::new(1)));
        let every = every_days.map(|d| chrono::TimeDelta::days(i64::from(d)));
        outln!(
            "kpis: outcomes observed up to {} (the newest silver event)",
            span.observed
        );
        for (start, end) in kpi::windows(from, to, every) {
            outln!("\ndecisions {} → {}", start.date_naive(), end.date_naive());
            out!("{}", kpi::report(pool, start, end, span.observed).await?);
        }
    } else {
        outln!("kpis: no /v1/score decision is logged");
    }
    out!("{}", churn_outcomes(pool, from, to).await?);
    Ok(())
}

/// A day-counting progress bar named `stage`.
fn progress_bar(stage: &str) -> anyhow::Result<ProgressBar> {
    Ok(ProgressBar::new(0).with_style(
        ProgressStyle::with_template(&format!(
            "{stage} [{{bar:30}}] day {{pos}}/{{len}} · {{msg}} · {{elapsed}}"
        ))
        .context("progress template")?
        .progress_chars("=> "),
    ))
}

/// nudge-serve running in this process on a loopback port, for the closed loop.
struct DemoServer {
    client: ServeClient,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<(), nudge::serving::StartError>>,
}

impl DemoServer {
    async fn start(
        database_url: &str,
        models_dir: &std::path::Path,
        policy: &std::path::Path,
        hasher: UserHasher,
    ) -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        // Tokens of this run only: nothing outside this process can call it.
        let (scheduler, admin) = (
            uuid::Uuid::new_v4().to_string(),
            uuid::Uuid::new_v4().to_string(),
        );
        let config = ServeConfig {
            database_url: database_url.to_owned(),
            redis_url: None,
            redis_prefix: String::new(),
            listen: addr,
            hasher,
            webhook_secret: None,
            posthog_token: None,
            db_pool_size: 8,
            models_dir: models_dir.to_owned(),
            policy_path: policy.to_owned(),
            scheduler_token: Some(scheduler.clone()),
            admin_token: Some(admin.clone()),
            features_refresh: std::time::Duration::from_secs(1),
            flag_poll: std::time::Duration::from_millis(500),
            controller_tick: None,
            max_in_flight: 512,
            request_timeout: std::time::Duration::from_secs(10),
            dashboard_kpi_every: std::time::Duration::from_secs(300),
            dev: false,
        };
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(nudge::serving::run_on(config, listener, async move {
            let _ = stopped.await;
        }));
        let client = ServeClient::new(&format!("http://{addr}"), &scheduler, &admin);
        for _ in 0..100 {
            if client.rollout().await.is_ok() {
                outln!("demo: nudge-serve on {addr} (policy {})", policy.display());
                return Ok(Self { client, stop, task });
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        anyhow::bail!("nudge-serve did not become ready on {addr}")
    }

    async fn stop(self) -> anyhow::Result<()> {
        let _ = self.stop.send(());
        self.task.await??;
        Ok(())
    }
}

/// Days of the closed loop after which the demo report shows the arms again.
const STEADY_AFTER_DAYS: i64 = 14;

/// The closed loop's per-arm tables (all of it, and after [`STEADY_AFTER_DAYS`]) and the
/// controller's trajectory.
async fn closed_loop_report(
    pool: &PgPool,
    client: &ServeClient,
    summary: &closed_loop::LoopSummary,
) -> anyhow::Result<(String, LoopLifts)> {
    use std::fmt::Write;
    let mut out = String::new();
    writeln!(
        out,
        "\nclosed loop {} → {}: {} decisions, {} sends",
        summary.from.date_naive(),
        summary.to.date_naive(),
        summary.scored,
        summary.sent
    )?;
    let whole = kpi::report(pool, summary.from, summary.to, summary.to).await?;
    write!(out, "{whole}")?;
    // A policy that works through fatigue takes about two weeks to show in retention:
    // the same table for decisions from then on (D7 of the users whose 7th day is in).
    let settled = summary.from + chrono::TimeDelta::days(STEADY_AFTER_DAYS);
    let mut settled_lifts = None;
    if settled < summary.to {
        writeln!(
            out,
            "\nafter {STEADY_AFTER_DAYS} days in the loop (decisions {} → {}):",
            settled.date_naive(),
            summary.to.date_naive()
        )?;
        let report = kpi::report(pool, settled, summary.to, summary.to).await?;
        write!(out, "{report}")?;
        settled_lifts = report.lifts();
    }
    writeln!(out, "\ncontroller (one step per simulated day):")?;
    writeln!(
        out,
        "  {:<12} {:>7} {:>8} {:>10}  outcome",
        "day", "sends", "ROI", "threshold"
    )?;
    for tick in &summary.ticks {
        let c = &tick["controller"];
        if c["status"] != "stepped" {
            continue;
        }
        writeln!(
            out,
            "  {:<12} {:>7} {:>8} {:>10.3}  {}",
            tick["at"].as_str().unwrap_or("").get(..10).unwrap_or(""),
            // A JSON number ignores the width; its integer does not.
            c["sends"]
                .as_u64()
                .map_or_else(|| "?".into(), |n| n.to_string()),
            c["roi"]
                .as_f64()
                .map_or_else(|| "n/a".into(), |r| format!("{:.1}%", 100.0 * r)),
            c["next"]["output"].as_f64().unwrap_or(f64::NAN),
            c["outcome"].as_str().unwrap_or(""),
        )?;
    }
    let rollout = client.rollout().await?;
    writeln!(
        out,
        "rollout at the end: {} ({}){}",
        rollout["mode"].as_str().unwrap_or("?"),
        rollout["source"].as_str().unwrap_or("?"),
        rollout["flag"]["set_by"]
            .as_str()
            .filter(|by| *by == "guardrail")
            .map_or_else(String::new, |_| format!(
                " — {}",
                rollout["flag"]["reason"].as_str().unwrap_or("")
            ))
    )?;
    if let Some(tick::LatestChecks { at, checks }) = tick::latest_checks(pool).await? {
        writeln!(out, "guardrails at their last check ({at}):")?;
        for line in guardrail::lines(&checks).lines() {
            writeln!(out, "  {line}")?;
        }
    }
    let lifts = LoopLifts {
        whole: whole.lifts(),
        settled: settled_lifts,
    };
    Ok((out, lifts))
}

/// Days a churn label looks ahead, and the day before them: the churn watch runs this
/// many days before the loop's end so that its users' outcomes are in the report.
const CHURN_LABEL_DAYS: i32 = 15;

/// The churn watch: `/v1/churn`'s bands for the users active on the last day of `run`,
/// beside their true risk (what they then did is [`churn_outcomes`] of the logged
/// scores). A churn model left unpromoted is reported, not an error.
async fn churn_watch(
    pool: &PgPool,
    client: &ServeClient,
    hasher: &UserHasher,
    users: u32,
    run: &closed_loop::LoopSummary,
) -> anyhow::Result<String> {
    let day = (run.to - chrono::TimeDelta::days(1)).date_naive();
    let heading = format!("\nchurn watch: POST /v1/churn for the users active on {day}");
    match churn_watch::score_active(pool, client, hasher, users, day).await {
        Ok(scored) => Ok(format!(
            "{heading}, beside their true P(churn_14d):\n{}{}",
            churn_watch::table("band", &churn_watch::group_risks(&scored, |u| &u.band)),
            churn_watch::table("arm", &churn_watch::group_risks(&scored, |u| &u.arm)),
        )),
        Err(ClosedLoopError::Refused {
            status: 503, body, ..
        }) => Ok(format!("{heading}: not served (503: {body})\n")),
        Err(e) => Err(e.into()),
    }
}

/// The logged churn scores of the snapshots as of `[from, to)` beside the users' next 14
/// days.
async fn churn_outcomes(
    pool: &PgPool,
    from: Option<NaiveDate>,
    to: Option<NaiveDate>,
) -> anyhow::Result<String> {
    let day =
        |d: Option<NaiveDate>, open: &str| d.map_or_else(|| open.to_owned(), |d| d.to_string());
    Ok(format!(
        "\nchurn scores of snapshots {} → {} beside the users' next 14 days:\n{}",
        day(from, "the first"),
        day(to, "the last"),
        calibration::table(&calibration::churn_calibration(pool, from, to).await?)
    ))
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
    outln!("{summary}");
    out!("{}", oracle_report(pool, None, None).await?);
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
    outln!("{report}");
    Ok(())
}

/// Reads and checks every spec of a directory (each `*.yaml`, by name), before anything
/// connects or runs.
fn read_specs(dir: &std::path::Path) -> anyhow::Result<Vec<ModelSpec>> {
    let mut files: Vec<std::path::PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    anyhow::ensure!(!files.is_empty(), "no *.yaml spec in {}", dir.display());
    files.iter().map(|path| read_spec(path)).collect()
}

/// Reads and checks a model spec, before anything connects or runs.
fn read_spec(path: &std::path::Path) -> anyhow::Result<ModelSpec> {
    let yaml =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    ModelSpec::from_yaml(&yaml).with_context(|| format!("{}: invalid model spec", path.display()))
}

async fn fit(pool: &PgPool, registry: &Registry, spec: &ModelSpec) -> anyhow::Result<Card> {
    let stages = Stages::new(MultiProgress::new());
    let outcome = train::fit(pool, registry, spec, &stages)
        .await
        .with_context(|| format!("fitting {}", spec.name))?;
    let card = outcome.card;
    outln!(
        "\n{} {} saved in {}",
        card.name,
        card.version,
        outcome.dir.display()
    );
    outln!(
        "  {:<12} {:>8} {:>10} {:>10} {:>6}",
        "candidate",
        "fit s",
        "valid AUC",
        "test AUC",
        "trees"
    );
    let auc = |a: Option<f64>| a.map_or_else(|| "n/a".to_owned(), |a| format!("{a:.4}"));
    for c in &card.candidates {
        outln!(
            "  {:<12} {:>8.1} {:>10} {:>10} {:>6}",
            c.name,
            c.fit_seconds,
            auc(c.valid_auc),
            auc(c.test_auc),
            c.trees.map_or_else(|| "-".to_owned(), |t| t.to_string())
        );
    }
    outln!("  {}", card.headline());
    for note in &card.notes {
        outln!("  note: {note}");
    }
    Ok(card)
}

/// What `fit` made of one spec.
enum Fitted {
    /// A new version was saved; `promotion` says what became of asking to promote it.
    Saved {
        card: Box<Card>,
        promotion: Promotion,
    },
    /// No version was saved.
    Failed { name: String, error: anyhow::Error },
}

/// Whether a saved version became the champion.
enum Promotion {
    /// Not asked for.
    NotAsked,
    /// It is the champion now.
    Promoted,
    /// Refused (the reasons are printed when it is).
    Refused,
}

/// Fits every spec in turn, promoting each new version that passes its gates when
/// `promote`. One spec's failure is reported and the next one fitted: a monthly retrain
/// of four models is not lost to one bad one.
async fn fit_specs(
    pool: &PgPool,
    registry: &Registry,
    specs: &[ModelSpec],
    promote: bool,
) -> Vec<Fitted> {
    let mut fitted = Vec::with_capacity(specs.len());
    for spec in specs {
        let card = match fit(pool, registry, spec).await {
            Ok(card) => card,
            Err(error) => {
                eprintln!("nudge-train: {error:#}");
                fitted.push(Fitted::Failed {
                    name: spec.name.clone(),
                    error,
                });
                continue;
            }
        };
        let promotion = if !promote {
            Promotion::NotAsked
        } else {
            match promote_version(registry, &card.name, &card.version) {
                Ok(()) => Promotion::Promoted,
                Err(refused) => {
                    outln!("  not promoted: {refused}");
                    Promotion::Refused
                }
            }
        };
        fitted.push(Fitted::Saved {
            card: Box::new(card),
            promotion,
        });
    }
    fitted
}

/// The closing table of a `fit` over several specs: each model card's headline and
/// what became of it.
fn print_fitted(fitted: &[Fitted]) {
    outln!("\nmodel cards:");
    for outcome in fitted {
        match outcome {
            Fitted::Saved { card, promotion } => {
                let promotion = match promotion {
                    Promotion::NotAsked => String::new(),
                    Promotion::Promoted => " → champion".to_owned(),
                    Promotion::Refused => " → not promoted".to_owned(),
                };
                outln!("  {}{promotion}", card.headline());
            }
            Fitted::Failed { name, error } => outln!("  {name}: not fitted: {error:#}"),
        }
    }
}

fn promote_version(registry: &Registry, name: &str, version: &str) -> anyhow::Result<()> {
    train::promote(registry, name, version)?;
    outln!("{name}: {version} is now the champion");
    Ok(())
}

fn list_models(registry: &Registry) -> anyhow::Result<()> {
    let names = registry.names()?;
    if names.is_empty() {
        outln!("no models in {}", registry.root().display());
    }
    for name in names {
        let champion = registry.champion(&name)?;
        outln!("{name}");
        for version in registry.versions(&name)?.into_iter().rev() {
            let card = train::read_card(registry, &name, &version).ok();
            let mark = if champion.as_deref() == Some(version.as_str()) {
                "*"
            } else {
                " "
            };
            let summary = card.map_or_else(
                || "no readable card".to_owned(),
                |c| {
                    format!(
                        "{} test AUC {} · {}",
                        c.champion_candidate,
                        c.test
                            .roc_auc
                            .map_or_else(|| "n/a".into(), |a| format!("{a:.4}")),
                        if c.gates.failures.is_empty() {
                            "gates passed"
                        } else {
                            "gates failed"
                        }
                    )
                },
            );
            outln!("  {mark} {version}  {summary}");
        }
    }
    Ok(())
}

async fn connect_migrated(url: &str) -> anyhow::Result<PgPool> {
    let pool = database::connect(url, 8).await?;
    database::check_schema(&pool).await?;
    Ok(pool)
}

async fn migrate(url: &str) -> anyhow::Result<()> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{self, Write};

    /// A stdout that fails every write with `kind`.
    struct Failing(io::ErrorKind);

    impl Write for Failing {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::Error::from(self.0))
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn printing_tells_a_closed_pipe_from_a_failure() {
        let mut kept = Vec::new();
        assert_eq!(
            print_to(&mut kept, format_args!("{} rows", 3)),
            Printed::Done
        );
        assert_eq!(kept, b"3 rows");
        let closed = Failing(io::ErrorKind::BrokenPipe);
        assert_eq!(print_to(closed, format_args!("x")), Printed::ReaderGone);
        let full = Failing(io::ErrorKind::StorageFull);
        assert_eq!(
            print_to(full, format_args!("x")),
            Printed::Failed(io::ErrorKind::StorageFull)
        );
    }
}
