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
