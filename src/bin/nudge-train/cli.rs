//! The command line: every subcommand, its flags and their help.

use chrono::NaiveDate;
use clap::{Parser, Subcommand};
use nudge::config::{DatabaseArgs, HashKeyArgs, ModelsDirArgs, RedisArgs, SimulateArgs};
use nudge::control::closed_loop;

/// Trains EverReach's growth models from Postgres and manages the model registry.
#[derive(Parser)]
#[command(version, about, long_about = None)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Subcommand)]
pub(crate) enum Command {
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
    /// rate, D7 retention, with 95 % intervals, and canary minus control (or a full
    /// rollout minus its holdout), D7 also adjusted for the users' activity in the 14 days
    /// before the experiment; whether that difference shows the goal, D7 + 3 points at no
    /// more sends per user; crash-free users once a crash is reported), from the
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
pub(crate) enum FeaturesCommand {
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
pub(crate) enum ModelsCommand {
    /// Every model name with its versions, champion first, and each one's test AUC.
    List {
        #[command(flatten)]
        models: ModelsDirArgs,
    },
}

#[derive(Subcommand)]
pub(crate) enum SimCommand {
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
