//! The population simulator: determinism, base rates, fatigue and the exactness of its
//! ground truth, against real Postgres (a database per test) and in memory.

mod common;

use chrono::NaiveDate;
use common::{HASH_KEY, TestDb};
use indicatif::ProgressBar;
use nudge::ingest::hashing::UserHasher;
use nudge::sim::day::DayOutput;
use nudge::sim::policy::{Decision, LoggingPolicy, NotificationPolicy, Opportunity};
use nudge::sim::report::oracle_report;
use nudge::sim::run::{RunOptions, RunSummary, run};
use nudge::sim::store::SimStoreError;
use nudge::sim::{SimConfig, Simulation};

fn config(users: u32, days: i32, seed: u64) -> SimConfig {
    SimConfig::new(
        users,
        days,
        seed,
        NaiveDate::from_ymd_opt(2026, 1, 5).unwrap(),
        0.3,
    )
    .unwrap()
}

async fn simulate(
    db: &TestDb,
    config: SimConfig,
    replace: bool,
) -> Result<RunSummary, nudge::sim::run::SimRunError> {
    let options = RunOptions {
        replace,
        ..RunOptions::default()
    };
    run(
        config,
        UserHasher::new(HASH_KEY.as_bytes()),
        db.pool.clone(),
        options,
        &ProgressBar::hidden(),
    )
    .await
}

/// A digest of every stored event (uuid, name, user, time, properties).
async fn events_digest(db: &TestDb) -> String {
    db.scalar(
        "SELECT md5(string_agg(uuid::text || event || user_hash || ts::text || properties::text, '|' ORDER BY uuid))
         FROM bronze.events",
    )
    .await
}

#[tokio::test]
async fn same_seed_stores_the_same_events_uuids_included() {
    let (a, b, c) = tokio::join!(TestDb::migrated(), TestDb::migrated(), TestDb::migrated());
    let (ra, rb, rc) = tokio::join!(
        simulate(&a, config(300, 14, 5), false),
        simulate(&b, config(300, 14, 5), false),
        simulate(&c, config(300, 14, 6), false)
    );
    let (ra, rb) = (ra.unwrap(), rb.unwrap());
    rc.unwrap();
    assert!(ra.accepted > 5_000, "only {} events stored", ra.accepted);
    assert_eq!(ra.accepted, rb.accepted);
    assert_eq!(events_digest(&a).await, events_digest(&b).await);
    assert_ne!(events_digest(&a).await, events_digest(&c).await);
    let truth = "SELECT md5(string_agg(notification_id || p_return_24h::text, '|' ORDER BY notification_id))
                 FROM sim.notification_truth";
    assert_eq!(
        a.scalar::<String>(truth).await,
        b.scalar::<String>(truth).await
    );
}

#[tokio::test]
async fn a_repeat_is_idempotent_and_another_population_needs_replace() {
    let db = TestDb::migrated().await;
    let first = simulate(&db, config(100, 10, 1), false).await.unwrap();
    let stored = db.count("SELECT count(*) FROM bronze.events").await;
    let truths = db
        .count("SELECT count(*) FROM sim.notification_truth")
        .await;

    let again = simulate(&db, config(100, 10, 1), false).await.unwrap();
    assert!(again.repeat);
    assert_eq!(again.accepted, 0);
    assert_eq!(again.duplicates, first.accepted);
    assert_eq!(db.count("SELECT count(*) FROM bronze.events").await, stored);
    assert_eq!(
        db.count("SELECT count(*) FROM sim.notification_truth")
            .await,
        truths
    );

    let redone = simulate(&db, config(100, 10, 1), true).await.unwrap();
    assert!(!redone.repeat);
    assert_eq!((redone.accepted, redone.duplicates), (first.accepted, 0));
    assert_eq!(db.count("SELECT count(*) FROM bronze.events").await, stored);

    let refused = simulate(&db, config(100, 10, 2), false).await.unwrap_err();
    assert!(
        matches!(
            refused,
            nudge::sim::run::SimRunError::Store(SimStoreError::OtherPopulation { seed: 1, .. })
        ),
        "{refused}"
    );
    assert_eq!(db.count("SELECT count(*) FROM bronze.events").await, stored);

    let replaced = simulate(&db, config(100, 10, 2), true).await.unwrap();
    assert_eq!(replaced.duplicates, 0);
    assert_eq!(
        db.count("SELECT count(*) FROM bronze.events").await,
        replaced.accepted as i64
    );
    assert_eq!(
        db.count("SELECT count(*) FROM sim.runs WHERE seed = 2 AND finished_at IS NOT NULL")
            .await,
        1
    );
}

#[tokio::test]
async fn base_rates_are_sensible_and_the_oracle_has_signal_and_noise() {
    let db = TestDb::migrated().await;
    let summary = simulate(&db, config(1_500, 35, 11), false).await.unwrap();
    assert_eq!(
        summary.accepted + summary.rejected.values().sum::<u64>(),
        summary.total_emitted()
    );
    assert!(
        summary.rejected.keys().all(|r| *r == "consent_withdrawn"),
        "{:?}",
        summary.rejected
    );

    let report = oracle_report(&db.pool, None, None).await.unwrap();
    let notif = report.label("returned_24h_after_notif").unwrap();
    assert!(notif.examples > 10_000, "{notif:?}");
    assert!((0.10..=0.60).contains(&notif.base_rate), "{notif:?}");
    let auc = notif.auc.unwrap();
    assert!((0.70..0.99).contains(&auc), "{notif:?}");
    // Knowing whether a silent user lapsed, which no event records, ranks better still.
    assert!(notif.hidden_state_auc.unwrap() > auc + 0.01, "{notif:?}");
    let churn = report.label("churn_14d").unwrap();
    assert!((0.05..=0.40).contains(&churn.base_rate), "{churn:?}");
    assert!(churn.auc.unwrap() > 0.6, "{churn:?}");
    // A window restricts the examples.
    let late = oracle_report(&db.pool, NaiveDate::from_ymd_opt(2026, 1, 26), None)
        .await
        .unwrap();
    assert!(late.label("returned_24h_after_notif").unwrap().examples < notif.examples);
}

#[tokio::test]
async fn recorded_outcomes_are_what_the_stored_events_show() {
    let db = TestDb::migrated().await;
    simulate(&db, config(600, 30, 3), false).await.unwrap();
    // returned_24h: an app_opened by the same user in (sent, sent + 24 h].
    let notif_disagree = db
        .count(
            "WITH sent AS (SELECT user_hash, ts, properties->>'notification_id' AS id
                           FROM bronze.events WHERE event = 'notification_sent'),
                  opens AS (SELECT user_hash, ts FROM bronze.events WHERE event = 'app_opened'),
                  label AS (SELECT s.id, bool_or(o.ts IS NOT NULL) AS returned
                            FROM sent s LEFT JOIN opens o
                              ON o.user_hash = s.user_hash AND o.ts > s.ts AND o.ts <= s.ts + interval '24 hours'
                            GROUP BY s.id)
             SELECT count(*) FROM sim.notification_truth t JOIN label l ON l.id = t.notification_id
             WHERE t.returned_24h IS NOT NULL AND t.returned_24h <> l.returned",
        )
        .await;
    let compared = db
        .count("SELECT count(*) FROM sim.notification_truth WHERE returned_24h IS NOT NULL")
        .await;
    assert!(compared > 3_000);
    assert_eq!(notif_disagree, 0);
    // churn_14d: no app_opened on the 14 following UTC days.
    let churn_disagree = db
        .count(
            "WITH opens AS (SELECT DISTINCT user_hash, ts::date AS day FROM bronze.events WHERE event = 'app_opened')
             SELECT count(*) FROM sim.churn_truth c
             WHERE c.churned_14d IS NOT NULL
               AND c.churned_14d = EXISTS (SELECT 1 FROM opens o WHERE o.user_hash = c.user_hash
                                            AND o.day > c.day AND o.day <= c.day + 14)",
        )
        .await;
    assert!(
        db.count("SELECT count(*) FROM sim.churn_truth WHERE churned_14d")
            .await
            > 50
    );
    assert_eq!(churn_disagree, 0);
    // Every notification sent logs the logging policy's propensity.
    let without = db
        .count(
            "SELECT count(*) FROM bronze.events WHERE event = 'notification_sent'
             AND NOT (properties ? 'propensity' AND properties->>'arm' = 'logging')",
        )
        .await;
    assert_eq!(without, 0);
}

#[tokio::test]
async fn users_sent_more_in_the_past_week_open_a_smaller_share_and_opt_out_more() {
    let db = TestDb::migrated().await;
    simulate(&db, config(1_500, 28, 21), false).await.unwrap();
    // Each send, by the sends of the 7 days before it, among users who opened the app in
    // those 7 days (dormant users get many pushes and open few, which would make the case
    // by itself). An opt-out belongs to the send just before it.
    let rows: Vec<(String, i64, f64, f64)> = sqlx::query_as(
        "WITH ev AS (
           SELECT user_hash, ts, event, properties->>'notification_id' AS id FROM bronze.events
           WHERE event IN ('notification_sent', 'app_opened', 'notification_opened', 'push_opt_out')),
         w AS (
           SELECT *, count(*) FILTER (WHERE event = 'notification_sent') OVER week - 1 AS prior_sends,
                     count(*) FILTER (WHERE event = 'app_opened') OVER week AS recent_opens,
                     max(ts) FILTER (WHERE event = 'notification_sent')
                       OVER (PARTITION BY user_hash ORDER BY ts ROWS UNBOUNDED PRECEDING) AS last_send
           FROM ev WINDOW week AS (PARTITION BY user_hash ORDER BY ts
                                   RANGE BETWEEN interval '7 days' PRECEDING AND CURRENT ROW)),
         opened AS (SELECT DISTINCT id FROM ev WHERE event = 'notification_opened'),
         opt_outs AS (SELECT DISTINCT user_hash, last_send FROM w WHERE event = 'push_opt_out')
         SELECT CASE WHEN prior_sends <= 2 THEN 'a: 0-2' WHEN prior_sends <= 4 THEN 'b: 3-4' ELSE 'c: 5+' END,
                count(*), avg((o.id IS NOT NULL)::int)::float8, avg((x.user_hash IS NOT NULL)::int)::float8
         FROM w s LEFT JOIN opened o ON o.id = s.id
                  LEFT JOIN opt_outs x ON x.user_hash = s.user_hash AND x.last_send = s.ts
         WHERE s.event = 'notification_sent' AND s.recent_opens > 0
         GROUP BY 1 ORDER BY 1",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(rows.len(), 3, "{rows:?}");
    assert!(rows.iter().all(|r| r.1 > 500), "{rows:?}");
    let (open, opt_out): (Vec<f64>, Vec<f64>) = rows.iter().map(|r| (r.2, r.3)).unzip();
    assert!(
        open[0] > open[1] && open[1] > open[2],
        "open share by past sends: {rows:?}"
    );
    assert!(
        opt_out[2] > 1.5 * opt_out[0],
        "opt-out share by past sends: {rows:?}"
    );
}

/// Sends the scheduler's first candidate every `every` days (by user and day), else nothing.
struct EveryNthDay(i32);

impl NotificationPolicy for EveryNthDay {
    fn decide(&mut self, opportunities: &[Opportunity]) -> Vec<Decision> {
        opportunities
            .iter()
            .map(|o| Decision {
                send: (!o.opted_out && (o.day + o.user as i32) % self.0 == 0).then_some(0),
                propensity: Some(1.0),
                arm: "logging",
                model_version: None,
            })
            .collect()
    }

    fn action_probabilities(&self, o: &Opportunity) -> Option<Vec<f64>> {
        let mut p = vec![0.0; o.candidates.len() + 1];
        let send = !o.opted_out && (o.day + o.user as i32) % self.0 == 0;
        p[if send { 0 } else { o.candidates.len() }] = 1.0;
        Some(p)
    }
}

fn in_memory(config: SimConfig, policy: &mut dyn NotificationPolicy) -> Vec<DayOutput> {
    let mut sim = Simulation::new(config.clone(), &UserHasher::new(HASH_KEY.as_bytes()));
    let mut days: Vec<DayOutput> = (0..config.days()).map(|d| sim.step(d, policy)).collect();
    days.push(sim.finish());
    days
}

fn count(days: &[DayOutput], event: &str) -> f64 {
    days.iter()
        .map(|d| d.event_counts.get(event).copied().unwrap_or(0))
        .sum::<u64>() as f64
}

/// Active user-days in the last week of a run: how many users are still around.
fn active_days_in_last_week(days: &[DayOutput]) -> usize {
    let played = days.len() - 1; // the last output closes the horizon
    days[played - 7..played].iter().map(|d| d.churn.len()).sum()
}

#[test]
fn notifications_help_in_moderation_and_wear_users_out_daily() {
    let cfg = config(3_000, 42, 4);
    let never = in_memory(cfg.clone(), &mut EveryNthDay(i32::MAX));
    let daily = in_memory(cfg.clone(), &mut EveryNthDay(1));
    let every_third = in_memory(cfg, &mut EveryNthDay(3));
    let per_send =
        |days: &[DayOutput], event| count(days, event) / count(days, "notification_sent");
    assert!(
        per_send(&daily, "notification_opened")
            < 0.8 * per_send(&every_third, "notification_opened")
    );
    assert!(per_send(&daily, "push_opt_out") > 2.0 * per_send(&every_third, "push_opt_out"));
    // Sending is not free: daily pushes leave fewer users around than none at all, while a
    // push every third day keeps more around than none.
    let (never, daily, every_third) = (
        active_days_in_last_week(&never),
        active_days_in_last_week(&daily),
        active_days_in_last_week(&every_third),
    );
    assert!(daily < never, "daily {daily} vs never {never}");
    assert!(
        every_third > never,
        "every third day {every_third} vs never {never}"
    );
}

/// Checks that outcomes drawn with probability p happen at rate p, decile by decile:
/// the truth is exact, not merely correlated with the outcome.
fn assert_calibrated(name: &str, examples: &[(f64, bool)]) {
    let mut sorted = examples.to_vec();
    sorted.sort_by(|a, b| a.0.total_cmp(&b.0));
    for decile in sorted.chunks(sorted.len().div_ceil(10)) {
        let n = decile.len() as f64;
        let mean_p = decile.iter().map(|e| e.0).sum::<f64>() / n;
        let rate = decile.iter().filter(|e| e.1).count() as f64 / n;
        let se = (mean_p * (1.0 - mean_p) / n).sqrt().max(1e-3);
        assert!(
            (rate - mean_p).abs() < 4.0 * se + 0.005,
            "{name}: decile with mean truth {mean_p:.4} has rate {rate:.4} (n {n})"
        );
    }
}

#[test]
fn true_probabilities_are_calibrated_decile_by_decile() {
    let seed = 8;
    let days = in_memory(config(4_000, 35, seed), &mut LoggingPolicy::new(seed, 0.3));
    let notif: Vec<(f64, bool)> = days
        .iter()
        .flat_map(|d| &d.notifications)
        .filter_map(|n| Some((n.p_return?, n.returned?)))
        .collect();
    let churn: Vec<(f64, bool)> = days
        .iter()
        .flat_map(|d| &d.churn)
        .filter_map(|c| Some((c.p_churn, c.churned?)))
        .collect();
    let bounce: Vec<(f64, bool)> = days
        .iter()
        .flat_map(|d| &d.paywalls)
        .filter_map(|p| Some((p.p_bounce?, p.bounced?)))
        .collect();
    let trial: Vec<(f64, bool)> = days
        .iter()
        .flat_map(|d| &d.paywalls)
        .map(|p| (p.p_trial, p.trial))
        .collect();
    assert!(
        notif.len() > 50_000 && churn.len() > 20_000 && bounce.len() > 1_500,
        "{} {} {}",
        notif.len(),
        churn.len(),
        bounce.len()
    );
    assert_calibrated("returned_24h", &notif);
    // The oracle of the logged data: exact too, and, where the logs hide whether a silent
    // user lapsed, a posterior that is calibrated on its own.
    let sends = days.iter().flat_map(|d| &d.notifications);
    let attainable: Vec<(f64, bool)> = sends
        .clone()
        .filter_map(|n| Some((n.p_return_attainable?, n.returned?)))
        .collect();
    let hidden: Vec<(f64, bool)> = sends
        .filter(|n| n.p_return_attainable != n.p_return)
        .filter_map(|n| Some((n.p_return_attainable?, n.returned?)))
        .collect();
    assert_eq!(attainable.len(), notif.len());
    assert!(hidden.len() > 10_000, "{}", hidden.len());
    assert_calibrated("returned_24h given the logs", &attainable);
    assert_calibrated("returned_24h of silent users given the logs", &hidden);
    assert_calibrated("churn_14d", &churn);
    assert_calibrated("paywall_bounce", &bounce);
    assert_calibrated("paywall_trial", &trial);
}

#[tokio::test]
async fn the_simulate_and_report_commands_print_summary_and_oracle() {
    let db = TestDb::migrated().await;
    let bin = env!("CARGO_BIN_EXE_nudge-train");
    let args = [
        "simulate",
        "--database-url",
        &db.url,
        "--users",
        "200",
        "--days",
        "15",
        "--seed",
        "3",
    ];
    let refused = common::run_bin(bin, &args);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("NUDGE_HASH_KEY"));
    assert_eq!(db.count("SELECT count(*) FROM bronze.events").await, 0);

    let out = common::run_bin(bin, &[&args[..], &["--hash-key", HASH_KEY]].concat());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("simulated 200 users × 15 days (seed 3)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("notification_sent") && stdout.contains("oracle AUC"),
        "{stdout}"
    );
    assert!(
        db.count("SELECT count(*) FROM bronze.events WHERE source = 'simulator'")
            .await
            > 1_000
    );

    let report = common::run_bin(
        bin,
        &[
            "sim",
            "report",
            "--database-url",
            &db.url,
            "--from",
            "2026-01-10",
        ],
    );
    let stdout = String::from_utf8_lossy(&report.stdout);
    assert!(report.status.success(), "{stdout}");
    assert!(
        stdout.contains("examples dated 2026-01-10 to …") && stdout.contains("churn_14d"),
        "{stdout}"
    );
}
