//! KPIs per arm from the decision log and silver events, through `kpi.arms` and
//! `kpi.d7_pre_period` (SQL in `notebooks-sql/migrations/0015_kpis_and_controller.sql`,
//! `0021_d7_pre_period.sql` and `0024_crash_free_users.sql`).

use chrono::{DateTime, TimeDelta, Utc};
use serde::Serialize;
use sqlx::PgPool;

use super::pi::Measurement;

/// One arm's counts over a window (see `kpi.arms` for each definition).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct ArmKpis {
    /// Arm: off, shadow, canary, control or full.
    pub arm: String,
    /// Users whose first decision in the window was in this arm.
    pub users: u64,
    /// Decisions.
    pub decisions: u64,
    /// Decisions that sent.
    pub sends: u64,
    /// Sends whose 24 h outcome window has been observed.
    pub measured_sends: u64,
    /// Of those, followed by an action (push open or outreach) within 24 h.
    pub actioned: u64,
    /// Of those, whose notification was opened within 24 h.
    pub opened: u64,
    /// Users who turned push off after their first decision.
    pub opted_out: u64,
    /// Users whose 7th day has been observed.
    pub d7_users: u64,
    /// Of those, active on their 7th day.
    pub retained_d7: u64,
    /// Users with a crash (a fatal `$exception`) after their first decision.
    pub crashed: u64,
}

/// A count as Postgres returns it (`bigint`), never negative.
pub(crate) fn count(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

fn share(part: u64, whole: u64) -> Option<f64> {
    (whole > 0).then(|| part as f64 / whole as f64)
}

impl ArmKpis {
    /// Share of measured sends followed by an action within 24 h.
    pub fn roi(&self) -> Option<f64> {
        share(self.actioned, self.measured_sends)
    }

    /// Share of measured sends opened within 24 h.
    pub fn open_rate(&self) -> Option<f64> {
        share(self.opened, self.measured_sends)
    }

    /// Sends per user.
    pub fn sends_per_user(&self) -> Option<f64> {
        (self.users > 0).then(|| self.sends as f64 / self.users as f64)
    }

    /// Share of users who opted out.
    pub fn opt_out_rate(&self) -> Option<f64> {
        share(self.opted_out, self.users)
    }

    /// D7 retention.
    pub fn d7_retention(&self) -> Option<f64> {
        share(self.retained_d7, self.d7_users)
    }

    /// Whether the model's decisions are acted on in this arm.
    pub fn model_decides(&self) -> bool {
        matches!(self.arm.as_str(), "canary" | "full")
    }
}

/// The per-arm KPIs of decisions made in `[from, to)`, with outcomes observed by `observed`.
pub async fn arms(
    db: impl sqlx::PgExecutor<'_>,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    observed: DateTime<Utc>,
) -> Result<Vec<ArmKpis>, sqlx::Error> {
    let rows: Vec<Row> = sqlx::query_as("SELECT * FROM kpi.arms($1, $2, $3)")
        .bind(from)
        .bind(to)
        .bind(observed)
        .fetch_all(db)
        .await?;
    Ok(rows
        .into_iter()
        .map(|r| ArmKpis {
            arm: r.arm,
            users: count(r.users),
            decisions: count(r.decisions),
            sends: count(r.sends),
            measured_sends: count(r.measured_sends),
            actioned: count(r.actioned),
            opened: count(r.opened),
            opted_out: count(r.opted_out),
            d7_users: count(r.d7_users),
            retained_d7: count(r.retained_d7),
            crashed: count(r.crashed),
        })
        .collect())
}

/// A span of decision times, `[from, to)`: the decisions made then or, for D7, the users
/// first decided then.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[schema(as = GuardrailSpan)]
pub struct Span {
    /// From (included).
    pub from: DateTime<Utc>,
    /// To (excluded).
    pub to: DateTime<Utc>,
}

/// How long after a user's first decision their D7 is known: the 7th day after it ends
/// 8 days later (`kpi.first_seen`).
pub const D7_KNOWN_AFTER: TimeDelta = TimeDelta::days(8);

/// The users whose D7 is known at `at`, among those a trailing `window` would count: the
/// first decisions in `[at − window − 8 d, at − 8 d)`, none before `since`. `None` when
/// that is empty (a window shorter than the wait, or `since` too recent).
pub fn d7_cohort(
    at: DateTime<Utc>,
    window: TimeDelta,
    since: Option<DateTime<Utc>>,
) -> Option<Span> {
    let to = at - D7_KNOWN_AFTER;
    let from = since.map_or(to - window, |since| since.max(to - window));
    (from < to).then_some(Span { from, to })
}

/// One arm's D7 retention over the users first decided in a window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArmD7 {
    /// Arm.
    pub arm: String,
    /// Users whose 7th day has been observed.
    pub users: u64,
    /// Of those, active on their 7th day.
    pub retained: u64,
}

/// Each arm's D7 retention of the users first decided in `cohort`, observed by
/// `observed`: the D7 columns of [`arms`] alone, without reading the window's sends.
pub async fn d7_by_arm(
    db: impl sqlx::PgExecutor<'_>,
    cohort: Span,
    observed: DateTime<Utc>,
) -> Result<Vec<ArmD7>, sqlx::Error> {
    let rows: Vec<(String, i64, i64)> = sqlx::query_as(
        "SELECT arm, count(retained_d7), count(*) FILTER (WHERE retained_d7)
         FROM kpi.first_seen($1, $2, $3) GROUP BY arm ORDER BY arm",
    )
    .bind(cohort.from)
    .bind(cohort.to)
    .bind(observed)
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(arm, users, retained)| ArmD7 {
            arm,
            users: count(users),
            retained: count(retained),
        })
        .collect())
}

/// What the decision log covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoggedSpan {
    /// The first decision's time.
    pub first: DateTime<Utc>,
    /// The last decision's time.
    pub last: DateTime<Utc>,
    /// How far outcomes are observed: the newest silver event (the last decision when
    /// there is none).
    pub observed: DateTime<Utc>,
}

/// The span of the decision log; `None` when it is empty.
pub async fn logged_span(db: impl sqlx::PgExecutor<'_>) -> Result<Option<LoggedSpan>, sqlx::Error> {
    type Instant = Option<DateTime<Utc>>;
    let (first, last, observed): (Instant, Instant, Instant) = sqlx::query_as(
        "SELECT (SELECT min(decided_at) FROM serving.decisions),
                (SELECT max(decided_at) FROM serving.decisions),
                (SELECT max(ts) FROM silver.events)",
    )
    .fetch_one(db)
    .await?;
    Ok(first.zip(last).map(|(first, last)| LoggedSpan {
        first,
        last,
        observed: observed.unwrap_or(last),
    }))
}

/// `[from, to)` cut into consecutive windows of `every` (the last one shorter if need
/// be); one window for the whole range without `every`.
pub fn windows(
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    every: Option<chrono::TimeDelta>,
) -> Vec<(DateTime<Utc>, DateTime<Utc>)> {
    let step = every.unwrap_or(to - from);
    if step <= chrono::TimeDelta::zero() {
        return Vec::new();
    }
    let mut windows = Vec::new();
    let mut start = from;
    while start < to {
        let end = (start + step).min(to);
        windows.push((start, end));
        start = end;
    }
    windows
}

/// A row of `kpi.arms` as Postgres types it.
#[derive(sqlx::FromRow)]
struct Row {
    arm: String,
    users: i64,
    decisions: i64,
    sends: i64,
    measured_sends: i64,
    actioned: i64,
    opened: i64,
    opted_out: i64,
    d7_users: i64,
    retained_d7: i64,
    crashed: i64,
}

/// The model arm's ROI (canary and full together): what the controller measures.
pub fn model_arm(arms: &[ArmKpis]) -> (Measurement, u64) {
    let (sends, actioned) = arms
        .iter()
        .filter(|a| a.model_decides())
        .fold((0, 0), |(s, a), arm| {
            (s + arm.measured_sends, a + arm.actioned)
        });
    let roi = share(actioned, sends).unwrap_or(0.0);
    (Measurement { roi, sends }, actioned)
}

/// The arm named `name`, if it had decisions.
pub fn find<'a>(arms: &'a [ArmKpis], name: &str) -> Option<&'a ArmKpis> {
    arms.iter().find(|a| a.arm == name)
}

/// The arms a report compares: the model arm and control. The model arm is the canary,
/// or without one a full rollout (whose control is the rollout's holdout).
pub fn compared(arms: &[ArmKpis]) -> Option<(&ArmKpis, &ArmKpis)> {
    let model = find(arms, "canary").or_else(|| find(arms, "full"))?;
    Some((model, find(arms, "control")?))
}

/// The 95 % Wilson interval of a share of `successes` out of `trials`.
pub fn wilson(successes: u64, trials: u64) -> Option<(f64, f64)> {
    if trials == 0 {
        return None;
    }
    let (n, p, z) = (trials as f64, successes as f64 / trials as f64, 1.96);
    let centre = (p + z * z / (2.0 * n)) / (1.0 + z * z / n);
    let half = z / (1.0 + z * z / n) * (p * (1.0 - p) / n + z * z / (4.0 * n * n)).sqrt();
    Some((centre - half, centre + half))
}

/// A difference of two shares with its 95 % (Wald) half-width.
pub fn difference(a: (u64, u64), b: (u64, u64)) -> Option<(f64, f64)> {
    let (p1, p2) = (share(a.0, a.1)?, share(b.0, b.1)?);
    let se = (p1 * (1.0 - p1) / a.1 as f64 + p2 * (1.0 - p2) / b.1 as f64).sqrt();
    Some((p1 - p2, 1.96 * se))
}

/// Sends per user with a 95 % half-width (sends counted as Poisson).
pub fn sends_per_user(arm: &ArmKpis) -> Option<(f64, f64)> {
    let users = arm.users as f64;
    (arm.users > 0).then(|| {
        (
            arm.sends as f64 / users,
            1.96 * (arm.sends as f64).sqrt() / users,
        )
    })
}

/// Days before the experiment's start whose activity adjusts the D7 lift.
pub const PRE_PERIOD_DAYS: i64 = 14;

/// One arm's D7 outcomes beside a covariate the treatment cannot have touched (see
/// `kpi.d7_pre_period`): over the users whose 7th day was observed, y = retained (0 or 1)
/// and x = their days with a session in the pre-period.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct D7Sums {
    /// Users (n).
    pub users: u64,
    /// Σy.
    pub retained: u64,
    /// Σx.
    pub pre_days: u64,
    /// Σx².
    pub pre_days_sq: u64,
    /// Σxy.
    pub pre_days_retained: u64,
}

/// The canary's D7 lift over control adjusted for the pre-period (CUPED): each user's y
/// less θ·x, with θ the slope of y on x over both arms. A chance difference between the
/// arms' users before the experiment is taken out of the lift, and the interval narrows
/// by as much as x explains of y; with x the same for everyone it is the plain difference.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdjustedLift {
    /// Canary minus control, adjusted.
    pub lift: f64,
    /// Its 95 % half-width.
    pub half_width: f64,
    /// Mean pre-period active days of the canary's users, then of control's.
    pub pre_days: (f64, f64),
}

/// The adjusted D7 lift of `canary` over `control`; `None` when either has no users.
pub fn adjusted_d7_lift(canary: &D7Sums, control: &D7Sums) -> Option<AdjustedLift> {
    if canary.users == 0 || control.users == 0 {
        return None;
    }
    // Means of y, x, x², xy over a set of users.
    let moments = |sums: &[&D7Sums]| {
        let n: u64 = sums.iter().map(|s| s.users).sum();
        let mean = |f: fn(&D7Sums) -> u64| sums.iter().map(|s| f(s)).sum::<u64>() as f64 / n as f64;
        (
            n as f64,
            mean(|s| s.retained),
            mean(|s| s.pre_days),
            mean(|s| s.pre_days_sq),
            mean(|s| s.pre_days_retained),
        )
    };
    let (_, y, x, xx, xy) = moments(&[canary, control]);
    let var_x = xx - x * x;
    let theta = if var_x > 1e-12 {
        (xy - x * y) / var_x
    } else {
        0.0
    };
    // Mean of y − θx in an arm, and its variance over the arm's users (y² = y).
    let arm = |sums: &D7Sums| {
        let (n, y, x, xx, xy) = moments(&[sums]);
        let variance = y * (1.0 - y) - 2.0 * theta * (xy - x * y) + theta * theta * (xx - x * x);
        (y - theta * x, variance.max(0.0) / n, x)
    };
    let ((a, var_a, x_a), (b, var_b, x_b)) = (arm(canary), arm(control));
    Some(AdjustedLift {
        lift: a - b,
        half_width: 1.96 * (var_a + var_b).sqrt(),
        pre_days: (x_a, x_b),
    })
}

/// Each arm's [`D7Sums`] for decisions in `[from, to)` observed by `observed`, x counted
/// over `pre` (before the experiment started).
pub async fn d7_pre_period(
    db: impl sqlx::PgExecutor<'_>,
    (from, to, observed): (DateTime<Utc>, DateTime<Utc>, DateTime<Utc>),
    pre: (DateTime<Utc>, DateTime<Utc>),
) -> Result<Vec<(String, D7Sums)>, sqlx::Error> {
    let rows: Vec<(String, i64, i64, i64, i64, i64)> =
        sqlx::query_as("SELECT * FROM kpi.d7_pre_period($1, $2, $3, $4, $5)")
            .bind(from)
            .bind(to)
            .bind(observed)
            .bind(pre.0)
            .bind(pre.1)
            .fetch_all(db)
            .await?;
    Ok(rows
        .into_iter()
        .map(|(arm, users, retained, x, xx, xy)| {
            let sums = D7Sums {
                users: count(users),
                retained: count(retained),
                pre_days: count(x),
                pre_days_sq: count(xx),
                pre_days_retained: count(xy),
            };
            (arm, sums)
        })
        .collect())
}

/// When the experiment started: the first decision in a canary or control arm (the
/// control of a full rollout being its holdout).
pub async fn experiment_start(
    db: impl sqlx::PgExecutor<'_>,
) -> Result<Option<DateTime<Utc>>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT min(decided_at) FROM serving.decisions WHERE arm IN ('canary', 'control')",
    )
    .fetch_one(db)
    .await
}

/// When the model now deciding for `arm` began: its first decision at or after `since`
/// (any time when `None`) and before `before`, by the model version of the arm's latest
/// decision that ran one (any decision when none ran). A promoted or rolled-back model is
/// a new treatment, so evidence about the arm starts again with it. `None` without
/// decisions for `arm` in that span.
pub async fn model_arm_start(
    db: impl sqlx::PgExecutor<'_>,
    arm: &str,
    since: Option<DateTime<Utc>>,
    before: DateTime<Utc>,
) -> Result<Option<DateTime<Utc>>, sqlx::Error> {
    // Two index walks on decided_at, each stopping at its first match: the latest
    // version backwards from `before`, its first decision forwards from `since`.
    sqlx::query_scalar(
        "SELECT min(d.decided_at) FROM serving.decisions d
         WHERE d.arm = $1 AND d.decided_at >= coalesce($2, '-infinity') AND d.decided_at < $3
           AND d.model_version IS NOT DISTINCT FROM (
             SELECT l.model_version FROM serving.decisions l
             WHERE l.arm = $1 AND l.decided_at >= coalesce($2, '-infinity')
               AND l.decided_at < $3 AND l.model_version IS NOT NULL
             ORDER BY l.decided_at DESC LIMIT 1)",
    )
    .bind(arm)
    .bind(since)
    .bind(before)
    .fetch_one(db)
    .await
}

/// The KPIs of decisions in a window: each arm's, and the D7 lift adjusted for the users'
/// activity in the [`PRE_PERIOD_DAYS`] before the experiment started, when the window has
/// a canary and a control. Displayed as the per-arm [`table`] and the adjusted lift.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// Each arm's KPIs.
    pub arms: Vec<ArmKpis>,
    /// The adjusted D7 lift.
    pub adjusted: Option<AdjustedLift>,
}

impl Report {
    /// The model arm minus control ([`compared`]), the D7 lift also adjusted; `None`
    /// without both arms.
    pub fn lifts(&self) -> Option<Lifts> {
        Lifts::of(&self.arms).map(|lifts| Lifts {
            d7_adjusted: self.adjusted.map(|a| (a.lift, a.half_width)),
            ..lifts
        })
    }
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&table(&self.arms))?;
        if let Some((adjusted, (model, _))) = self.adjusted.zip(compared(&self.arms)) {
            let arm = &model.arm;
            writeln!(
                f,
                "{arm} − control: D7 retention adjusted for the {PRE_PERIOD_DAYS} days before \
                 the experiment {:+.1} ± {:.1} points (active days then: {arm} {:.2}, control \
                 {:.2})",
                100.0 * adjusted.lift,
                100.0 * adjusted.half_width,
                adjusted.pre_days.0,
                adjusted.pre_days.1,
            )?;
        }
        Ok(())
    }
}

/// The [`Report`] of decisions in `[from, to)` observed by `observed`.
pub async fn report(
    pool: &PgPool,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    observed: DateTime<Utc>,
) -> Result<Report, sqlx::Error> {
    let arms = arms(pool, from, to, observed).await?;
    let adjusted = match compared(&arms) {
        Some((model, _)) => adjusted_lift(pool, (from, to, observed), &model.arm).await?,
        None => None,
    };
    Ok(Report { arms, adjusted })
}

/// `model_arm` minus control's D7 lift, adjusted for the users' activity in the
/// [`PRE_PERIOD_DAYS`] before the experiment started; `None` before any experiment.
async fn adjusted_lift(
    pool: &PgPool,
    window: (DateTime<Utc>, DateTime<Utc>, DateTime<Utc>),
    model_arm: &str,
) -> Result<Option<AdjustedLift>, sqlx::Error> {
    let Some(start) = experiment_start(pool).await? else {
        return Ok(None);
    };
    let pre = (start - TimeDelta::days(PRE_PERIOD_DAYS), start);
    let sums = d7_pre_period(pool, window, pre).await?;
    let of = |name: &str| sums.iter().find(|(arm, _)| arm == name).map(|(_, s)| s);
    Ok(of(model_arm)
        .zip(of("control"))
        .and_then(|(model, control)| adjusted_d7_lift(model, control)))
}

/// Canary minus control, each as an estimate with its 95 % half-width.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Lifts {
    /// D7 retention (a share).
    pub d7: Option<(f64, f64)>,
    /// D7 retention adjusted for the pre-period ([`AdjustedLift`]).
    pub d7_adjusted: Option<(f64, f64)>,
    /// ROI (a share).
    pub roi: Option<(f64, f64)>,
    /// Opt-out rate (a share).
    pub opt_out: Option<(f64, f64)>,
    /// Sends per user.
    pub sends_per_user: Option<(f64, f64)>,
}

impl Lifts {
    /// The model arm minus control in `arms` ([`compared`]; the D7 lift not adjusted);
    /// `None` without both.
    pub fn of(arms: &[ArmKpis]) -> Option<Self> {
        compared(arms).map(|(model, control)| Self::between(model, control))
    }

    /// `c` minus `k` (the D7 lift not adjusted).
    fn between(c: &ArmKpis, k: &ArmKpis) -> Self {
        Self {
            d7: difference((c.retained_d7, c.d7_users), (k.retained_d7, k.d7_users)),
            d7_adjusted: None,
            roi: difference(
                (c.actioned, c.measured_sends),
                (k.actioned, k.measured_sends),
            ),
            opt_out: difference((c.opted_out, c.users), (k.opted_out, k.users)),
            sends_per_user: sends_per_user(c)
                .zip(sends_per_user(k))
                .map(|((a, ha), (b, hb))| (a - b, ha.hypot(hb))),
        }
    }

    /// The mean of independent runs' lifts (seeds), each with the half-width of a mean
    /// of independent estimates, √(Σ h²) / n; an estimate missing in any run is missing.
    pub fn mean(runs: &[Lifts]) -> Option<Self> {
        if runs.is_empty() {
            return None;
        }
        let mean = |get: fn(&Lifts) -> Option<(f64, f64)>| {
            let estimates: Option<Vec<(f64, f64)>> = runs.iter().map(get).collect();
            let estimates = estimates?;
            let n = estimates.len() as f64;
            let value = estimates.iter().map(|e| e.0).sum::<f64>() / n;
            let half = estimates.iter().map(|e| e.1 * e.1).sum::<f64>().sqrt() / n;
            Some((value, half))
        };
        Some(Self {
            d7: mean(|l| l.d7),
            d7_adjusted: mean(|l| l.d7_adjusted),
            roi: mean(|l| l.roi),
            opt_out: mean(|l| l.opt_out),
            sends_per_user: mean(|l| l.sends_per_user),
        })
    }
}

/// A lift in points of a share, with its half-width, or `n/a`.
fn points(estimate: Option<(f64, f64)>) -> String {
    estimate.map_or_else(
        || "n/a".into(),
        |(v, h)| format!("{:+.1} ± {:.1} points", 100.0 * v, 100.0 * h),
    )
}

/// A lift in sends per user, with its half-width, or `n/a`.
fn sends(estimate: Option<(f64, f64)>) -> String {
    estimate.map_or_else(|| "n/a".into(), |(v, h)| format!("{v:+.2} ± {h:.2}"))
}

/// The model arm `arm` minus control in runs with several seeds, one line a seed, then
/// their mean and whether the mean shows the rollout's goal ([`goal_verdict`]).
pub fn seeds_table(arm: &str, runs: &[(u64, Lifts)]) -> String {
    let row = |name: &str, l: &Lifts| {
        format!(
            "{name:<6} {:>21} {:>21} {:>21} {:>15}\n",
            points(l.d7),
            points(l.d7_adjusted),
            points(l.roi),
            sends(l.sends_per_user),
        )
    };
    let mut out = format!(
        "{:<6} {:>21} {:>21} {:>21} {:>15}\n",
        "seed", "D7 retention", "D7, adjusted", "ROI", "sends/user"
    );
    for (seed, lifts) in runs {
        out.push_str(&row(&seed.to_string(), lifts));
    }
    let all: Vec<Lifts> = runs.iter().map(|(_, l)| *l).collect();
    if let Some(mean) = Lifts::mean(&all) {
        out.push_str(&row("mean", &mean));
        if let Some((d7, spu)) = mean.d7.zip(mean.sends_per_user) {
            out.push_str(&goal_verdict(arm, d7, spu));
        }
    }
    out
}

/// A share as a percentage with its 95 % Wilson interval, or `n/a` without trials.
pub fn percent_with_interval(successes: u64, trials: u64) -> String {
    match (share(successes, trials), wilson(successes, trials)) {
        (Some(p), Some((lo, hi))) => format!(
            "{:5.1}% [{:4.1}, {:4.1}]",
            100.0 * p,
            100.0 * lo,
            100.0 * hi
        ),
        _ => "n/a".into(),
    }
}

/// Each arm's crash-free users (with 95 % intervals) and the model arm minus control
/// ([`compared`]), when any user crashed; else a line saying none did (or crashes are not reported).
fn crash_free_lines(arms: &[ArmKpis]) -> String {
    let crash_free = |a: &ArmKpis| (a.users - a.crashed.min(a.users), a.users);
    if !arms.iter().any(|a| a.crashed > 0) {
        return if arms.iter().any(|a| a.users > 0) {
            "crash-free users: no crash (a fatal `$exception`) reported after these users' \
             first decisions\n"
                .into()
        } else {
            String::new()
        };
    }
    let per_arm: Vec<String> = arms
        .iter()
        .map(|a| {
            let (free, users) = crash_free(a);
            format!(
                "{} {} of {users}",
                a.arm,
                percent_with_interval(free, users).trim_start()
            )
        })
        .collect();
    let lift = compared(arms)
        .and_then(|(c, k)| Some((&c.arm, difference(crash_free(c), crash_free(k))?)))
        .map_or_else(String::new, |(arm, d)| {
            format!("; {arm} − control {}", points(Some(d)))
        });
    format!("crash-free users: {}{lift}\n", per_arm.join(", "))
}

/// The rollout's goal: the canary's D7 retention at least this far above control's (a
/// share), at no more sends per user.
pub const GOAL_D7_LIFT: f64 = 0.03;

/// Whether the model arm `arm` − control shows the rollout's goal met, given its D7
/// retention and its sends per user, each with its 95 % half-width. Met only when both
/// hold at 95 %: the D7 lift's interval above [`GOAL_D7_LIFT`] and the sends' below zero.
/// Otherwise the line says where each part stands.
pub fn goal_verdict(arm: &str, d7: (f64, f64), sends_per_user: (f64, f64)) -> String {
    let goal = 100.0 * GOAL_D7_LIFT;
    let (lift, half) = d7;
    let (d7_shown, d7_text) = if lift - half >= GOAL_D7_LIFT {
        (true, format!("D7 lift above +{goal:.0} points"))
    } else if lift >= GOAL_D7_LIFT {
        (
            false,
            format!("D7 lift above +{goal:.0} points at its estimate, not beyond its interval"),
        )
    } else {
        (
            false,
            format!("D7 lift below +{goal:.0} points at its estimate"),
        )
    };
    let (sends, half) = sends_per_user;
    let (sends_shown, sends_text) = if sends + half <= 0.0 {
        (true, "no more sends/user than control")
    } else if sends <= 0.0 {
        (
            false,
            "no more sends/user than control at its estimate, not beyond its interval",
        )
    } else {
        (false, "more sends/user than control at its estimate")
    };
    let verdict = if d7_shown && sends_shown {
        "met"
    } else {
        "not shown"
    };
    format!(
        "goal ({arm} D7 ≥ control + {goal:.0} points at no more sends/user): {verdict} at 95 % — \
         {d7_text}; {sends_text}\n"
    )
}

/// A per-arm table of the KPIs with 95 % intervals, the model arm minus control
/// ([`compared`]) and whether it shows the rollout's goal ([`goal_verdict`]) once D7 is known.
pub fn table(arms: &[ArmKpis]) -> String {
    let mut out = format!(
        "{:<8} {:>6} {:>16} {:>21} {:>21} {:>21} {:>21}\n",
        "arm", "users", "sends/user", "ROI (24 h)", "open rate", "opt-out", "D7 retention"
    );
    for a in arms {
        let spu =
            sends_per_user(a).map_or_else(|| "n/a".into(), |(v, h)| format!("{v:.2} ± {h:.2}"));
        out.push_str(&format!(
            "{:<8} {:>6} {:>16} {:>21} {:>21} {:>21} {:>21}\n",
            a.arm,
            a.users,
            spu,
            percent_with_interval(a.actioned, a.measured_sends),
            percent_with_interval(a.opened, a.measured_sends),
            percent_with_interval(a.opted_out, a.users),
            percent_with_interval(a.retained_d7, a.d7_users),
        ));
    }
    if let Some((model, control)) = compared(arms) {
        let lifts = Lifts::between(model, control);
        out.push_str(&format!(
            "{} − control: D7 retention {}, ROI {}, opt-out {}, sends/user {}\n",
            model.arm,
            points(lifts.d7),
            points(lifts.roi),
            points(lifts.opt_out),
            sends(lifts.sends_per_user),
        ));
        if let Some((d7, spu)) = lifts.d7.zip(lifts.sends_per_user) {
            out.push_str(&goal_verdict(&model.arm, d7, spu));
        }
    }
    out.push_str(&crash_free_lines(arms));
    if arms.iter().any(|a| a.users > 0) && arms.iter().all(|a| a.d7_users == 0) {
        out.push_str(&format!(
            "D7 retention n/a: a user's is known {} days after their first decision in the \
             window, and no user here has reached that yet\n",
            D7_KNOWN_AFTER.num_days()
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// An arm of 1,000 users with no D7 known and no crash.
    fn thousand_users(arm: &str) -> ArmKpis {
        ArmKpis {
            arm: arm.into(),
            users: 1_000,
            decisions: 3_000,
            sends: 2_000,
            measured_sends: 2_000,
            actioned: 500,
            opened: 400,
            opted_out: 10,
            d7_users: 0,
            retained_d7: 0,
            crashed: 0,
        }
    }

    #[test]
    fn crash_free_users_are_shown_by_arm_once_anyone_crashed() {
        let arm = |name: &str, crashed| ArmKpis {
            crashed,
            ..thousand_users(name)
        };
        let lines = crash_free_lines(&[arm("canary", 20), arm("control", 5)]);
        assert!(
            lines.starts_with("crash-free users: canary 98.0% [96.9, 98.7] of 1000, control 99.5%"),
            "{lines}"
        );
        assert!(
            lines.contains("; canary − control -1.5 ± 1.0 points"),
            "{lines}"
        );
        assert!(crash_free_lines(&[]).is_empty());
    }

    #[test]
    fn the_goal_is_met_only_when_both_parts_hold_at_95_percent() {
        let fewer = (-11.15, 0.27);
        let met = goal_verdict("canary", (0.05, 0.015), fewer);
        assert!(met.contains(": met at 95 %"), "{met}");
        // The demo's seed 7: +2.8 ± 3.6 points.
        let short = goal_verdict("canary", (0.028, 0.036), fewer);
        assert!(short.contains(": not shown at 95 %"), "{short}");
        assert!(
            short.contains("D7 lift below +3 points at its estimate"),
            "{short}"
        );
        assert!(
            short.contains("; no more sends/user than control\n"),
            "{short}"
        );
        let noisy = goal_verdict("canary", (0.04, 0.02), fewer);
        assert!(noisy.contains("not shown"), "{noisy}");
        assert!(noisy.contains("not beyond its interval"), "{noisy}");
        // Retention bought with more sends is not the goal.
        let more = goal_verdict("canary", (0.05, 0.015), (0.5, 0.2));
        assert!(more.contains("not shown"), "{more}");
        assert!(
            more.contains("more sends/user than control at its estimate"),
            "{more}"
        );
        let within = goal_verdict("canary", (0.05, 0.015), (-0.1, 0.2));
        assert!(within.contains("not shown"), "{within}");
    }

    #[test]
    fn lifts_are_canary_minus_control_with_their_half_widths() {
        let canary = ArmKpis {
            d7_users: 400,
            retained_d7: 100,
            ..thousand_users("canary")
        };
        let control = ArmKpis {
            sends: 3_000,
            measured_sends: 3_000,
            actioned: 300,
            opted_out: 30,
            d7_users: 400,
            retained_d7: 80,
            ..thousand_users("control")
        };
        let lifts = Lifts::of(&[canary.clone(), control.clone()]).unwrap();
        let close = |got: Option<(f64, f64)>, want: (f64, f64)| {
            let got = got.unwrap();
            assert!(
                (got.0 - want.0).abs() < 1e-12 && (got.1 - want.1).abs() < 1e-12,
                "{got:?} ≠ {want:?}"
            );
        };
        // D7 25 % against 20 % of 400 each.
        let se = (0.25 * 0.75 / 400.0 + 0.2 * 0.8 / 400.0f64).sqrt();
        close(lifts.d7, (0.05, 1.96 * se));
        // ROI 25 % of 2,000 sends against 10 % of 3,000.
        let se = (0.25 * 0.75 / 2_000.0 + 0.1 * 0.9 / 3_000.0f64).sqrt();
        close(lifts.roi, (0.15, 1.96 * se));
        // Sends per user 2 against 3, Poisson: half-widths 1.96·√sends / users.
        let (h_canary, h_control) = (1.96 * 2_000f64.sqrt(), 1.96 * 3_000f64.sqrt());
        close(
            lifts.sends_per_user,
            (-1.0, h_canary.hypot(h_control) / 1_000.0),
        );
        close(
            lifts.opt_out,
            (
                -0.02,
                1.96 * (0.01 * 0.99 / 1_000.0 + 0.03 * 0.97 / 1_000.0f64).sqrt(),
            ),
        );
        assert_eq!(lifts.d7_adjusted, None);
        assert_eq!(Lifts::of(&[canary]), None, "no control, no lift");
    }

    #[test]
    fn the_mean_over_seeds_has_the_half_width_of_a_mean_of_independent_estimates() {
        let run = |d7, spu| Lifts {
            d7: Some(d7),
            sends_per_user: spu,
            ..Lifts::default()
        };
        let mean = Lifts::mean(&[
            run((0.02, 0.03), Some((-1.0, 0.2))),
            run((0.04, 0.04), None),
        ])
        .unwrap();
        let (value, half) = mean.d7.unwrap();
        assert!((value - 0.03).abs() < 1e-12, "{value}");
        // √(0.03² + 0.04²) / 2
        assert!((half - 0.025).abs() < 1e-12, "{half}");
        assert_eq!(
            mean.sends_per_user, None,
            "missing in one seed, missing in the mean"
        );
        assert_eq!(mean.roi, None);
        assert_eq!(Lifts::mean(&[]), None);
    }

    #[test]
    fn the_seeds_table_has_a_line_a_seed_then_their_mean_and_its_verdict() {
        let run = |d7| Lifts {
            d7: Some(d7),
            d7_adjusted: Some((d7.0 + 0.01, d7.1)),
            roi: Some((0.2, 0.02)),
            opt_out: Some((-0.1, 0.02)),
            sends_per_user: Some((-11.0, 0.3)),
        };
        let short = seeds_table(
            "canary",
            &[(7, run((0.028, 0.036))), (8, run((0.008, 0.035)))],
        );
        let lines: Vec<&str> = short.lines().collect();
        assert_eq!(lines.len(), 5, "{short}");
        assert!(lines[0].starts_with("seed"), "{short}");
        assert!(
            lines[1].starts_with("7 ") && lines[1].contains("+2.8 ± 3.6 points"),
            "{short}"
        );
        assert!(lines[1].contains("+3.8 ± 3.6 points"), "adjusted: {short}");
        assert!(
            lines[2].starts_with("8 ") && lines[2].contains("+0.8 ± 3.5 points"),
            "{short}"
        );
        // Mean +1.8, half-width √(3.6² + 3.5²) / 2 = 2.5.
        assert!(
            lines[3].starts_with("mean") && lines[3].contains("+1.8 ± 2.5 points"),
            "{short}"
        );
        assert!(lines[3].contains("-11.00 ± 0.21"), "{short}");
        assert!(lines[4].contains("not shown at 95 %"), "{short}");
        assert!(lines[4].starts_with("goal (canary D7"), "{short}");
        let met = seeds_table("full", &[(7, run((0.06, 0.01))), (8, run((0.05, 0.01)))]);
        assert!(met.contains("goal (full D7"), "{met}");
        assert!(
            met.lines().last().unwrap().contains(": met at 95 %"),
            "{met}"
        );
    }

    #[test]
    fn a_full_rollout_is_compared_with_its_holdout_and_a_canary_first() {
        let d7_known = |arm| ArmKpis {
            d7_users: 1_000,
            retained_d7: 200,
            ..thousand_users(arm)
        };
        let mut full = d7_known("full");
        full.opted_out = 30;
        let arms = [full, d7_known("control")];
        assert_eq!(
            compared(&arms).map(|(m, k)| (m.arm.as_str(), k.arm.as_str())),
            Some(("full", "control"))
        );
        let text = table(&arms);
        assert!(
            text.contains(
                "full − control: D7 retention +0.0 ± 3.5 points, ROI +0.0 ± 2.7 points, opt-out +2.0 ± 1.2 points"
            ),
            "{text}"
        );
        assert!(text.contains("goal (full D7 ≥ control"), "{text}");
        let with_canary = [thousand_users("canary"), arms[0].clone(), arms[1].clone()];
        assert_eq!(
            compared(&with_canary).map(|(m, _)| m.arm.as_str()),
            Some("canary")
        );
        assert_eq!(compared(&arms[..1]), None);
    }

    #[test]
    fn a_table_gives_the_goals_verdict_once_d7_is_known_in_both_arms() {
        let arm = |name: &str, d7_users, retained_d7| ArmKpis {
            d7_users,
            retained_d7,
            ..thousand_users(name)
        };
        let known = table(&[arm("canary", 1_000, 300), arm("control", 1_000, 200)]);
        assert!(known.contains("goal (canary D7"), "{known}");
        // No crash reported: a line says so rather than a column of 100 %.
        assert!(known.contains("crash-free users: no crash"), "{known}");
        let unknown = table(&[arm("canary", 0, 0), arm("control", 0, 0)]);
        assert!(!unknown.contains("goal"), "{unknown}");
    }

    /// The sums of users given as (x, y).
    fn sums(users: &[(u64, bool)]) -> D7Sums {
        users.iter().fold(D7Sums::default(), |s, &(x, y)| D7Sums {
            users: s.users + 1,
            retained: s.retained + u64::from(y),
            pre_days: s.pre_days + x,
            pre_days_sq: s.pre_days_sq + x * x,
            pre_days_retained: s.pre_days_retained + x * u64::from(y),
        })
    }

    /// The adjusted lift user by user: θ from the pooled users' covariance, then the
    /// difference of the arms' means of y − θx and its half-width.
    fn explicit(canary: &[(u64, bool)], control: &[(u64, bool)]) -> (f64, f64) {
        let point = |&(x, y): &(u64, bool)| (x as f64, f64::from(u8::from(y)));
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
        let pooled: Vec<(f64, f64)> = canary.iter().chain(control).map(point).collect();
        let (xs, ys): (Vec<f64>, Vec<f64>) = pooled.iter().copied().unzip();
        let (mx, my) = (mean(&xs), mean(&ys));
        let cov = mean(
            &pooled
                .iter()
                .map(|(x, y)| (x - mx) * (y - my))
                .collect::<Vec<_>>(),
        );
        let var = mean(&xs.iter().map(|x| (x - mx) * (x - mx)).collect::<Vec<_>>());
        let theta = if var > 1e-12 { cov / var } else { 0.0 };
        let arm = |users: &[(u64, bool)]| {
            let adjusted: Vec<f64> = users
                .iter()
                .map(point)
                .map(|(x, y)| y - theta * x)
                .collect();
            let m = mean(&adjusted);
            let v = mean(
                &adjusted
                    .iter()
                    .map(|a| (a - m) * (a - m))
                    .collect::<Vec<_>>(),
            );
            (m, v / adjusted.len() as f64)
        };
        let ((a, va), (b, vb)) = (arm(canary), arm(control));
        (a - b, 1.96 * (va + vb).sqrt())
    }

    proptest! {
        /// n seeds that agree give their value, known √n times better.
        #[test]
        fn the_mean_of_agreeing_seeds_narrows_by_the_root_of_their_number(
            value in -0.5f64..0.5,
            half in 0.001f64..0.1,
            n in 1usize..20,
        ) {
            let run = Lifts { roi: Some((value, half)), ..Lifts::default() };
            let (mean, mean_half) = Lifts::mean(&vec![run; n]).unwrap().roi.unwrap();
            prop_assert!((mean - value).abs() < 1e-12);
            prop_assert!((mean_half - half / (n as f64).sqrt()).abs() < 1e-12);
        }

        #[test]
        fn the_adjusted_lift_from_sums_equals_the_user_by_user_adjustment(
            canary in prop::collection::vec((0u64..15, any::<bool>()), 1..60),
            control in prop::collection::vec((0u64..15, any::<bool>()), 1..60),
        ) {
            let adjusted = adjusted_d7_lift(&sums(&canary), &sums(&control)).unwrap();
            let (lift, half_width) = explicit(&canary, &control);
            prop_assert!((adjusted.lift - lift).abs() < 1e-9, "{adjusted:?} {lift}");
            prop_assert!((adjusted.half_width - half_width).abs() < 1e-9, "{adjusted:?} {half_width}");
        }

        #[test]
        fn shifting_every_users_pre_period_days_leaves_the_adjusted_lift_unchanged(
            canary in prop::collection::vec((0u64..15, any::<bool>()), 1..60),
            control in prop::collection::vec((0u64..15, any::<bool>()), 1..60),
            shift in 1u64..10,
        ) {
            let shifted = |users: &[(u64, bool)]| {
                users.iter().map(|&(x, y)| (x + shift, y)).collect::<Vec<_>>()
            };
            let a = adjusted_d7_lift(&sums(&canary), &sums(&control)).unwrap();
            let b = adjusted_d7_lift(&sums(&shifted(&canary)), &sums(&shifted(&control))).unwrap();
            prop_assert!((a.lift - b.lift).abs() < 1e-9 && (a.half_width - b.half_width).abs() < 1e-9);
        }
    }

    #[test]
    fn a_covariate_that_explains_retention_takes_the_arms_prior_difference_out_of_the_lift() {
        // Retained exactly when active before; the canary had more active users before.
        let canary = [(3, true), (3, true), (3, true), (0, false)];
        let control = [(3, true), (0, false), (0, false), (0, false)];
        let plain = difference((3, 4), (1, 4)).unwrap();
        assert!((plain.0 - 0.5).abs() < 1e-12);
        let adjusted = adjusted_d7_lift(&sums(&canary), &sums(&control)).unwrap();
        assert!(adjusted.lift.abs() < 1e-12, "{adjusted:?}");
        assert!(adjusted.half_width.abs() < 1e-12, "{adjusted:?}");
        assert_eq!(adjusted.pre_days, (2.25, 0.75));
    }

    #[test]
    fn with_the_same_pre_period_for_everyone_the_adjusted_lift_is_the_plain_difference() {
        let canary = [(5, true), (5, true), (5, false)];
        let control = [(5, true), (5, false), (5, false), (5, false)];
        let adjusted = adjusted_d7_lift(&sums(&canary), &sums(&control)).unwrap();
        let (lift, half_width) = difference((2, 3), (1, 4)).unwrap();
        assert!((adjusted.lift - lift).abs() < 1e-12);
        assert!((adjusted.half_width - half_width).abs() < 1e-12);
        assert_eq!(adjusted_d7_lift(&sums(&canary), &D7Sums::default()), None);
    }

    #[test]
    fn a_range_is_cut_into_windows_of_the_step_the_last_one_shorter() {
        let day = |d: u32| {
            chrono::NaiveDate::from_ymd_opt(2026, 3, d)
                .unwrap()
                .and_time(chrono::NaiveTime::MIN)
                .and_utc()
        };
        assert_eq!(windows(day(1), day(8), None), vec![(day(1), day(8))]);
        assert_eq!(
            windows(day(1), day(8), Some(chrono::TimeDelta::days(3))),
            vec![(day(1), day(4)), (day(4), day(7)), (day(7), day(8))]
        );
        assert!(windows(day(8), day(1), None).is_empty());
        assert!(windows(day(1), day(1), Some(chrono::TimeDelta::days(1))).is_empty());
    }

    #[test]
    fn the_d7_cohort_is_the_window_that_ended_eight_days_ago_and_starts_no_earlier_than_since() {
        let at: DateTime<Utc> = "2026-03-30T00:00:00Z".parse().unwrap();
        let day = |d: i64| at - TimeDelta::days(d);
        let week = TimeDelta::days(7);
        let span = |from, to| Some(Span { from, to });
        assert_eq!(d7_cohort(at, week, None), span(day(15), day(8)));
        // A rollback 10 days ago: only the users first decided after it count.
        assert_eq!(d7_cohort(at, week, Some(day(10))), span(day(10), day(8)));
        // Since a rollback 5 days ago, nobody's 7th day has been observed.
        assert_eq!(d7_cohort(at, week, Some(day(5))), None);
        assert_eq!(d7_cohort(at, week, Some(day(8))), None);
        assert_eq!(d7_cohort(at, week, Some(day(30))), span(day(15), day(8)));
    }

    proptest! {
        /// Every user of the cohort has had their 7th day observed by `at`, and each was
        /// first decided within the trailing window's length and not before `since`.
        #[test]
        fn every_user_of_the_d7_cohort_has_a_known_d7(
            window_hours in 1i64..1_000, since_hours in proptest::option::of(0i64..2_000),
        ) {
            let at: DateTime<Utc> = "2026-03-30T00:00:00Z".parse().unwrap();
            let window = TimeDelta::hours(window_hours);
            let since = since_hours.map(|h| at - TimeDelta::hours(h));
            match d7_cohort(at, window, since) {
                Some(Span { from, to }) => {
                    prop_assert!(from < to && to + D7_KNOWN_AFTER <= at);
                    prop_assert!(to - from <= window);
                    prop_assert!(since.is_none_or(|s| from >= s));
                }
                None => prop_assert!(since.is_some_and(|s| s >= at - D7_KNOWN_AFTER)),
            }
        }
    }

    #[test]
    fn a_table_without_any_known_d7_says_why() {
        let arm = |name: &str, d7_users| ArmKpis {
            arm: name.into(),
            users: 100,
            decisions: 300,
            sends: 100,
            measured_sends: 100,
            actioned: 30,
            opened: 20,
            opted_out: 1,
            d7_users,
            retained_d7: d7_users / 5,
            crashed: 0,
        };
        let why = "D7 retention n/a: a user's is known 8 days after";
        let unknown = table(&[arm("canary", 0), arm("control", 0)]);
        assert!(unknown.contains(why), "{unknown}");
        let known = table(&[arm("canary", 0), arm("control", 50)]);
        assert!(!known.contains(why), "{known}");
        assert!(!table(&[]).contains(why));
    }

    #[test]
    fn the_wilson_interval_holds_the_share_and_narrows_with_trials() {
        let (lo, hi) = wilson(30, 100).unwrap();
        assert!(lo < 0.30 && 0.30 < hi);
        let (lo2, hi2) = wilson(3_000, 10_000).unwrap();
        assert!(hi2 - lo2 < (hi - lo) / 5.0);
        assert_eq!(wilson(0, 0), None);
        let (lo, hi) = wilson(0, 50).unwrap();
        assert!(lo.abs() < 1e-12 && hi > 0.0, "{lo} {hi}");
    }

    #[test]
    fn the_difference_of_equal_shares_is_zero_within_its_interval() {
        let (d, half) = difference((300, 1_000), (600, 2_000)).unwrap();
        assert!(d.abs() < 1e-12 && half > 0.0);
        let (d, _) = difference((400, 1_000), (300, 1_000)).unwrap();
        assert!((d - 0.1).abs() < 1e-12);
    }
}
