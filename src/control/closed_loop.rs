//! The closed loop: the simulator with `nudge-serve` as its notification policy. Day by
//! day, every user due a notification is scored through `POST /v1/score` (as the
//! scheduler would), the simulator plays the day with the answers, its events are
//! ingested and refreshed into silver and gold (the daily feature job), and the control
//! loop ticks at the day's end on simulated time (`POST /admin/controller/tick`). The
//! next day starts only once nudge-serve serves the refreshed features (its embedded
//! store reloads after a refresh), so a seed gives the same run whatever the timing.

use chrono::{DateTime, Duration, NaiveDate, Utc};
use futures_util::StreamExt;
use futures_util::stream;
use indicatif::ProgressBar;
use serde_json::{Value, json};
use sqlx::PgPool;

use crate::features::refresh;
use crate::features::{DayRange, FeatureError};
use crate::rollout::Arm;
use crate::sim::policy::{Decision, Opportunity};
use crate::sim::population::app_id;
use crate::sim::run::{SimDriver, SimRunError};

/// Days of history under the logging policy before `nudge-train demo` trains: enough for
/// `churn_14d`, whose label looks 14 days ahead behind a 14-day gap, to keep about two
/// weeks of training examples.
pub const DEMO_HISTORY_DAYS: i32 = 56;

/// Days `nudge-train demo` plays in closed loop after training.
pub const DEMO_LOOP_DAYS: i32 = 28;

/// Requests in flight at once, like a scheduler's worker pool.
const CONCURRENCY: usize = 16;

/// Polls (50 ms apart) for nudge-serve to load a day's refreshed features.
const FEATURE_WAIT_POLLS: usize = 600;

/// Why the closed loop stopped.
#[derive(Debug, thiserror::Error)]
pub enum ClosedLoopError {
    /// The simulator or its writes.
    #[error(transparent)]
    Sim(#[from] SimRunError),
    /// The daily feature refresh.
    #[error(transparent)]
    Features(#[from] FeatureError),
    /// nudge-serve could not be reached.
    #[error("nudge-serve unreachable: {0}")]
    Http(#[from] reqwest::Error),
    /// nudge-serve did not load the refreshed features in time (its online store must be
    /// the embedded one, which reloads after each refresh).
    #[error("nudge-serve did not load the refreshed features within 30 s")]
    StaleFeatures,
    /// The simulator's truth could not be read.
    #[error("reading the simulator's truth: {0}")]
    Database(#[from] sqlx::Error),
    /// nudge-serve's answer did not have the documented shape.
    #[error("nudge-serve's answer to {path} is malformed: {detail}")]
    Answer {
        /// The route.
        path: &'static str,
        /// What was wrong.
        detail: String,
    },
    /// Something else ticks this database's control loop: another nudge-serve, on the
    /// wall clock or another simulation's, would move the controller under the loop.
    #[error(
        "another process ticks this database's control loop ({detail}); stop any other \
         nudge-serve on this database, or give the loop a database of its own"
    )]
    ForeignTicks {
        /// What the loop's tick found.
        detail: String,
    },
    /// nudge-serve answered with an error.
    #[error("nudge-serve answered {status} to {path}: {body}")]
    Refused {
        /// The route.
        path: &'static str,
        /// The HTTP status.
        status: u16,
        /// Its body.
        body: String,
    },
}

/// A client of one nudge-serve, with the scheduler's and the admin's tokens.
#[derive(Debug, Clone)]
pub struct ServeClient {
    http: reqwest::Client,
    base: String,
    scheduler_token: String,
    admin_token: String,
}

impl ServeClient {
    /// A client of the nudge-serve at `base` (e.g. `http://127.0.0.1:8080`).
    pub fn new(base: &str, scheduler_token: &str, admin_token: &str) -> Self {
        Self {
            http: reqwest::Client::new(),
            base: base.trim_end_matches('/').to_owned(),
            scheduler_token: scheduler_token.to_owned(),
            admin_token: admin_token.to_owned(),
        }
    }

    async fn call(
        &self,
        path: &'static str,
        token: &str,
        body: Option<&Value>,
    ) -> Result<Value, ClosedLoopError> {
        let url = format!("{}{path}", self.base);
        let request = match body {
            Some(body) => self.http.post(url).json(body),
            None => self.http.get(url),
        };
        let response = request.bearer_auth(token).send().await?;
        let status = response.status();
        if !status.is_success() {
            return Err(ClosedLoopError::Refused {
                path,
                status: status.as_u16(),
                body: response.text().await.unwrap_or_default(),
            });
        }
        Ok(response.json().await?)
    }

    /// The decision for one opportunity at `at`.
    async fn decide_one(
        &self,
        opportunity: &Opportunity,
        at: DateTime<Utc>,
    ) -> Result<Decision, ClosedLoopError> {
        let candidates: Vec<Value> = opportunity
            .candidates
            .iter()
            .map(|c| json!({"id": c.id, "type": c.notif_type.as_str()}))
            .collect();
        let request = json!({
            "user_id": app_id(opportunity.user),
            "now": at,
            "timezone": opportunity.timezone,
            "candidates": candidates,
        });
        let answer = self
            .call("/v1/score", &self.scheduler_token, Some(&request))
            .await?;
        let send = answer["decisions"].as_array().and_then(|decisions| {
            decisions
                .iter()
                .position(|d| d["send"].as_bool() == Some(true))
        });
        // The arm as the simulator records it; an answer without a known arm is `off`.
        let arm = answer["arm"]
            .as_str()
            .and_then(Arm::named)
            .unwrap_or(Arm::Off);
        let model_decides = arm.model_decides();
        Ok(Decision {
            send,
            propensity: None,
            arm: arm.as_str(),
            model_version: answer["model"]["version"]
                .as_str()
                .filter(|_| model_decides)
                .map(str::to_owned),
        })
    }

    /// One decision per opportunity, in order; `start` is the simulation's first instant.
    pub async fn decide(
        &self,
        opportunities: &[Opportunity],
        start: DateTime<Utc>,
    ) -> Result<Vec<Decision>, ClosedLoopError> {
        stream::iter(opportunities)
            .map(|o| {
                let at = start
                    + Duration::days(i64::from(o.day))
                    + Duration::milliseconds((o.secs * 1000.0).round() as i64);
                self.decide_one(o, at)
            })
            .buffered(CONCURRENCY)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect()
    }

    /// One control tick at `at`; the tick's report.
    pub async fn tick(&self, at: DateTime<Utc>) -> Result<Value, ClosedLoopError> {
        self.call(
            "/admin/controller/tick",
            &self.admin_token,
            Some(&json!({"at": at})),
        )
        .await
    }

    /// `GET /admin/controller`.
    pub async fn controller(&self) -> Result<Value, ClosedLoopError> {
        self.call("/admin/controller", &self.admin_token, None)
            .await
    }

    /// The feature version nudge-serve's online store serves (`GET /readyz`).
    pub async fn features_version(&self) -> Result<Option<String>, ClosedLoopError> {
        let url = format!("{}/readyz", self.base);
        let readiness: Value = self.http.get(url).send().await?.json().await?;
        Ok(readiness["features_version"].as_str().map(str::to_owned))
    }

    /// Waits until the online store serves another feature version than `before`, so
    /// the next day is decided on the features of the day just refreshed.
    async fn await_features_after(&self, before: Option<&str>) -> Result<(), ClosedLoopError> {
        for _ in 0..FEATURE_WAIT_POLLS {
            if self.features_version().await?.as_deref() != before {
                return Ok(());
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        Err(ClosedLoopError::StaleFeatures)
    }

    /// `POST /v1/churn` with `request`.
    pub async fn churn(&self, request: &Value) -> Result<Value, ClosedLoopError> {
        self.call("/v1/churn", &self.scheduler_token, Some(request))
            .await
    }

    /// `GET /admin/rollout`.
    pub async fn rollout(&self) -> Result<Value, ClosedLoopError> {
        self.call("/admin/rollout", &self.admin_token, None).await
    }
}

/// What a closed-loop run did.
#[derive(Debug, Clone)]
pub struct LoopSummary {
    /// First simulated instant of the loop.
    pub from: DateTime<Utc>,
    /// End of the last day played.
    pub to: DateTime<Utc>,
    /// Opportunities scored.
    pub scored: u64,
    /// Sends answered.
    pub sent: u64,
    /// Each day's tick report, in order.
    pub ticks: Vec<Value>,
}

impl LoopSummary {
    /// This run and `next`, the run that continued it, as one.
    pub fn then(mut self, next: LoopSummary) -> LoopSummary {
        self.to = next.to;
        self.scored += next.scored;
        self.sent += next.sent;
        self.ticks.extend(next.ticks);
        self
    }
}

/// Plays `days` days of `driver` with `client`'s nudge-serve deciding, refreshing the
/// features and ticking the control loop at each day's end. `first_day` is the date of
/// the simulation's day 0.
pub async fn run(
    driver: &mut SimDriver,
    client: &ServeClient,
    pool: &PgPool,
    first_day: NaiveDate,
    days: i32,
    progress: &ProgressBar,
) -> Result<LoopSummary, ClosedLoopError> {
    let start = first_day.and_time(chrono::NaiveTime::MIN).and_utc();
    let days = days.min(driver.days_left());
    let from = start + Duration::days(i64::from(driver.next_day()));
    let mut summary = LoopSummary {
        from,
        to: from,
        scored: 0,
        sent: 0,
        ticks: Vec::new(),
    };
    progress.inc_length(days as u64);
    for _ in 0..days {
        let day = driver.next_day();
        let opportunities = driver.plan().await?;
        let decisions = client.decide(&opportunities, start).await?;
        summary.scored += decisions.len() as u64;
        summary.sent += decisions.iter().filter(|d| d.send.is_some()).count() as u64;
        driver.play(opportunities, decisions).await?;
        let date = first_day + Duration::days(i64::from(day));
        let before = client.features_version().await?;
        refresh::refresh(pool, DayRange::new(date, date + Duration::days(1))?).await?;
        client.await_features_after(before.as_deref()).await?;
        let day_end = start + Duration::days(i64::from(day) + 1);
        let report = client.tick(day_end).await?;
        if let Some(detail) = foreign_ticks(&report, day_end) {
            return Err(ClosedLoopError::ForeignTicks { detail });
        }
        summary.ticks.push(report);
        summary.to = day_end;
        progress.inc(1);
        progress.set_message(format!("{} scored, {} sent", summary.scored, summary.sent));
    }
    Ok(summary)
}

/// Whether the tick report of the loop's tick at `at` shows another process ticking the
/// same control loop, and what. The loop's nudge-serve ticks only when asked, so a tick
/// that finds the lock held, or a state stepped or checked after `at`, is another's.
fn foreign_ticks(report: &Value, at: DateTime<Utc>) -> Option<String> {
    if report["status"] == "busy" {
        return Some(format!(
            "the tick at {} found another replica holding the controller's lock",
            at.to_rfc3339()
        ));
    }
    let state = &report["state"];
    ["last_step_at", "guardrails_checked_at"]
        .into_iter()
        .filter_map(|field| {
            let time: DateTime<Utc> = state[field].as_str()?.parse().ok()?;
            (time > at).then(|| {
                format!(
                    "its state's {field} is {}, after the loop's time {}",
                    time.to_rfc3339(),
                    at.to_rfc3339()
                )
            })
        })
        .next()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at() -> DateTime<Utc> {
        "2026-03-10T00:00:00Z".parse().unwrap()
    }

    #[test]
    fn a_tick_of_the_loop_alone_is_not_foreign() {
        let ran = json!({"status": "ran", "at": at(), "state": {
            "last_step_at": at(), "guardrails_checked_at": at() - Duration::hours(1)}});
        assert_eq!(foreign_ticks(&ran, at()), None);
        let first = json!({"status": "ran", "at": at(), "state": {
            "last_step_at": null, "guardrails_checked_at": null}});
        assert_eq!(foreign_ticks(&first, at()), None);
    }

    #[test]
    fn a_state_ahead_of_the_loops_time_or_a_held_lock_is_foreign() {
        let wall_clock: DateTime<Utc> = "2026-12-07T19:00:00Z".parse().unwrap();
        let stepped = json!({"status": "ran", "at": at(), "state": {
            "last_step_at": wall_clock, "guardrails_checked_at": null}});
        let detail = foreign_ticks(&stepped, at()).expect("a step after the loop's time");
        assert!(
            detail.contains("last_step_at is 2026-12-07T19:00:00+00:00"),
            "{detail}"
        );
        let checked = json!({"status": "ran", "at": at(), "state": {
            "last_step_at": at(), "guardrails_checked_at": wall_clock}});
        assert!(foreign_ticks(&checked, at()).is_some_and(|d| d.contains("guardrails_checked_at")));
        let busy = json!({"status": "busy"});
        assert!(foreign_ticks(&busy, at()).is_some_and(|d| d.contains("lock")));
    }
}
