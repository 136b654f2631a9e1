-- Crash-free users per arm. A crash is a PostHog `$exception` event at level `fatal`
-- (how the mobile SDKs report an unhandled crash, on the next launch); other levels are
-- handled errors and do not count. Crash reports are not in-app activity
-- (silver/events.sql), so they neither start sessions nor count as engagement.
CREATE INDEX silver_events_crashes ON silver.events (user_hash, ts)
    WHERE event = '$exception' AND properties ->> '$exception_level' = 'fatal';

-- kpi.arms as in 0021, with one more count:
--   crashed                        crash-free share = 1 − crashed / users (a fatal
--                                  `$exception` after the first decision, before
--                                  p_observed)
-- Each user's latest crash before p_observed is found once (a scan of the partial index)
-- and joined, rather than looked up per user, which made the function a sixth slower at
-- 100,000 users. Its columns change, so it is dropped and created again.
DROP FUNCTION kpi.arms(timestamptz, timestamptz, timestamptz);
CREATE FUNCTION kpi.arms(p_from timestamptz, p_to timestamptz, p_observed timestamptz)
RETURNS TABLE (arm text, users bigint, decisions bigint, sends bigint,
               measured_sends bigint, actioned bigint, opened bigint, opted_out bigint,
               d7_users bigint, retained_d7 bigint, crashed bigint)
LANGUAGE sql STABLE AS $$
WITH per_decision AS (
    SELECT d.arm, count(*) AS decisions, count(d.sent) AS sends
    FROM serving.decisions d
    WHERE d.decided_at >= p_from AND d.decided_at < p_to
    GROUP BY d.arm
), per_send AS (
    SELECT s.arm, count(*) AS measured_sends,
           count(*) FILTER (WHERE s.actioned) AS actioned,
           count(*) FILTER (WHERE s.opened) AS opened
    FROM kpi.sends s
    WHERE s.decided_at >= p_from AND s.decided_at < p_to
      AND s.decided_at + interval '24 hours' <= p_observed
    GROUP BY s.arm
), last_crash AS (
    SELECT e.user_hash, max(e.ts) AS at
    FROM silver.events e
    WHERE e.event = '$exception' AND e.properties ->> '$exception_level' = 'fatal'
      AND e.ts < p_observed
    GROUP BY e.user_hash
), per_user AS (
    SELECT f.arm, count(*) AS users,
           count(*) FILTER (WHERE EXISTS (
               SELECT 1 FROM silver.events e
               WHERE e.user_hash = f.user_hash AND e.event = 'push_opt_out'
                 AND e.ts >= f.first_at AND e.ts < p_observed)) AS opted_out,
           count(f.retained_d7) AS d7_users,
           count(*) FILTER (WHERE f.retained_d7) AS retained_d7,
           count(*) FILTER (WHERE c.at >= f.first_at) AS crashed
    FROM kpi.first_seen(p_from, p_to, p_observed) f
    LEFT JOIN last_crash c ON c.user_hash = f.user_hash
    GROUP BY f.arm
)
SELECT u.arm, u.users, d.decisions, d.sends,
       coalesce(s.measured_sends, 0), coalesce(s.actioned, 0), coalesce(s.opened, 0),
       u.opted_out, u.d7_users, u.retained_d7, u.crashed
FROM per_user u
JOIN per_decision d ON d.arm = u.arm
LEFT JOIN per_send s ON s.arm = u.arm
ORDER BY u.arm
$$;
