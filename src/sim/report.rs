//! The oracle report: for each label, the base rate and the AUC of the simulator's true
//! probabilities on the examples of a window. The oracle AUC is the ceiling any model of
//! that label can reach on the same examples; a model close to it has found the signal.
//! Where the truth also depends on a draw no event records (whether a silent user
//! lapsed), the oracle weighs it by its posterior given the logs, and the AUC given the
//! hidden state is shown beside it as a looser ceiling.

use std::fmt;

use chrono::NaiveDate;
use sqlx::PgPool;

use crate::evaluation::roc_auc;

/// The oracle figures of one label.
#[derive(Debug, Clone, PartialEq)]
pub struct LabelOracle {
    /// Label name.
    pub label: &'static str,
    /// Examples with a known outcome in the window.
    pub examples: usize,
    /// Share of positives.
    pub base_rate: f64,
    /// Mean true probability (close to the base rate when the truth is calibrated).
    pub mean_truth: f64,
    /// AUC of the true probability given what the data records; `None` with a single class.
    pub auc: Option<f64>,
    /// AUC of the true probability given hidden state too, for a label whose truth
    /// depends on state no event records.
    pub hidden_state_auc: Option<f64>,
}

impl LabelOracle {
    fn from_examples(label: &'static str, examples: &[(f64, bool)]) -> Self {
        let n = examples.len().max(1) as f64;
        Self {
            label,
            examples: examples.len(),
            base_rate: examples.iter().filter(|e| e.1).count() as f64 / n,
            mean_truth: examples.iter().map(|e| e.0).sum::<f64>() / n,
            auc: roc_auc(examples),
            hidden_state_auc: None,
        }
    }
}

/// Oracle figures of every label over a window of example dates.
#[derive(Debug, Clone, PartialEq)]
pub struct OracleReport {
    /// First day included, if bounded.
    pub from: Option<NaiveDate>,
    /// First day excluded, if bounded.
    pub to: Option<NaiveDate>,
    /// One entry per label.
    pub labels: Vec<LabelOracle>,
}

impl OracleReport {
    /// The entry of `label`.
    pub fn label(&self, label: &str) -> Option<&LabelOracle> {
        self.labels.iter().find(|l| l.label == label)
    }
}

/// Examples of one label: (true probability, outcome), for example dates in [from, to).
async fn examples(
    pool: &PgPool,
    sql: &'static str,
    from: Option<NaiveDate>,
    to: Option<NaiveDate>,
) -> Result<Vec<(f64, bool)>, sqlx::Error> {
    let rows: Vec<(f32, bool)> = sqlx::query_as(sql)
        .bind(from)
        .bind(to)
        .fetch_all(pool)
        .await?;
    Ok(rows.into_iter().map(|(p, y)| (f64::from(p), y)).collect())
}

/// The notification examples twice, with the truth given the logs and with the truth
/// given the hidden lapse too, for sent dates in [from, to).
async fn notification_examples(
    pool: &PgPool,
    from: Option<NaiveDate>,
    to: Option<NaiveDate>,
) -> Result<(Vec<(f64, bool)>, Vec<(f64, bool)>), sqlx::Error> {
    let rows: Vec<(f32, f32, bool)> = sqlx::query_as(
        "SELECT p_return_24h_attainable, p_return_24h, returned_24h FROM sim.notification_truth
         WHERE returned_24h IS NOT NULL AND p_return_24h_attainable IS NOT NULL AND p_return_24h IS NOT NULL
           AND ($1::date IS NULL OR sent_at >= $1::date) AND ($2::date IS NULL OR sent_at < $2::date)",
    )
    .bind(from)
    .bind(to)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(given_logs, given_hidden, y)| {
            ((f64::from(given_logs), y), (f64::from(given_hidden), y))
        })
        .unzip())
}

/// Computes the oracle report over example dates in [`from`, `to`).
pub async fn oracle_report(
    pool: &PgPool,
    from: Option<NaiveDate>,
    to: Option<NaiveDate>,
) -> Result<OracleReport, sqlx::Error> {
    let notif = notification_examples(pool, from, to);
    let churn = examples(
        pool,
        "SELECT p_churn_14d, churned_14d FROM sim.churn_truth
         WHERE churned_14d IS NOT NULL AND ($1::date IS NULL OR day >= $1) AND ($2::date IS NULL OR day < $2)",
        from,
        to,
    );
    let trial = examples(
        pool,
        "SELECT p_trial, trial_24h FROM sim.paywall_truth
         WHERE ($1::date IS NULL OR viewed_at >= $1::date) AND ($2::date IS NULL OR viewed_at < $2::date)",
        from,
        to,
    );
    let bounce = examples(
        pool,
        "SELECT p_bounce, bounced_24h FROM sim.paywall_truth
         WHERE bounced_24h IS NOT NULL AND p_bounce IS NOT NULL
           AND ($1::date IS NULL OR viewed_at >= $1::date) AND ($2::date IS NULL OR viewed_at < $2::date)",
        from,
        to,
    );
    let ((notif, notif_hidden), churn, trial, bounce) =
        tokio::try_join!(notif, churn, trial, bounce)?;
    Ok(OracleReport {
        from,
        to,
        labels: vec![
            LabelOracle {
                hidden_state_auc: roc_auc(&notif_hidden),
                ..LabelOracle::from_examples("returned_24h_after_notif", &notif)
            },
            LabelOracle::from_examples("churn_14d", &churn),
            LabelOracle::from_examples("paywall_trial", &trial),
            LabelOracle::from_examples("paywall_bounce", &bounce),
        ],
    })
}

impl fmt::Display for OracleReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let bound = |d: Option<NaiveDate>| d.map_or_else(|| "…".to_owned(), |d| d.to_string());
        writeln!(
            f,
            "oracle (true probabilities given what the data records), examples dated {} to {}:",
            bound(self.from),
            bound(self.to)
        )?;
        writeln!(
            f,
            "  {:<26} {:>10} {:>10} {:>11} {:>11} {:>18}",
            "label", "examples", "base rate", "mean truth", "oracle AUC", "hidden-state AUC"
        )?;
        let auc = |a: Option<f64>| a.map_or_else(|| "-".to_owned(), |a| format!("{a:.3}"));
        // A window without examples has no rates to show.
        let pct = |examples: usize, share: f64| {
            if examples == 0 {
                "-".to_owned()
            } else {
                format!("{:.1}%", 100.0 * share)
            }
        };
        for l in &self.labels {
            writeln!(
                f,
                "  {:<26} {:>10} {:>10} {:>11} {:>11} {:>18}",
                l.label,
                l.examples,
                pct(l.examples, l.base_rate),
                pct(l.examples, l.mean_truth),
                auc(l.auc),
                auc(l.hidden_state_auc),
            )?;
        }
        Ok(())
    }
}
