//! `GET /dashboard`: one HTML page for the growth lead. It shows:
//! - the rollout in force and who set it;
//! - the controller's threshold and latest steps;
//! - the latest guardrail checks;
//! - the per-arm KPIs of the decision log's last seven days.
//!
//! It holds aggregates only, never a user, like `/metrics`: it is read-only and needs
//! no token. Keep it on the internal network as `/metrics` is kept. It refreshes every
//! 30 seconds; the KPIs, which read the decision log's whole week, are computed at most
//! once per `--dashboard-kpi-secs` however many pages are open ([`KpiCache`]).

use std::fmt::Write;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::State;
use axum::response::Html;
use chrono::{DateTime, Duration, Utc};

use super::ApiContext;
use super::admin::rollout_view;
use super::error::ApiError;
use crate::control::{guardrail, kpi, tick};

/// Controller steps shown.
const STEPS: i64 = 14;

/// `text` with HTML's special characters escaped.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A titled section holding preformatted `text`.
fn section(out: &mut String, title: &str, text: &str) {
    let _ = write!(
        out,
        "<h2>{}</h2>\n<pre>{}</pre>\n",
        escape(title),
        escape(text)
    );
}

/// The KPI section as last computed.
struct KpiSection {
    /// When it was computed (shown on the page).
    computed_at: DateTime<Utc>,
    /// When it was computed, for its age.
    computed: Instant,
    /// The section's text.
    text: String,
}

/// The dashboard's KPI section, kept between page loads. The query behind it reads a week
/// of decisions and their outcomes (seconds on a large log), so an open page refreshing
/// every 30 seconds must not run it each time; loads that arrive together wait for one
/// computation (the lock is held across it) instead of each starting their own; and the
/// computation runs on its own task, so one that outlasts the request's timeout still
/// leaves its result for the next load.
#[derive(Default)]
pub struct KpiCache(Arc<tokio::sync::Mutex<Option<KpiSection>>>);

impl KpiCache {
    /// The section and when it was computed: the kept one if younger than `every`, else
    /// a new one from `compute`. A failed computation keeps nothing and reports the error.
    async fn get<F>(
        &self,
        every: std::time::Duration,
        compute: F,
    ) -> Result<(DateTime<Utc>, String), ApiError>
    where
        F: Future<Output = Result<String, ApiError>> + Send + 'static,
    {
        let kept = self.0.clone();
        let task = tokio::spawn(async move {
            let mut kept = kept.lock().await;
            if let Some(section) = kept.as_ref().filter(|s| s.computed.elapsed() < every) {
                return Ok((section.computed_at, section.text.clone()));
            }
            let (computed, computed_at) = (Instant::now(), Utc::now());
            let text = compute.await?;
            *kept = Some(KpiSection {
                computed_at,
                computed,
                text: text.clone(),
            });
            Ok((computed_at, text))
        });
        task.await.map_err(|_| ApiError::Internal)?
    }
}

/// Per-arm KPIs of the decision log's last seven days (with the adjusted D7 lift), as the
/// dashboard shows them, then those of the latest seven days whose users' D7 is known:
/// the last week's users have not reached the end of their 7th day.
async fn kpi_section(ctx: ApiContext) -> Result<String, ApiError> {
    let Some(span) = kpi::logged_span(&ctx.pool).await.map_err(unavailable)? else {
        return Ok("the decision log is empty".to_owned());
    };
    let week = Duration::days(7);
    let from = span.last - week;
    let cohort = kpi::d7_cohort(span.observed, week, None).filter(|&(_, to)| span.first < to);
    // Each reads a week of the log: side by side, on two connections.
    let (last_week, with_d7) = tokio::try_join!(
        kpi::report(
            &ctx.pool,
            from,
            span.last + Duration::seconds(1),
            span.observed
        ),
        async {
            match cohort {
                Some((from, to)) => kpi::report(&ctx.pool, from, to, span.observed)
                    .await
                    .map(Some),
                None => Ok(None),
            }
        }
    )
    .map_err(unavailable)?;
    let mut text = format!(
        "decisions {} → {}, outcomes observed to {} (the newest refreshed event)\n{last_week}",
        from.to_rfc3339(),
        span.last.to_rfc3339(),
        span.observed.to_rfc3339(),
    );
    if let Some(((from, to), table)) = cohort.zip(with_d7) {
        let _ = write!(
            text,
            "\ndecisions {} → {}, the latest week whose D7 is known for every user\n{table}",
            from.to_rfc3339(),
            to.to_rfc3339(),
        );
    }
    Ok(text)
}

/// A store error while gathering the page.
fn unavailable(e: sqlx::Error) -> ApiError {
    ApiError::Unavailable(format!("dashboard data: {e}"))
}

/// `GET /dashboard`: rollout, controller, guardrails and KPIs on one page.
#[utoipa::path(get, path = "/dashboard", tag = "operations",
    responses((status = 200, content_type = "text/html", body = String),
              (status = 503, body = super::error::ErrorBody)))]
pub async fn dashboard(State(ctx): State<ApiContext>) -> Result<Html<String>, ApiError> {
    let rollout = rollout_view(&ctx)?;
    let loaded = ctx.current()?;
    let stored = tick::load(&ctx.pool).await.map_err(unavailable)?;
    let steps = tick::history(&ctx.pool, STEPS).await.map_err(unavailable)?;
    let checks = tick::latest_checks(&ctx.pool).await.map_err(unavailable)?;

    let mut out = String::from(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"refresh\" content=\"30\"><title>nudge</title>\
         <style>body{font-family:sans-serif;margin:2em}pre{background:#f6f6f6;padding:1em}</style>\
         </head><body>\n<h1>nudge</h1>\n",
    );

    let mut text = format!(
        "mode {} at {}% (from the {}), kill switch {}\npolicy {}, salt {}\n",
        rollout.mode.as_str(),
        rollout.canary_percent,
        match rollout.source {
            crate::rollout::Source::Flag => "runtime flag",
            crate::rollout::Source::Policy => "policy file",
            crate::rollout::Source::Unread => "policy file, held at shadow: flags unreadable",
        },
        if rollout.kill_switch { "ON" } else { "off" },
        rollout.policy.version,
        rollout.salt,
    );
    if let Some(flag) = &rollout.flag {
        let _ = writeln!(
            text,
            "flag set by {} at {}: {}",
            flag.set_by,
            flag.set_at.to_rfc3339(),
            flag.reason
        );
    }
    section(&mut out, "Rollout", &text);

    let policy = &loaded.policy;
    let mut text = format!(
        "threshold {:.3} (bounds {:.2}–{:.2}), target ROI {:.0}%, a step every {} h{}\n",
        tick::threshold_in_force(policy, stored.as_ref()),
        policy.threshold.min,
        policy.threshold.max,
        100.0 * policy.controller.target_roi,
        policy.controller.interval.num_hours(),
        if policy.controller.dry_run {
            " (dry run)"
        } else {
            ""
        },
    );
    for s in &steps {
        let _ = writeln!(
            text,
            "{}  {:>6} sends  ROI {:>6}  threshold {:.3} → {:.3}  {}{}",
            s.at.to_rfc3339(),
            s.sends,
            s.roi
                .map_or_else(|| "n/a".into(), |r| format!("{:.1}%", 100.0 * r)),
            s.output_before,
            s.step.next.output,
            s.step.outcome.as_str(),
            if s.dry_run { " (dry run)" } else { "" },
        );
    }
    section(&mut out, "Controller (latest steps first)", &text);

    let text = match &checks {
        None => "no guardrail check yet".to_owned(),
        Some((at, checks)) => format!(
            "checked at {}\n{}",
            at.to_rfc3339(),
            guardrail::lines(checks)
        ),
    };
    section(&mut out, "Guardrails", &text);

    let (computed_at, text) = ctx
        .dashboard_kpis
        .get(ctx.dashboard_kpi_every, kpi_section(ctx.clone()))
        .await?;
    let text = format!(
        "computed at {} (at most every {} s)\n{text}",
        computed_at.to_rfc3339(),
        ctx.dashboard_kpi_every.as_secs()
    );
    section(&mut out, "KPIs by arm, last 7 days of decisions", &text);
    out.push_str("</body></html>\n");
    Ok(Html(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_kpi_section_is_kept_for_its_interval_and_a_failure_keeps_nothing() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let runs = AtomicUsize::new(0);
        let compute = |fail: bool| {
            let run = runs.fetch_add(1, Ordering::SeqCst);
            async move {
                if fail {
                    Err(ApiError::Unavailable("down".into()))
                } else {
                    Ok(format!("run {run}"))
                }
            }
        };
        let hour = std::time::Duration::from_secs(3600);
        let cache = KpiCache::default();
        assert!(cache.get(hour, compute(true)).await.is_err());
        let (at, first) = cache.get(hour, compute(false)).await.unwrap();
        assert_eq!(first, "run 1", "the failure kept nothing");
        assert_eq!(cache.get(hour, compute(false)).await.unwrap(), (at, first));
        let (_, again) = cache
            .get(std::time::Duration::ZERO, compute(false))
            .await
            .unwrap();
        assert_eq!(again, "run 3", "past its interval it is computed again");
    }

    #[tokio::test]
    async fn a_computation_outlasting_its_request_is_kept_for_the_next_load() {
        let hour = std::time::Duration::from_secs(3600);
        let cache = KpiCache::default();
        let (finish, finished) = tokio::sync::oneshot::channel::<()>();
        let slow = async move {
            let _ = finished.await;
            Ok("slow".to_owned())
        };
        // The request gives up (its timeout) before the computation ends.
        let gave_up =
            tokio::time::timeout(std::time::Duration::from_millis(20), cache.get(hour, slow)).await;
        assert!(gave_up.is_err());
        finish.send(()).unwrap();
        let never = async { Err(ApiError::Unavailable("not computed again".into())) };
        let (_, text) = cache.get(hour, never).await.unwrap();
        assert_eq!(text, "slow");
    }

    #[test]
    fn html_special_characters_are_escaped() {
        assert_eq!(
            escape(r#"<script>alert("x") & 'y'</script>"#),
            "&lt;script&gt;alert(&quot;x&quot;) &amp; &#39;y&#39;&lt;/script&gt;"
        );
    }
}
