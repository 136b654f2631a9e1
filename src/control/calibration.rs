//! The served churn model beside what happened: every `/v1/churn` score in the decision
//! log whose 14 days have since been observed, set against the user's churn label
//! (`kpi.churn_calibration`), by band and by notification arm. A model whose mean score
//! drifts from the churned share of a group reads that group wrongly, as a model trained
//! before a policy change can read the users the new policy treats.

use chrono::NaiveDate;
use sqlx::PgPool;

use super::kpi::percent_with_interval;

/// Scores of one model version, band and arm whose labels are complete.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct ScoredGroup {
    /// `churn_14d` version.
    pub model_version: String,
    /// The band served.
    pub band: String,
    /// The user's notification arm then (`none` without a decision).
    pub arm: String,
    /// Users (each user and snapshot once).
    pub users: i64,
    /// Their mean score.
    pub mean_score: f64,
    /// How many of them churned.
    pub churned: i64,
}

/// The scores of snapshots as of `[from, to)` whose labels are complete; a bound of
/// `None` does not bound.
pub async fn churn_calibration(
    pool: &PgPool,
    from: Option<NaiveDate>,
    to: Option<NaiveDate>,
) -> Result<Vec<ScoredGroup>, sqlx::Error> {
    sqlx::query_as("SELECT * FROM kpi.churn_calibration($1, $2)")
        .bind(from)
        .bind(to)
        .fetch_all(pool)
        .await
}

/// One row of the report: a band's or an arm's users, over one model version.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// The band's or arm's name.
    pub group: String,
    /// Users.
    pub users: u64,
    /// Their mean score.
    pub mean_score: f64,
    /// How many churned.
    pub churned: u64,
}

/// The groups summed by `key`, in order of first appearance.
fn sum_by(groups: &[&ScoredGroup], key: impl Fn(&ScoredGroup) -> &str) -> Vec<Row> {
    let mut rows: Vec<Row> = Vec::new();
    for g in groups {
        let name = key(g);
        let at = rows
            .iter()
            .position(|r| r.group == name)
            .unwrap_or_else(|| {
                rows.push(Row {
                    group: name.to_owned(),
                    users: 0,
                    mean_score: 0.0,
                    churned: 0,
                });
                rows.len() - 1
            });
        let row = &mut rows[at];
        let users = row.users + g.users as u64;
        // A running user-weighted mean.
        row.mean_score += (g.mean_score - row.mean_score) * g.users as f64 / users as f64;
        row.users = users;
        row.churned += g.churned as u64;
    }
    rows
}

/// The groups of one model version summed by `key` (the band or the arm), in order of
/// mean score, then a row `all`.
pub fn rollup(groups: &[&ScoredGroup], key: impl Fn(&ScoredGroup) -> &str) -> Vec<Row> {
    let mut rows = sum_by(groups, key);
    rows.sort_by(|a, b| a.mean_score.total_cmp(&b.mean_score));
    rows.extend(sum_by(groups, |_| "all"));
    rows
}

/// The report: per model version, its bands and its arms, each with the mean score and
/// the churned share with its 95 % interval.
pub fn table(groups: &[ScoredGroup]) -> String {
    if groups.is_empty() {
        return "  no churn scores with 14 days observed since\n".into();
    }
    let mut versions: Vec<&str> = groups.iter().map(|g| g.model_version.as_str()).collect();
    versions.sort_unstable();
    versions.dedup();
    let mut out = String::new();
    for version in versions {
        let of: Vec<&ScoredGroup> = groups
            .iter()
            .filter(|g| g.model_version == version)
            .collect();
        out.push_str(&format!("  churn_14d {version}\n"));
        for (heading, rows) in [
            ("band", rollup(&of, |g| &g.band)),
            ("arm", rollup(&of, |g| &g.arm)),
        ] {
            out.push_str(&format!(
                "  {heading:<8} {:>6} {:>12} {:>22}\n",
                "users", "mean score", "churned"
            ));
            for r in rows {
                out.push_str(&format!(
                    "  {:<8} {:>6} {:>11.1}% {:>22}\n",
                    r.group,
                    r.users,
                    100.0 * r.mean_score,
                    percent_with_interval(r.churned, r.users)
                ));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(band: &str, arm: &str, users: i64, mean_score: f64, churned: i64) -> ScoredGroup {
        ScoredGroup {
            model_version: "v1".into(),
            band: band.into(),
            arm: arm.into(),
            users,
            mean_score,
            churned,
        }
    }

    #[test]
    fn groups_sum_by_band_and_by_arm_with_user_weighted_means_and_a_total() {
        let groups = [
            group("low", "canary", 30, 0.04, 3),
            group("low", "control", 10, 0.08, 1),
            group("high", "canary", 2, 0.70, 1),
            group("high", "control", 8, 0.60, 6),
        ];
        let of: Vec<&ScoredGroup> = groups.iter().collect();
        let bands = rollup(&of, |g| &g.band);
        let names: Vec<&str> = bands.iter().map(|r| r.group.as_str()).collect();
        assert_eq!(names, ["low", "high", "all"]);
        // low: (30 × 4 % + 10 × 8 %) / 40 = 5 %; high: (2 × 70 % + 8 × 60 %) / 10 = 62 %.
        assert_eq!((bands[0].users, bands[0].churned), (40, 4));
        assert!((bands[0].mean_score - 0.05).abs() < 1e-12);
        assert!((bands[1].mean_score - 0.62).abs() < 1e-12);
        // all: (40 × 5 % + 10 × 62 %) / 50 = 16.4 %.
        assert_eq!((bands[2].users, bands[2].churned), (50, 11));
        assert!((bands[2].mean_score - 0.164).abs() < 1e-12);
        let arms = rollup(&of, |g| &g.arm);
        let sums: Vec<(&str, u64, u64)> = arms
            .iter()
            .map(|r| (r.group.as_str(), r.users, r.churned))
            .collect();
        // canary: (30 × 4 % + 2 × 70 %) / 32 = 8.1 %; control: (10 × 8 % + 8 × 60 %) / 18.
        assert_eq!(
            sums,
            [("canary", 32, 4), ("control", 18, 7), ("all", 50, 11)]
        );
    }

    #[test]
    fn the_table_has_each_versions_bands_and_arms_or_says_nothing_is_observed() {
        let mut groups = vec![group("low", "canary", 4, 0.1, 1)];
        groups.push(ScoredGroup {
            model_version: "v0".into(),
            ..group("high", "none", 1, 0.9, 1)
        });
        let out = table(&groups);
        let v0 = out.find("churn_14d v0").unwrap();
        let v1 = out.find("churn_14d v1").unwrap();
        assert!(v0 < v1, "{out}");
        // Each version: a band header, its bands and `all`, an arm header, its arms and `all`.
        assert_eq!(out.lines().count(), 2 * (1 + 4 + 2), "{out}");
        assert!(out.contains("25.0% [ 4.6, 69.9]"), "{out}");
        assert!(table(&[]).contains("no churn scores"));
    }
}
