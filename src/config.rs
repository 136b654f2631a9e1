//! Configuration shared by both binaries. Every setting is a flag and an environment
//! variable; flags win over the environment, the environment over defaults.

use std::net::SocketAddr;

use chrono::NaiveDate;

use crate::ingest::hashing::UserHasher;
use crate::sim::policy::DEFAULT_EXPLORATION;
use crate::sim::run::RunOptions;
use crate::sim::{SimConfig, SimConfigError};

/// Default Postgres URL (the database is created if missing).
pub const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/nudge";

/// Hash key used with `--dev` only. Never use it for real users.
const DEV_HASH_KEY: &str = "nudge-dev-only-hash-key-not-secret";

/// The shortest hash key accepted outside `--dev`.
pub const MIN_HASH_KEY_BYTES: usize = 16;

/// Where Postgres is.
#[derive(Debug, Clone, clap::Args)]
pub struct DatabaseArgs {
    /// Postgres URL; the database is created if missing.
    #[arg(long, env = "DATABASE_URL", default_value = DEFAULT_DATABASE_URL, hide_env_values = true)]
    pub database_url: String,
}

/// Where the model registry lives.
#[derive(Debug, Clone, clap::Args)]
pub struct ModelsDirArgs {
    /// Model registry root: `<dir>/<name>/<version>/` and a champion pointer per name.
    #[arg(long, env = "NUDGE_MODELS_DIR", default_value = "models")]
    pub models_dir: std::path::PathBuf,
}

/// Where Redis is, if anywhere.
#[derive(Debug, Clone, clap::Args)]
pub struct RedisArgs {
    /// Redis URL for shared state; unset = embedded (in-process, one replica only).
    #[arg(long, env = "REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<String>,
    /// Prefix of every Redis key this deployment writes.
    #[arg(long, env = "NUDGE_REDIS_PREFIX", default_value = "nudge:")]
    pub redis_prefix: String,
}

impl RedisArgs {
    /// The Redis URL, `None` when unset or empty.
    pub fn url(&self) -> Option<&str> {
        self.redis_url.as_deref().filter(|u| !u.is_empty())
    }
}

/// `nudge-serve`'s settings as given on the command line and in the environment.
#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// Postgres.
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// Redis, or the embedded store.
    #[command(flatten)]
    pub redis: RedisArgs,
    /// Address to listen on.
    #[arg(long, env = "NUDGE_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// The key of user-id hashes.
    #[command(flatten)]
    pub key: HashKeyArgs,
    /// HMAC secret for `POST /v1/events`; unset = webhook disabled.
    #[arg(long, env = "NUDGE_WEBHOOK_SECRET", hide_env_values = true)]
    pub webhook_secret: Option<String>,
    /// Project token the PostHog capture API accepts; unset = capture API disabled.
    #[arg(long, env = "NUDGE_POSTHOG_TOKEN", hide_env_values = true)]
    pub posthog_token: Option<String>,
    /// Postgres connections in the pool.
    #[arg(long, env = "NUDGE_DB_POOL_SIZE", default_value_t = 16)]
    pub db_pool_size: u32,
    /// The model registry.
    #[command(flatten)]
    pub models: ModelsDirArgs,
    /// Policy file: gates, rollout, threshold (see policy/policy.yaml).
    #[arg(long, env = "NUDGE_POLICY", default_value = "policy/policy.yaml")]
    pub policy: std::path::PathBuf,
    /// Bearer token of the scheduler scope (`/v1/score`); unset = no auth (only with --dev).
    #[arg(long, env = "NUDGE_SCHEDULER_TOKEN", hide_env_values = true)]
    pub scheduler_token: Option<String>,
    /// Bearer token of the admin scope (`/admin/*`); unset = admin API disabled.
    #[arg(long, env = "NUDGE_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// Seconds between feature freshness checks (the /metrics gauges) and, with the
    /// embedded store, reloads after a new `features refresh`.
    #[arg(long, env = "NUDGE_FEATURES_REFRESH_SECS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    pub features_refresh_secs: u64,
    /// Milliseconds between reads of the runtime flags (rollout, kill switch): how soon a
    /// change made through another replica or `nudge-serve flag` is in force here.
    #[arg(long, env = "NUDGE_FLAG_POLL_MS", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(10..))]
    pub flag_poll_ms: u64,
    /// Seconds between ticks of the control loop on the wall clock (guardrails, then a
    /// controller step when its interval has passed); 0 = no ticks but those asked for with
    /// `POST /admin/controller/tick` (a simulation ticks on its own time that way).
    #[arg(long, env = "NUDGE_CONTROLLER_TICK_SECS", default_value_t = 60)]
    pub controller_tick_secs: u64,
    /// Requests handled at once (all routes but /healthz, /readyz, /metrics); beyond it a
    /// request is refused at once with 503 and Retry-After instead of queueing.
    #[arg(long, env = "NUDGE_MAX_IN_FLIGHT", default_value_t = 512, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_in_flight: u32,
    /// Milliseconds a request may take before it is answered 503 with Retry-After.
    #[arg(long, env = "NUDGE_REQUEST_TIMEOUT_MS", default_value_t = 5000, value_parser = clap::value_parser!(u64).range(1..))]
    pub request_timeout_ms: u64,
    /// Seconds the dashboard answers its KPI section as computed (the queries read two
    /// weeks of the decision log); past that it still answers it, saying when it was
    /// computed, while a new one is computed in the background; 0 = a new computation
    /// at every page load.
    #[arg(long, env = "NUDGE_DASHBOARD_KPI_SECS", default_value_t = 300)]
    pub dashboard_kpi_secs: u64,
}

/// The key user ids are hashed with; both binaries must use the same one.
#[derive(Debug, Clone, clap::Args)]
pub struct HashKeyArgs {
    /// Key for keyed hashing of user ids (required outside --dev).
    #[arg(long, env = "NUDGE_HASH_KEY", hide_env_values = true)]
    pub hash_key: Option<String>,
    /// Allow insecure defaults for local use (a fixed hash key); says so loudly at start.
    #[arg(long, env = "NUDGE_DEV")]
    pub dev: bool,
}

impl HashKeyArgs {
    /// The hasher under the configured key, or the development key with `--dev`.
    pub fn hasher(&self) -> Result<UserHasher, ConfigError> {
        let key = match (&self.hash_key, self.dev) {
            (Some(key), _) if key.len() < MIN_HASH_KEY_BYTES => {
                return Err(ConfigError::ShortHashKey);
            }
            (Some(key), _) => key.as_str(),
            (None, true) => DEV_HASH_KEY,
            (None, false) => return Err(ConfigError::MissingHashKey),
        };
        Ok(UserHasher::new(key.as_bytes()))
    }

    /// Whether the development key is in use.
    pub fn uses_dev_key(&self) -> bool {
        self.hash_key.is_none() && self.dev
    }
}

/// `nudge-train simulate`'s parameters.
#[derive(Debug, Clone, clap::Args)]
pub struct SimulateArgs {
    /// Simulated users (their app ids are `u0` … `u<N-1>`).
    #[arg(long, default_value_t = 10_000)]
    pub users: u32,
    /// Simulated days.
    #[arg(long, default_value_t = 60)]
    pub days: i32,
    /// Seed of every random draw: the same seed gives the same events, uuids included.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// First simulated day (UTC, YYYY-MM-DD).
    #[arg(long, default_value = "2026-01-05")]
    pub start: NaiveDate,
    /// Share of the logging policy's decisions drawn uniformly among the candidates and "no send".
    #[arg(long, default_value_t = DEFAULT_EXPLORATION)]
    pub exploration: f64,
    /// Delete the simulated population the database holds, if any (its events and truth), and simulate afresh.
    #[arg(long)]
    pub replace: bool,
    /// Events per ingest batch.
    #[arg(long, default_value_t = RunOptions::default().batch_size)]
    pub batch_size: usize,
    /// Ingest batches in flight at once.
    #[arg(long, default_value_t = RunOptions::default().concurrency)]
    pub concurrency: usize,
}

impl SimulateArgs {
    /// The checked simulation parameters.
    pub fn config(&self) -> Result<SimConfig, SimConfigError> {
        SimConfig::new(
            self.users,
            self.days,
            self.seed,
            self.start,
            self.exploration,
        )
    }

    /// How the run writes.
    pub fn options(&self) -> RunOptions {
        RunOptions {
            batch_size: self.batch_size.max(1),
            concurrency: self.concurrency.max(1),
            replace: self.replace,
        }
    }
}

/// Why the configuration was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// No hash key outside dev mode.
    #[error("NUDGE_HASH_KEY (--hash-key) is required outside --dev")]
    MissingHashKey,
    /// A hash key too short to resist guessing.
    #[error("NUDGE_HASH_KEY must be at least {MIN_HASH_KEY_BYTES} bytes")]
    ShortHashKey,
    /// An empty secret would accept anything.
    #[error("{0} is set but empty")]
    EmptySecret(&'static str),
    /// `/v1/score` would be open to anyone.
    #[error("NUDGE_SCHEDULER_TOKEN (--scheduler-token) is required outside --dev")]
    MissingSchedulerToken,
}

/// `nudge-serve`'s checked configuration.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Postgres URL.
    pub database_url: String,
    /// Redis URL, or `None` for the embedded store.
    pub redis_url: Option<String>,
    /// Redis key prefix.
    pub redis_prefix: String,
    /// Listen address.
    pub listen: SocketAddr,
    /// Keyed hasher of user ids.
    pub hasher: UserHasher,
    /// Webhook HMAC secret, if the webhook is enabled.
    pub webhook_secret: Option<String>,
    /// Capture API project token, if the capture API is enabled.
    pub posthog_token: Option<String>,
    /// Postgres pool size.
    pub db_pool_size: u32,
    /// Model registry root.
    pub models_dir: std::path::PathBuf,
    /// Policy file.
    pub policy_path: std::path::PathBuf,
    /// Scheduler-scope bearer token; `None` = no auth (dev only).
    pub scheduler_token: Option<String>,
    /// Admin-scope bearer token; `None` = admin API disabled.
    pub admin_token: Option<String>,
    /// Interval of feature freshness checks and embedded reloads.
    pub features_refresh: std::time::Duration,
    /// Interval of runtime flag reads.
    pub flag_poll: std::time::Duration,
    /// Interval of wall-clock control ticks; `None` = only on request.
    pub controller_tick: Option<std::time::Duration>,
    /// Requests handled at once before load is shed.
    pub max_in_flight: usize,
    /// Longest a request may take.
    pub request_timeout: std::time::Duration,
    /// How long the dashboard keeps its KPI section.
    pub dashboard_kpi_every: std::time::Duration,
    /// Whether insecure dev defaults are in force.
    pub dev: bool,
}

fn non_empty(value: Option<String>, name: &'static str) -> Result<Option<String>, ConfigError> {
    match value {
        Some(v) if v.is_empty() => Err(ConfigError::EmptySecret(name)),
        other => Ok(other),
    }
}

impl TryFrom<ServeArgs> for ServeConfig {
    type Error = ConfigError;

    fn try_from(args: ServeArgs) -> Result<Self, ConfigError> {
        Ok(Self {
            database_url: args.database.database_url,
            redis_url: args.redis.url().map(str::to_owned),
            redis_prefix: args.redis.redis_prefix,
            listen: args.listen,
            hasher: args.key.hasher()?,
            webhook_secret: non_empty(args.webhook_secret, "NUDGE_WEBHOOK_SECRET")?,
            posthog_token: non_empty(args.posthog_token, "NUDGE_POSTHOG_TOKEN")?,
            db_pool_size: args.db_pool_size,
            models_dir: args.models.models_dir,
            policy_path: args.policy,
            scheduler_token: match non_empty(args.scheduler_token, "NUDGE_SCHEDULER_TOKEN")? {
                None if !args.key.dev => return Err(ConfigError::MissingSchedulerToken),
                token => token,
            },
            admin_token: non_empty(args.admin_token, "NUDGE_ADMIN_TOKEN")?,
            features_refresh: std::time::Duration::from_secs(args.features_refresh_secs),
            flag_poll: std::time::Duration::from_millis(args.flag_poll_ms),
            controller_tick: (args.controller_tick_secs > 0)
                .then(|| std::time::Duration::from_secs(args.controller_tick_secs)),
            max_in_flight: args.max_in_flight as usize,
            request_timeout: std::time::Duration::from_millis(args.request_timeout_ms),
            dashboard_kpi_every: std::time::Duration::from_secs(args.dashboard_kpi_secs),
            dev: args.key.dev,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        serve: ServeArgs,
    }

    fn parse(args: &[&str]) -> Result<ServeConfig, ConfigError> {
        let cli = Cli::try_parse_from(std::iter::once("nudge-serve").chain(args.iter().copied()))
            .expect("flags parse");
        ServeConfig::try_from(cli.serve)
    }

    #[test]
    fn hash_key_is_required_outside_dev() {
        assert_eq!(parse(&[]).err(), Some(ConfigError::MissingHashKey));
        assert_eq!(
            parse(&["--hash-key", "short"]).err(),
            Some(ConfigError::ShortHashKey)
        );
        assert!(parse(&["--dev"]).is_ok());
        let key = ["--hash-key", "0123456789abcdef"];
        assert_eq!(parse(&key).err(), Some(ConfigError::MissingSchedulerToken));
        let cfg = parse(&[&key[..], &["--scheduler-token", "s3cret"]].concat()).unwrap();
        assert!(!cfg.dev);
        assert_eq!(cfg.scheduler_token.as_deref(), Some("s3cret"));
        assert!(cfg.admin_token.is_none());
    }

    #[test]
    fn empty_secrets_are_refused_and_unset_ones_disable() {
        assert_eq!(
            parse(&["--dev", "--webhook-secret", ""]).err(),
            Some(ConfigError::EmptySecret("NUDGE_WEBHOOK_SECRET"))
        );
        let cfg = parse(&["--dev"]).unwrap();
        assert!(cfg.webhook_secret.is_none() && cfg.posthog_token.is_none());
        assert!(cfg.redis_url.is_none());
    }
}
