//! KPIs per arm from the decision log and silver events, through `kpi.arms` (SQL in
//! `notebooks-sql/migrations/0015_kpis_and_controller.sql`).

use chrono::{DateTime, Utc};
use serde::Serialize;

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
    let count = |n: i64| u64::try_from(n).unwrap_or(0);
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

fn percent_with_interval(successes: u64, trials: u64) -> String {
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

/// A per-arm table of the KPIs with 95 % intervals, and canary minus control.
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
    if let (Some(c), Some(k)) = (find(arms, "canary"), find(arms, "control")) {
        let points = |d: Option<(f64, f64)>| {
            d.map_or_else(
                || "n/a".into(),
                |(v, h)| format!("{:+.1} ± {:.1} points", 100.0 * v, 100.0 * h),
            )
        };
        let spu = match (sends_per_user(c), sends_per_user(k)) {
            (Some((a, ha)), Some((b, hb))) => {
                format!("{:+.2} ± {:.2}", a - b, (ha * ha + hb * hb).sqrt())
            }
            _ => "n/a".into(),
        };
        out.push_str(&format!(
            "canary − control: D7 retention {}, ROI {}, opt-out {}, sends/user {}\n",
            points(difference(
                (c.retained_d7, c.d7_users),
                (k.retained_d7, k.d7_users)
            )),
            points(difference(
                (c.actioned, c.measured_sends),
                (k.actioned, k.measured_sends)
            )),
            points(difference((c.opted_out, c.users), (k.opted_out, k.users))),
            spu,
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

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
