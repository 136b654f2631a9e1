//! One tick of the control loop, at a given time: check the canary's guardrails, then
//! step the controller if its interval has passed. The state and every step live in
//! Postgres (`serving.controller`, `serving.controller_steps`,
//! `serving.guardrail_checks`); a tick runs in one transaction under an advisory lock,
//! so exactly one replica acts per tick and a restart continues where it stopped.
//!
//! Time is the tick's `at`, never the clock: the service ticks with the wall clock, and
//! a simulation ticks on simulated time.

use chrono::{DateTime, Duration, Utc};
use serde::Serialize;
use sqlx::{PgConnection, PgPool};

use super::guardrail::{self, Check, Evidence, Weighed};
use super::kpi::{self, ArmKpis, Span};
use super::pi::{self, Measurement, Outcome, Settings, State, Step};
use crate::policy::{GuardrailTest, Mode, Policy};
use crate::rollout::{Arm, Comparison, InForce, RolloutFlag};
use crate::store::StoreError;
use crate::store::flags::FlagStore;

/// The advisory lock a tick holds (an arbitrary constant shared by every replica).
const LOCK_KEY: i64 = 0x6e75_6467_6563_746c; // "nudgectl"

/// How long after a send its outcome is known.
const OUTCOME_WINDOW_HOURS: i64 = 24;

/// Why a tick failed.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// Postgres.
    #[error("controller state: {0}")]
    Database(#[from] sqlx::Error),
    /// The flag store refused the guardrail's rollback.
    #[error("guardrail rollback not written: {0}")]
    Flags(#[from] StoreError),
}

/// The controller's settings from a policy.
pub fn settings(policy: &Policy) -> Settings {
    let c = &policy.controller;
    Settings {
        target_roi: c.target_roi,
        kp: c.kp,
        ki: c.ki,
        bias: policy.threshold.initial,
        min: policy.threshold.min,
        max: policy.threshold.max,
        max_step: c.max_step,
        min_sends: c.min_sends,
    }
}

/// The stored state with its bookkeeping.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Stored {
    /// The PI state.
    #[serde(flatten)]
    pub state: State,
    /// The next measurement starts here.
    pub measured_until: Option<DateTime<Utc>>,
    /// The last step (moved, held or dry run).
    pub last_step_at: Option<DateTime<Utc>>,
    /// Guardrail evidence older than this is ignored: when the rollout in force, or the
    /// model deciding for its model arm, began (or the last trip).
    pub guardrails_since: Option<DateTime<Utc>>,
    /// The rollout whose evidence the guardrails weigh (its arm, percent, holdout and
    /// salt, as in `canary 50% holdout 5% salt s`): when it changes, `guardrails_since`
    /// moves to the tick that saw it.
    pub guardrails_rollout: Option<String>,
    /// The last guardrail check (passed or breached).
    pub guardrails_checked_at: Option<DateTime<Utc>>,
}

impl Stored {
    fn initial(policy: &Policy) -> Self {
        Self {
            state: State::initial(&settings(policy)),
            measured_until: None,
            last_step_at: None,
            guardrails_since: None,
            guardrails_rollout: None,
            guardrails_checked_at: None,
        }
    }

    /// Keeps `rollout`, the rollout in force at `at` ([`InForce::guarded`]). Evidence
    /// belongs to one rollout: a new arm, percent, holdout or salt moves users between
    /// arms, so what came before is not evidence about what is in force now. The first
    /// tick that sees a change starts the evidence again; the first to keep a rollout at
    /// all leaves it where it started.
    fn see_rollout(&mut self, rollout: String, at: DateTime<Utc>) {
        let changed = self
            .guardrails_rollout
            .as_ref()
            .is_some_and(|seen| *seen != rollout);
        if changed {
            self.guardrails_since = Some(self.guardrails_since.map_or(at, |t| t.max(at)));
        }
        self.guardrails_rollout = Some(rollout);
    }

    /// When the next step is due under `interval`.
    pub fn next_step_at(&self, interval: Duration) -> Option<DateTime<Utc>> {
        self.last_step_at.map(|t| t + interval)
    }

    /// When the next guardrail check is due under `interval`, if a check ran at all.
    pub fn next_guardrail_check_at(&self, interval: Duration) -> Option<DateTime<Utc>> {
        self.guardrails_checked_at.map(|t| t + interval)
    }
}

/// The threshold in force under `policy`: the controller's output within the policy's
/// bounds, or the initial threshold before any step (or with the controller disabled).
pub fn threshold_in_force(policy: &Policy, stored: Option<&Stored>) -> f64 {
    match stored {
        Some(s) if policy.controller.enabled => s
            .state
            .output
            .clamp(policy.threshold.min, policy.threshold.max),
        _ => policy.threshold.initial,
    }
}

type StoredRow = (
    f64,
    f64,
    Option<f64>,
    Option<DateTime<Utc>>,
    Option<DateTime<Utc>>,
    Option<DateTime<Utc>>,
    Option<String>,
    Option<DateTime<Utc>>,
);

const SELECT_STORED: &str = "SELECT integral, output, last_measurement, measured_until, \
     last_step_at, guardrails_since, guardrails_rollout, guardrails_checked_at \
     FROM serving.controller";
const SELECT_STORED_FOR_UPDATE: &str = "SELECT integral, output, last_measurement, \
     measured_until, last_step_at, guardrails_since, guardrails_rollout, \
     guardrails_checked_at FROM serving.controller FOR UPDATE";

fn stored_of(row: StoredRow) -> Stored {
    Stored {
        state: State {
            integral: row.0,
            output: row.1,
            last_measurement: row.2,
        },
        measured_until: row.3,
        last_step_at: row.4,
        guardrails_since: row.5,
        guardrails_rollout: row.6,
        guardrails_checked_at: row.7,
    }
}

/// The stored state, if the controller ever ticked.
pub async fn load(pool: &PgPool) -> Result<Option<Stored>, sqlx::Error> {
    let row: Option<StoredRow> = sqlx::query_as(SELECT_STORED).fetch_optional(pool).await?;
    Ok(row.map(stored_of))
}

/// One logged step.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct StepRecord {
    /// The step's time.
    pub at: DateTime<Utc>,
    /// Decisions measured: from.
    pub window_from: DateTime<Utc>,
    /// Decisions measured: until (excluded).
    pub window_to: DateTime<Utc>,
    /// Model-arm sends measured.
    pub sends: u64,
    /// Of those, followed by an action within 24 h.
    pub actioned: u64,
    /// Their ROI, when there were sends.
    pub roi: Option<f64>,
    /// Whether the step only logged what it would do.
    pub dry_run: bool,
    /// Threshold before.
    pub output_before: f64,
    /// The step itself.
    #[serde(flatten)]
    pub step: Step,
}

/// The last `limit` steps, newest first.
pub async fn history(pool: &PgPool, limit: i64) -> Result<Vec<StepRecord>, sqlx::Error> {
    type Row = (
        DateTime<Utc>,
        DateTime<Utc>,
        DateTime<Utc>,
        i64,
        i64,
        Option<f64>,
        String,
        bool,
        Option<f64>,
        f64,
        f64,
        bool,
        String,
        f64,
        f64,
        f64,
    );
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT at, window_from, window_to, sends, actioned, roi, outcome, dry_run, error,
                p_term, i_term, integrated, limit_hit, output_before, output_after, integral_after
         FROM serving.controller_steps ORDER BY at DESC, id DESC LIMIT $1",
    )
    .bind(limit)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| StepRecord {
            at: r.0,
            window_from: r.1,
            window_to: r.2,
            sends: kpi::count(r.3),
            actioned: kpi::count(r.4),
            roi: r.5,
            dry_run: r.7,
            output_before: r.13,
            step: Step {
                outcome: Outcome::named(&r.6).unwrap_or(Outcome::HeldSmallSample),
                error: r.8,
                p_term: r.9,
                i_term: r.10,
                integrated: r.11,
                limit: pi::Limit::named(&r.12).unwrap_or(pi::Limit::None),
                next: State {
                    integral: r.15,
                    output: r.14,
                    last_measurement: r.5,
                },
            },
        })
        .collect())
}

/// The guardrail checks of one tick.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct LatestChecks {
    /// The tick's time.
    pub at: DateTime<Utc>,
    /// Each guardrail's check.
    pub checks: Vec<Check>,
}

/// The guardrail checks of the latest tick that ran them.
pub async fn latest_checks(pool: &PgPool) -> Result<Option<LatestChecks>, sqlx::Error> {
    type Row = (
        DateTime<Utc>,
        String,
        String,
        i64,
        i64,
        i64,
        i64,
        f64,
        Option<f64>,
        Option<f64>,
        bool,
        Option<DateTime<Utc>>,
        Option<DateTime<Utc>>,
    );
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT at, metric, arm, canary_successes, canary_trials, control_successes,
                control_trials, margin, z, critical, breached, weighed_from, weighed_to
         FROM serving.guardrail_checks
         WHERE at = (SELECT max(at) FROM serving.guardrail_checks) ORDER BY metric",
    )
    .fetch_all(pool)
    .await?;
    let Some(at) = rows.first().map(|r| r.0) else {
        return Ok(None);
    };
    let checks = rows
        .into_iter()
        .filter_map(|r| {
            Some(Check {
                metric: guardrail::Metric::named(&r.1)?,
                arm: Arm::named(&r.2)?,
                canary: guardrail::Proportion {
                    successes: kpi::count(r.3),
                    trials: kpi::count(r.4),
                },
                control: guardrail::Proportion {
                    successes: kpi::count(r.5),
                    trials: kpi::count(r.6),
                },
                margin: r.7,
                z: r.8,
                critical: r.9,
                breached: r.10,
                weighed: r.11.zip(r.12).map(|(from, to)| Span { from, to }),
            })
        })
        .collect();
    Ok(Some(LatestChecks { at, checks }))
}

/// Each guardrail's z at its latest `checks` checks, newest first (`None`: too few
/// samples), by metric.
pub async fn recent_z(
    pool: &PgPool,
    checks: i64,
) -> Result<Vec<(guardrail::Metric, Vec<Option<f64>>)>, sqlx::Error> {
    let rows: Vec<(String, Vec<Option<f64>>)> = sqlx::query_as(
        "SELECT metric, array_agg(z ORDER BY at DESC)
         FROM (SELECT metric, at, z, row_number() OVER (PARTITION BY metric ORDER BY at DESC) AS n
               FROM serving.guardrail_checks) c
         WHERE n <= $1 GROUP BY metric ORDER BY metric",
    )
    .bind(checks)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .filter_map(|(metric, z)| Some((guardrail::Metric::named(&metric)?, z)))
        .collect())
}

/// What the guardrails found at a tick.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum GuardrailReport {
    /// Disabled in the policy.
    Disabled,
    /// Nothing to check: the rollout in force has the model decide for nobody.
    NoModelArm,
    /// Nothing to compare with: the model decides for every user (a canary of 100 % or
    /// full mode, without a holdout), so the guardrails cannot run.
    NoControl,
    /// Checked less than `guardrails.interval` ago.
    NotDue {
        /// When the next check is.
        next_check_at: DateTime<Utc>,
    },
    /// Checked: nothing breached.
    Passed {
        /// Each guardrail's check.
        checks: Vec<Check>,
    },
    /// Breached: the rollout was switched to shadow.
    RolledBack {
        /// Each guardrail's check.
        checks: Vec<Check>,
        /// The reason written on the flag.
        reason: String,
    },
}

/// What the controller did at a tick.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum ControllerReport {
    /// Disabled in the policy.
    Disabled,
    /// The interval has not passed since the last step.
    NotDue {
        /// When it is.
        next_step_at: DateTime<Utc>,
    },
    /// No complete outcome window since the last measurement.
    NothingToMeasure,
    /// A step (moved, held or dry run).
    Stepped(StepRecord),
}

/// What a tick did.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum TickReport {
    /// Another replica holds the lock: it is ticking now.
    Busy,
    /// This tick ran.
    Ran(Box<TickRun>),
}

/// What a tick that ran did.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct TickRun {
    /// The tick's time.
    pub at: DateTime<Utc>,
    /// Guardrails.
    pub guardrails: GuardrailReport,
    /// The controller.
    pub controller: ControllerReport,
    /// The state after the tick.
    pub state: Stored,
}

/// Ticks at `at` under `policy` with `in_force` (the runtime flag over the policy):
/// guardrails first (a breach writes a shadow rollout flag to `flags`, set by
/// `guardrail`), then the controller if its interval has passed.
pub async fn tick(
    pool: &PgPool,
    flags: &FlagStore,
    policy: &Policy,
    in_force: &InForce,
    at: DateTime<Utc>,
) -> Result<TickReport, ControlError> {
    let mut tx = pool.begin().await?;
    let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1)")
        .bind(LOCK_KEY)
        .fetch_one(&mut *tx)
        .await?;
    if !locked {
        return Ok(TickReport::Busy);
    }
    let row: Option<StoredRow> = sqlx::query_as(SELECT_STORED_FOR_UPDATE)
        .fetch_optional(&mut *tx)
        .await?;
    let mut stored = row.map_or_else(|| Stored::initial(policy), stored_of);

    let guardrails = check_guardrails(&mut tx, flags, policy, in_force, at, &mut stored).await?;
    let controller = step_controller(&mut tx, policy, at, &mut stored).await?;

    sqlx::query(
        "INSERT INTO serving.controller
           (id, integral, output, last_measurement, measured_until, last_step_at, guardrails_since,
            guardrails_rollout, guardrails_checked_at)
         VALUES (true, $1, $2, $3, $4, $5, $6, $7, $8)
         ON CONFLICT (id) DO UPDATE SET integral = $1, output = $2, last_measurement = $3,
           measured_until = $4, last_step_at = $5, guardrails_since = $6,
           guardrails_rollout = $7, guardrails_checked_at = $8, updated_at = now()",
    )
    .bind(stored.state.integral)
    .bind(stored.state.output)
    .bind(stored.state.last_measurement)
    .bind(stored.measured_until)
    .bind(stored.last_step_at)
    .bind(stored.guardrails_since)
    .bind(&stored.guardrails_rollout)
    .bind(stored.guardrails_checked_at)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(TickReport::Ran(Box::new(TickRun {
        at,
        guardrails,
        controller,
        state: stored,
    })))
}

async fn check_guardrails(
    tx: &mut PgConnection,
    flags: &FlagStore,
    policy: &Policy,
    in_force: &InForce,
    at: DateTime<Utc>,
    stored: &mut Stored,
) -> Result<GuardrailReport, ControlError> {
    let settings = &policy.guardrails;
    if !settings.enabled {
        return Ok(GuardrailReport::Disabled);
    }
    stored.see_rollout(in_force.guarded(&policy.rollout.salt), at);
    let model_arm = match in_force.comparison() {
        Comparison::NoModelArm => return Ok(GuardrailReport::NoModelArm),
        Comparison::NoControl => return Ok(GuardrailReport::NoControl),
        Comparison::ModelArm(arm) => arm,
    };
    if let Some(next_check_at) = stored
        .next_guardrail_check_at(settings.interval)
        .filter(|&next| at < next)
    {
        return Ok(GuardrailReport::NotDue { next_check_at });
    }
    stored.guardrails_checked_at = Some(at);
    // With no change seen yet, the evidence starts with the model arm's first decision.
    // The evidence starts with the first decision of the model now deciding, no earlier
    // than the last change of rollout or trip.
    let start = kpi::model_arm_start(&mut *tx, model_arm.as_str(), stored.guardrails_since, at);
    let Some(since) = start.await?.or(stored.guardrails_since) else {
        return Ok(GuardrailReport::Passed { checks: Vec::new() });
    };
    stored.guardrails_since = Some(since);
    // A fixed test weighs the trailing window, a sequential one everything since.
    let lookback = match settings.test {
        GuardrailTest::Fixed => settings.window.min(at - since),
        GuardrailTest::Sequential => at - since,
    };
    let from = at - lookback;
    let arms = kpi::arms(&mut *tx, from, at, at).await?;
    let (Some(model), Some(control)) = (
        kpi::find(&arms, model_arm.as_str()),
        kpi::find(&arms, "control"),
    ) else {
        return Ok(GuardrailReport::Passed { checks: Vec::new() });
    };
    // D7 is read only when its guardrail is set, and from the users whose 7th day has
    // ended, not from the window's (see `guardrail`).
    let cohort = settings
        .d7_retention
        .and(kpi::d7_cohort(at, lookback, Some(since)));
    let d7 = match cohort {
        Some(cohort) => kpi::d7_by_arm(&mut *tx, cohort, at).await?,
        None => Vec::new(),
    };
    let weighed = Weighed {
        window: Span { from, to: at },
        d7_cohort: cohort,
    };
    let checks = guardrail::check(
        settings,
        weighed,
        (model_arm, &Evidence::of(model, &d7)),
        &Evidence::of(control, &d7),
    );
    for c in &checks {
        sqlx::query(
            "INSERT INTO serving.guardrail_checks (at, metric, arm, canary_successes,
               canary_trials, control_successes, control_trials, margin, z, critical, breached,
               weighed_from, weighed_to)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
        )
        .bind(at)
        .bind(c.metric.as_str())
        .bind(c.arm.as_str())
        .bind(c.canary.successes as i64)
        .bind(c.canary.trials as i64)
        .bind(c.control.successes as i64)
        .bind(c.control.trials as i64)
        .bind(c.margin)
        .bind(c.z)
        .bind(c.critical)
        .bind(c.breached)
        .bind(c.weighed.map(|s| s.from))
        .bind(c.weighed.map(|s| s.to))
        .execute(&mut *tx)
        .await?;
    }
    let breached: Vec<&Check> = checks.iter().filter(|c| c.breached).collect();
    if breached.is_empty() {
        return Ok(GuardrailReport::Passed { checks });
    }
    // The flag says, for each breach, both arms' rates and what they were read from.
    let reason = format!(
        "guardrail breached at {}: {}",
        at.to_rfc3339(),
        breached
            .iter()
            .map(|c| c.to_string())
            .collect::<Vec<_>>()
            .join("; ")
    );
    let flag = RolloutFlag {
        mode: Mode::Shadow,
        canary_percent: in_force.canary_percent,
        reason: reason.clone(),
        set_by: "guardrail".into(),
        set_at: Utc::now(),
    };
    flags.set_rollout(Some(&flag)).await?;
    stored.guardrails_since = Some(at);
    tracing::error!(%reason, "guardrail breached: rollout switched to shadow");
    Ok(GuardrailReport::RolledBack { checks, reason })
}

async fn step_controller(
    tx: &mut PgConnection,
    policy: &Policy,
    at: DateTime<Utc>,
    stored: &mut Stored,
) -> Result<ControllerReport, ControlError> {
    let c = &policy.controller;
    if !c.enabled {
        return Ok(ControllerReport::Disabled);
    }
    if let Some(next) = stored.next_step_at(c.interval).filter(|&next| at < next) {
        return Ok(ControllerReport::NotDue { next_step_at: next });
    }
    let outcome_window = Duration::hours(OUTCOME_WINDOW_HOURS);
    let to = at - outcome_window;
    let from = stored
        .measured_until
        .unwrap_or(at - c.interval - outcome_window);
    if to <= from {
        return Ok(ControllerReport::NothingToMeasure);
    }
    let arms: Vec<ArmKpis> = kpi::arms(&mut *tx, from, to, at).await?;
    let (measurement, actioned): (Measurement, u64) = kpi::model_arm(&arms);
    let step = pi::step(&settings(policy), &stored.state, measurement);
    let record = StepRecord {
        at,
        window_from: from,
        window_to: to,
        sends: measurement.sends,
        actioned,
        roi: (measurement.sends > 0).then_some(measurement.roi),
        dry_run: c.dry_run,
        output_before: stored.state.output,
        step,
    };
    sqlx::query(
        "INSERT INTO serving.controller_steps (at, window_from, window_to, sends, actioned, roi,
           outcome, dry_run, error, p_term, i_term, integrated, limit_hit, output_before,
           output_after, integral_after)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)",
    )
    .bind(at)
    .bind(from)
    .bind(to)
    .bind(measurement.sends as i64)
    .bind(actioned as i64)
    .bind(record.roi)
    .bind(step.outcome.as_str())
    .bind(c.dry_run)
    .bind(step.error)
    .bind(step.p_term)
    .bind(step.i_term)
    .bind(step.integrated)
    .bind(step.limit.as_str())
    .bind(stored.state.output)
    .bind(step.next.output)
    .bind(step.next.integral)
    .execute(&mut *tx)
    .await?;
    stored.last_step_at = Some(at);
    if step.outcome == Outcome::Stepped {
        stored.measured_until = Some(to);
        if !c.dry_run {
            stored.state = step.next;
        }
    } else {
        // A held step keeps its window open, so its sends count at the next step.
        stored.measured_until = Some(from);
    }
    tracing::info!(at = %at, roi = ?record.roi, sends = record.sends, outcome = step.outcome.as_str(),
                   before = record.output_before, after = step.next.output, dry_run = c.dry_run,
                   "controller step");
    Ok(ControllerReport::Stepped(record))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_of_rollout_restarts_the_evidence_and_nothing_else_does() {
        let day = |d| chrono::TimeZone::with_ymd_and_hms(&Utc, 2026, 3, d, 0, 0, 0).unwrap();
        let policy = Policy::parse(
            "rollout: { mode: canary, canary_percent: 50, salt: s }\n\
             threshold: { initial: 0.3, min: 0.05, max: 0.9 }\n",
        )
        .unwrap();
        let mut stored = Stored::initial(&policy);
        // The first rollout kept: its evidence starts where it did (the first decision).
        stored.see_rollout("canary 50%".into(), day(2));
        assert_eq!(stored.guardrails_since, None);
        // The same rollout, ticks later: nothing moves.
        stored.guardrails_since = Some(day(1));
        stored.see_rollout("canary 50%".into(), day(5));
        assert_eq!(stored.guardrails_since, Some(day(1)));
        // A change: the evidence starts at the tick that saw it.
        stored.see_rollout("canary 70%".into(), day(6));
        assert_eq!(stored.guardrails_since, Some(day(6)));
        assert_eq!(stored.guardrails_rollout.as_deref(), Some("canary 70%"));
        // Never back in time: a trip recorded later than the change stays.
        stored.guardrails_since = Some(day(9));
        stored.see_rollout("no_model_arm".into(), day(8));
        assert_eq!(stored.guardrails_since, Some(day(9)));
    }
}
