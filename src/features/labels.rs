//! The label views of `notebooks-sql/migrations/0005_labels.sql`, summarised.

use std::fmt;

use sqlx::PgPool;

/// Examples and positive rate of one label (complete windows only).
#[derive(Debug, Clone, PartialEq)]
pub struct LabelSummary {
    /// Label name.
    pub label: &'static str,
    /// Examples whose window is complete.
    pub examples: i64,
    /// Share of positives among them.
    pub positive_rate: f64,
}

/// Every label's summary.
#[derive(Debug, Clone, PartialEq)]
pub struct LabelReport {
    /// One entry per label.
    pub labels: Vec<LabelSummary>,
}

/// Counts the complete examples of each label view and their positive rate.
pub async fn label_report(pool: &PgPool) -> Result<LabelReport, sqlx::Error> {
    let (n1, p1, n2, p2, n3, p3, p4): (i64, f64, i64, f64, i64, f64, f64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM gold.label_returned_24h_after_notif WHERE complete),
                (SELECT coalesce(avg(returned_24h_after_notif::int), 0)::float8
                 FROM gold.label_returned_24h_after_notif WHERE complete),
                (SELECT count(*) FROM gold.label_churn_14d WHERE complete),
                (SELECT coalesce(avg(churn_14d::int), 0)::float8 FROM gold.label_churn_14d WHERE complete),
                (SELECT count(*) FROM gold.label_paywall WHERE complete),
                (SELECT coalesce(avg(paywall_trial::int), 0)::float8 FROM gold.label_paywall WHERE complete),
                (SELECT coalesce(avg(paywall_bounce::int), 0)::float8 FROM gold.label_paywall WHERE complete)",
    )
    .fetch_one(pool)
    .await?;
    let summary = |label, examples, positive_rate| LabelSummary {
        label,
        examples,
        positive_rate,
    };
    Ok(LabelReport {
        labels: vec![
            summary("returned_24h_after_notif", n1, p1),
            summary("churn_14d", n2, p2),
            summary("paywall_trial", n3, p3),
            summary("paywall_bounce", n3, p4),
        ],
    })
}

impl fmt::Display for LabelReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "labels (gold views, complete windows):")?;
        writeln!(f, "  {:<26} {:>10} {:>10}", "label", "examples", "positive")?;
        for l in &self.labels {
            writeln!(
                f,
                "  {:<26} {:>10} {:>9.1}%",
                l.label,
                l.examples,
                100.0 * l.positive_rate
            )?;
        }
        Ok(())
    }
}
