//! `nudge-train kpis`: the decision log's per-arm KPIs and the logged churn scores beside
//! what their users then did.

use chrono::NaiveDate;
use nudge::control::{calibration, kpi};
use sqlx::PgPool;

/// `nudge-train kpis`: a table per window of the decision log.
pub(crate) async fn kpi_report(
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

/// The logged churn scores of the snapshots as of `[from, to)` beside the users' next 14
/// days.
pub(crate) async fn churn_outcomes(
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
