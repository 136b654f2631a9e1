//! `nudge-train demo`: the whole loop end to end, once per seed, and its report.

use anyhow::Context;
use chrono::NaiveDate;
use indicatif::{ProgressBar, ProgressStyle};
use nudge::config::{HashKeyArgs, ServeConfig};
use nudge::control::closed_loop::{self, ClosedLoopError, ServeClient};
use nudge::control::{churn_watch, guardrail, kpi, tick};
use nudge::features::{labels, refresh};
use nudge::ingest::hashing::UserHasher;
use nudge::models::registry::Registry;
use nudge::policy::{Guardrails, Policy};
use nudge::sim::run::{RunOptions, SimDriver};
use nudge::sim::{SimConfig, policy::DEFAULT_EXPLORATION};
use nudge::store::database;
use nudge::training::spec::ModelSpec;
use sqlx::PgPool;

use crate::fit::{Fitted, fit_specs, print_fitted, read_specs};
use crate::kpis::churn_outcomes;
use crate::pipeline::{migrate, refresh_features};

/// `nudge-train demo`'s settings.
pub(crate) struct Demo<'a> {
    /// The database the demo replaces its simulated population and serving state in.
    pub(crate) database_url: &'a str,
    /// The model registry.
    pub(crate) models_dir: &'a std::path::Path,
    /// Directory of the model specs to fit.
    pub(crate) specs: &'a std::path::Path,
    /// Key for keyed hashing of user ids; `None` = the development key.
    pub(crate) hash_key: Option<String>,
    /// Simulated users.
    pub(crate) users: u32,
    /// Days of history before training.
    pub(crate) days: i32,
    /// Days in closed loop.
    pub(crate) loop_days: i32,
    /// nudge-serve's policy in the closed loop.
    pub(crate) policy: &'a std::path::Path,
}

impl Demo<'_> {
    /// Plays the whole loop once per seed, one after the other in the same database and
    /// registry; with several seeds, ends with canary minus control for each and their
    /// mean.
    pub(crate) async fn play(self, seeds: &[u64]) -> anyhow::Result<()> {
        let key = HashKeyArgs {
            dev: self.hash_key.is_none(),
            hash_key: self.hash_key,
        };
        if key.uses_dev_key() {
            outln!(
                "demo: hashing user ids with the development key (set NUDGE_HASH_KEY for a real one)"
            );
        }
        // A spec that does not parse stops the demo before minutes of simulation.
        let specs = read_specs(self.specs)?;
        // So does a policy nudge-serve would refuse; its guardrails' test is the report's
        // too.
        let policy = Policy::load(self.policy)
            .with_context(|| format!("{}: invalid policy", self.policy.display()))?;
        migrate(self.database_url).await?;
        let pool = database::connect(self.database_url, 8).await?;
        let run = DemoRun {
            database_url: self.database_url,
            pool: &pool,
            registry: Registry::new(self.models_dir),
            models_dir: self.models_dir,
            specs: &specs,
            hasher: key.hasher()?,
            users: self.users,
            days: self.days,
            loop_days: self.loop_days,
            policy: self.policy,
            guardrails: policy.guardrails,
        };
        let several = seeds.len() > 1;
        let mut runs = Vec::with_capacity(seeds.len());
        for &seed in seeds {
            if several {
                outln!("\n== demo, seed {seed} ==");
            }
            if let Some(lifts) = run.play(seed).await? {
                runs.push((seed, lifts));
            }
        }
        if several && !runs.is_empty() {
            let by_seed = |pick: fn(&LoopLifts) -> Option<kpi::Lifts>| -> Vec<(u64, kpi::Lifts)> {
                runs.iter()
                    .filter_map(|(seed, lifts)| Some((*seed, pick(lifts)?)))
                    .collect()
            };
            // Every seed plays the same policy, so the first names the model arm.
            let arm = runs
                .iter()
                .find_map(|(_, lifts)| lifts.arm.as_deref())
                .unwrap_or("canary");
            outln!("\n{arm} − control by seed, the whole closed loop (95 % intervals):");
            out!("{}", kpi::seeds_table(arm, &by_seed(|l| l.whole)));
            let settled = by_seed(|l| l.settled);
            if !settled.is_empty() {
                outln!("\n{arm} − control by seed, after {STEADY_AFTER_DAYS} days in the loop:");
                out!("{}", kpi::seeds_table(arm, &settled));
            }
        }
        Ok(())
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
    guardrails: Guardrails,
}

/// The model arm minus control in a demo's closed loop: over all of it, and after
/// [`STEADY_AFTER_DAYS`] in it (each `None` without both arms).
struct LoopLifts {
    /// The model arm compared (`canary`, or `full` against its holdout).
    arm: Option<String>,
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
            let (report, loop_lifts) =
                closed_loop_report(pool, client, &summary, &self.guardrails).await?;
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
    guardrails: &Guardrails,
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
        writeln!(
            out,
            "guardrails at their last check ({at}), {}:",
            guardrail::test_summary(guardrails)
        )?;
        for line in guardrail::lines(&checks, guardrails).lines() {
            writeln!(out, "  {line}")?;
        }
    }
    let lifts = LoopLifts {
        arm: kpi::compared(&whole.arms).map(|(model, _)| model.arm.clone()),
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
