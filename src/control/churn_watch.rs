//! The demo's look at the served churn model: every user active on one day of the
//! closed loop is scored through `POST /v1/churn`, on the features nudge-serve holds as of
//! that day's end (what a `churn_14d` training example sees), and each band, and each arm
//! of the loop, is set beside the simulator's true P(churn_14d) of the same users. What
//! they then did is read from the logged scores by [`super::calibration`].

use std::collections::HashMap;

use chrono::NaiveDate;
use serde::Deserialize;
use serde_json::json;
use sqlx::PgPool;

use super::closed_loop::{ClosedLoopError, ServeClient};
use crate::ingest::hashing::UserHasher;
use crate::serving::churn::MAX_USERS;
use crate::sim::population::app_id;

/// One group of users (a band, or an arm) and their served and true churn risk.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupRisk {
    /// The band's or arm's name.
    pub group: String,
    /// Users in it.
    pub users: usize,
    /// Their mean served score (calibrated P(churn_14d)).
    pub mean_score: f64,
    /// Their mean true P(churn_14d).
    pub mean_true: f64,
}

/// One scored user: the band and score served, the arm, and the true probability.
#[derive(Debug, Clone, PartialEq)]
pub struct ScoredUser {
    /// The band served.
    pub band: String,
    /// The user's arm in the loop's decision log (`none` when never scored).
    pub arm: String,
    /// The score served.
    pub score: f64,
    /// The simulator's true P(churn_14d).
    pub truth: f64,
}

/// The part of a `/v1/churn` answer the watch reads.
#[derive(Deserialize)]
struct ChurnAnswer {
    scores: Vec<ChurnScore>,
}

#[derive(Deserialize)]
struct ChurnScore {
    band: String,
    score: f64,
}

/// Groups users by `key` (their band or their arm), in order of the group's mean score
/// (lowest risk first).
pub fn group_risks<'a>(
    users: &'a [ScoredUser],
    key: impl Fn(&'a ScoredUser) -> &'a str,
) -> Vec<GroupRisk> {
    let mut groups: HashMap<&str, (usize, f64, f64)> = HashMap::new();
    for u in users {
        let g = groups.entry(key(u)).or_default();
        *g = (g.0 + 1, g.1 + u.score, g.2 + u.truth);
    }
    let mut risks: Vec<GroupRisk> = groups
        .into_iter()
        .map(|(group, (n, score, truth))| GroupRisk {
            group: group.to_owned(),
            users: n,
            mean_score: score / n as f64,
            mean_true: truth / n as f64,
        })
        .collect();
    risks.sort_by(|a, b| a.mean_score.total_cmp(&b.mean_score));
    risks
}

/// The table of the groups under `heading` (`band` or `arm`), with a total row.
pub fn table(heading: &str, risks: &[GroupRisk]) -> String {
    let mut out = format!(
        "  {heading:<8} {:>6} {:>12} {:>12}\n",
        "users", "mean score", "true P"
    );
    let row = |name: &str, users: usize, score: f64, truth: f64| {
        format!(
            "  {name:<8} {users:>6} {:>11.1}% {:>11.1}%\n",
            100.0 * score,
            100.0 * truth
        )
    };
    for r in risks {
        out.push_str(&row(&r.group, r.users, r.mean_score, r.mean_true));
    }
    let users: usize = risks.iter().map(|r| r.users).sum();
    if users > 0 {
        let mean = |f: fn(&GroupRisk) -> f64| {
            risks.iter().map(|r| f(r) * r.users as f64).sum::<f64>() / users as f64
        };
        out.push_str(&row(
            "all",
            users,
            mean(|r| r.mean_score),
            mean(|r| r.mean_true),
        ));
    }
    out
}

/// Scores every user of a `users`-strong simulated population who was active on `day`
/// through `client`'s `/v1/churn`, beside their arm and their true P(churn_14d) that day.
pub async fn score_active(
    pool: &PgPool,
    client: &ServeClient,
    hasher: &UserHasher,
    users: u32,
    day: NaiveDate,
) -> Result<Vec<ScoredUser>, ClosedLoopError> {
    let truth: HashMap<String, f64> = sqlx::query_as::<_, (String, f32)>(
        "SELECT user_hash, p_churn_14d FROM sim.churn_truth WHERE day = $1",
    )
    .bind(day)
    .fetch_all(pool)
    .await?
    .into_iter()
    .map(|(hash, p)| (hash, f64::from(p)))
    .collect();
    let arms: HashMap<String, String> = sqlx::query_as(
        "SELECT DISTINCT ON (user_hash) user_hash, arm FROM serving.decisions
         ORDER BY user_hash, decided_at DESC",
    )
    .fetch_all(pool)
    .await?
    .into_iter()
    .collect();
    let active: Vec<(String, f64, String)> = (0..users)
        .map(app_id)
        .filter_map(|id| {
            let hash = hasher.hash(&id);
            let arm = arms.get(&hash).map_or("none", String::as_str).to_owned();
            truth.get(&hash).map(|&p| (id, p, arm))
        })
        .collect();
    let mut scored = Vec::with_capacity(active.len());
    for chunk in active.chunks(MAX_USERS) {
        let ids: Vec<&str> = chunk.iter().map(|(id, ..)| id.as_str()).collect();
        let malformed = |detail: String| ClosedLoopError::Answer {
            path: "/v1/churn",
            detail,
        };
        let answer: ChurnAnswer =
            serde_json::from_value(client.churn(&json!({ "user_ids": ids })).await?)
                .map_err(|e| malformed(e.to_string()))?;
        if answer.scores.len() != chunk.len() {
            return Err(malformed(format!(
                "{} scores for {} users",
                answer.scores.len(),
                chunk.len()
            )));
        }
        scored.extend(
            chunk
                .iter()
                .zip(answer.scores)
                .map(|((_, truth, arm), s)| ScoredUser {
                    band: s.band,
                    arm: arm.clone(),
                    score: s.score,
                    truth: *truth,
                }),
        );
    }
    Ok(scored)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(band: &str, score: f64, truth: f64) -> ScoredUser {
        ScoredUser {
            band: band.into(),
            arm: if score < 0.5 { "control" } else { "canary" }.into(),
            score,
            truth,
        }
    }

    #[test]
    fn groups_are_averaged_and_ordered_by_served_risk() {
        let users = [
            user("high", 0.7, 0.5),
            user("low", 0.1, 0.0),
            user("high", 0.9, 0.7),
            user("low", 0.2, 0.1),
            user("medium", 0.4, 0.3),
        ];
        let risks = group_risks(&users, |u| &u.band);
        let names: Vec<&str> = risks.iter().map(|r| r.group.as_str()).collect();
        assert_eq!(names, ["low", "medium", "high"]);
        let high = &risks[2];
        assert_eq!(high.users, 2);
        assert!((high.mean_score - 0.8).abs() < 1e-12);
        assert!((high.mean_true - 0.6).abs() < 1e-12);
        let arms = group_risks(&users, |u| &u.arm);
        let sizes: Vec<(&str, usize)> = arms.iter().map(|r| (r.group.as_str(), r.users)).collect();
        assert_eq!(sizes, [("control", 3), ("canary", 2)]);
    }

    #[test]
    fn the_table_ends_with_the_user_weighted_total() {
        let users = [
            user("low", 0.1, 0.05),
            user("low", 0.1, 0.05),
            user("low", 0.1, 0.05),
            user("high", 0.9, 0.45),
        ];
        let out = table("band", &group_risks(&users, |u| &u.band));
        let last = out.lines().last().unwrap();
        // (3 × 10 % + 90 %) / 4 = 30 %; (3 × 5 % + 45 %) / 4 = 15 %.
        assert!(last.contains("all") && last.contains("4"), "{last}");
        assert!(last.contains("30.0%") && last.contains("15.0%"), "{last}");
        assert_eq!(out.lines().count(), 4);
    }

    #[test]
    fn no_users_give_a_header_only() {
        assert_eq!(
            table("arm", &group_risks(&[], |u| &u.arm)).lines().count(),
            1
        );
    }
}
