-- KPIs of the decision log per arm (what the controller measures, what guardrails
-- compare, what `nudge-train kpis` reports), and the controller's state and history.
CREATE SCHEMA IF NOT EXISTS kpi;

-- Actions and opt-outs are looked up per user after a decision.
CREATE INDEX silver_events_actions ON silver.events (user_hash, ts)
    WHERE event IN ('outreach_sent', 'push_opt_out');

-- Every send of the decision log with its outcome within 24 h: `actioned` when the user
-- opened the app from a push or sent an outreach, `opened` when the notification itself
-- was opened.
CREATE VIEW kpi.sends AS
SELECT d.request_id, d.decided_at, d.arm, d.user_hash, d.sent AS notification_id,
       EXISTS (SELECT 1 FROM silver.events e
               WHERE e.user_hash = d.user_hash AND e.event = 'app_opened'
                 AND e.properties->>'source' = 'push'
                 AND e.ts >= d.decided_at AND e.ts < d.decided_at + interval '24 hours')
       OR EXISTS (SELECT 1 FROM silver.events e
               WHERE e.user_hash = d.user_hash AND e.event = 'outreach_sent'
                 AND e.ts >= d.decided_at AND e.ts < d.decided_at + interval '24 hours')
           AS actioned,
       EXISTS (SELECT 1 FROM silver.notifications n
               WHERE n.notification_id = d.sent
                 AND n.opened_at < d.decided_at + interval '24 hours') AS opened
FROM serving.decisions d
WHERE d.sent IS NOT NULL;

-- Per arm, the decisions made in [p_from, p_to) with what was observed of them by
-- p_observed. An outcome counts only once its whole window has been observed: a send's
-- 24 h, a user's day 7. Users count in the arm of their first decision in the window.
--   users, decisions, sends        volume
--   measured_sends, actioned       ROI = actioned / measured_sends
--   opened                         open rate = opened / measured_sends
--   opted_out                      opt-out rate = opted_out / users (push_opt_out after
--                                  the first decision, before p_observed)
--   d7_users, retained_d7          D7 retention = retained_d7 / d7_users (a session
--                                  during the 7th day after the first decision)
CREATE FUNCTION kpi.arms(p_from timestamptz, p_to timestamptz, p_observed timestamptz)
RETURNS TABLE (arm text, users bigint, decisions bigint, sends bigint,
               measured_sends bigint, actioned bigint, opened bigint, opted_out bigint,
               d7_users bigint, retained_d7 bigint)
LANGUAGE sql STABLE AS $$
WITH in_window AS (
    SELECT d.request_id, d.user_hash, d.arm, d.decided_at, d.sent
    FROM serving.decisions d
    WHERE d.decided_at >= p_from AND d.decided_at < p_to
), per_decision AS (
    SELECT w.arm, count(*) AS decisions, count(w.sent) AS sends
    FROM in_window w GROUP BY w.arm
), per_send AS (
    SELECT s.arm, count(*) AS measured_sends,
           count(*) FILTER (WHERE s.actioned) AS actioned,
           count(*) FILTER (WHERE s.opened) AS opened
    FROM kpi.sends s
    WHERE s.decided_at >= p_from AND s.decided_at < p_to
      AND s.decided_at + interval '24 hours' <= p_observed
    GROUP BY s.arm
), first_seen AS (
    SELECT DISTINCT ON (w.user_hash) w.user_hash, w.arm, w.decided_at AS first_at
    FROM in_window w ORDER BY w.user_hash, w.decided_at, w.request_id
), per_user AS (
    SELECT f.arm, count(*) AS users,
           count(*) FILTER (WHERE EXISTS (
               SELECT 1 FROM silver.events e
               WHERE e.user_hash = f.user_hash AND e.event = 'push_opt_out'
                 AND e.ts >= f.first_at AND e.ts < p_observed)) AS opted_out,
           count(*) FILTER (WHERE f.first_at + interval '8 days' <= p_observed) AS d7_users,
           count(*) FILTER (WHERE f.first_at + interval '8 days' <= p_observed AND EXISTS (
               SELECT 1 FROM silver.sessions s
               WHERE s.user_hash = f.user_hash
                 AND s.started_at >= f.first_at + interval '7 days'
                 AND s.started_at < f.first_at + interval '8 days')) AS retained_d7
    FROM first_seen f GROUP BY f.arm
)
SELECT u.arm, u.users, d.decisions, d.sends,
       coalesce(s.measured_sends, 0), coalesce(s.actioned, 0), coalesce(s.opened, 0),
       u.opted_out, u.d7_users, u.retained_d7
FROM per_user u
JOIN per_decision d ON d.arm = u.arm
LEFT JOIN per_send s ON s.arm = u.arm
ORDER BY u.arm
$$;

-- The controller's state: one row, written only under the controller's advisory lock.
CREATE TABLE serving.controller (
    id               boolean     PRIMARY KEY DEFAULT true CHECK (id),
    integral         float8      NOT NULL,
    output           float8      NOT NULL,   -- the threshold in force
    last_measurement float8,                 -- ROI at the last step that moved
    measured_until   timestamptz,            -- the next measurement starts here
    last_step_at     timestamptz,            -- the last step (moved, held or dry run)
    guardrails_since timestamptz,            -- evidence older than the last trip is ignored
    updated_at       timestamptz NOT NULL DEFAULT now()
);

-- Every step, whatever it did.
CREATE TABLE serving.controller_steps (
    id             bigserial   PRIMARY KEY,
    at             timestamptz NOT NULL,     -- the step's time (simulated time in simulation)
    window_from    timestamptz NOT NULL,
    window_to      timestamptz NOT NULL,
    sends          bigint      NOT NULL,     -- model-arm sends measured
    actioned       bigint      NOT NULL,
    roi            float8,
    outcome        text        NOT NULL,     -- stepped | held_small_sample
    dry_run        boolean     NOT NULL,
    error          float8,                   -- points
    p_term         float8      NOT NULL,
    i_term         float8      NOT NULL,
    integrated     boolean     NOT NULL,
    limit_hit      text        NOT NULL,     -- none | max_step | min | max
    output_before  float8      NOT NULL,
    output_after   float8      NOT NULL,     -- what it set (or would set, in dry run)
    integral_after float8      NOT NULL,
    logged_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX controller_steps_at ON serving.controller_steps (at);

-- Every guardrail check of a canary against its control.
CREATE TABLE serving.guardrail_checks (
    id                bigserial   PRIMARY KEY,
    at                timestamptz NOT NULL,
    metric            text        NOT NULL,  -- opt_out_rate | d7_retention | send_rate | roi
    canary_successes  bigint      NOT NULL,
    canary_trials     bigint      NOT NULL,
    control_successes bigint      NOT NULL,
    control_trials    bigint      NOT NULL,
    margin            float8      NOT NULL,
    z                 float8,                -- null when either arm is below min_samples
    breached          boolean     NOT NULL,
    logged_at         timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX guardrail_checks_at ON serving.guardrail_checks (at);
