-- D7 retention per user, and the same users' activity before the experiment: a covariate
-- the treatment cannot have touched, which reports use to adjust the D7 lift for how the
-- arms differed before (CUPED) and to narrow its interval.

-- Each user's first decision in [p_from, p_to): the arm they count in, when, and their D7
-- (null until their 7th day after it has been observed by p_observed; retained when a
-- session started during it).
CREATE FUNCTION kpi.first_seen(p_from timestamptz, p_to timestamptz, p_observed timestamptz)
RETURNS TABLE (user_hash text, arm text, first_at timestamptz, retained_d7 boolean)
LANGUAGE sql STABLE AS $$
    SELECT f.user_hash, f.arm, f.first_at,
           CASE WHEN f.first_at + interval '8 days' <= p_observed THEN EXISTS (
               SELECT 1 FROM silver.sessions s
               WHERE s.user_hash = f.user_hash
                 AND s.started_at >= f.first_at + interval '7 days'
                 AND s.started_at < f.first_at + interval '8 days') END
    FROM (SELECT DISTINCT ON (d.user_hash) d.user_hash, d.arm, d.decided_at AS first_at
          FROM serving.decisions d
          WHERE d.decided_at >= p_from AND d.decided_at < p_to
          ORDER BY d.user_hash, d.decided_at, d.request_id) f
$$;

-- kpi.arms as in 0015, its users and D7 now from kpi.first_seen.
CREATE OR REPLACE FUNCTION kpi.arms(p_from timestamptz, p_to timestamptz, p_observed timestamptz)
RETURNS TABLE (arm text, users bigint, decisions bigint, sends bigint,
               measured_sends bigint, actioned bigint, opened bigint, opted_out bigint,
               d7_users bigint, retained_d7 bigint)
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
), per_user AS (
    SELECT f.arm, count(*) AS users,
           count(*) FILTER (WHERE EXISTS (
               SELECT 1 FROM silver.events e
               WHERE e.user_hash = f.user_hash AND e.event = 'push_opt_out'
                 AND e.ts >= f.first_at AND e.ts < p_observed)) AS opted_out,
           count(f.retained_d7) AS d7_users,
           count(*) FILTER (WHERE f.retained_d7) AS retained_d7
    FROM kpi.first_seen(p_from, p_to, p_observed) f GROUP BY f.arm
)
SELECT u.arm, u.users, d.decisions, d.sends,
       coalesce(s.measured_sends, 0), coalesce(s.actioned, 0), coalesce(s.opened, 0),
       u.opted_out, u.d7_users, u.retained_d7
FROM per_user u
JOIN per_decision d ON d.arm = u.arm
LEFT JOIN per_send s ON s.arm = u.arm
ORDER BY u.arm
$$;

-- Per arm, over the users of kpi.first_seen whose D7 has been observed: how many (n), how
-- many retained (Σy), and the sums Σx, Σx², Σxy of x = the days with a session in
-- [p_pre_from, p_pre_to) (before the experiment started), from which a report fits the
-- adjustment.
CREATE FUNCTION kpi.d7_pre_period(p_from timestamptz, p_to timestamptz,
                                  p_observed timestamptz,
                                  p_pre_from timestamptz, p_pre_to timestamptz)
RETURNS TABLE (arm text, users bigint, retained bigint,
               pre_days bigint, pre_days_sq bigint, pre_days_retained bigint)
LANGUAGE sql STABLE AS $$
WITH pre AS (
    SELECT s.user_hash, count(DISTINCT s.day) AS days
    FROM silver.sessions s
    WHERE s.started_at >= p_pre_from AND s.started_at < p_pre_to
    GROUP BY s.user_hash
), per_user AS (
    SELECT f.arm, f.retained_d7::int AS y, coalesce(p.days, 0)::int AS x
    FROM kpi.first_seen(p_from, p_to, p_observed) f
    LEFT JOIN pre p ON p.user_hash = f.user_hash
    WHERE f.retained_d7 IS NOT NULL
)
SELECT arm, count(*), sum(y), sum(x), sum(x * x), sum(x * y)
FROM per_user GROUP BY arm ORDER BY arm
$$;
