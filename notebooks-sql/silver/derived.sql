-- Silver, stage 3 of the feature refresh: the sessions of the days [:'from', :'to') and
-- the notifications sent in them, joined to their open or dismissal. nudge-train runs it
-- over the refreshed range widened one day back (a notification sent the day before may
-- be opened in the range), and over each day stage 1 moved events of. See
-- silver/identity.sql for the order of the stages.

-- Sessions: a 30-minute gap starts a new one, and so does UTC midnight, so a day's
-- sessions depend on that day's events alone.
DELETE FROM silver.sessions WHERE day >= :'from'::date AND day < :'to'::date;

INSERT INTO silver.sessions (user_hash, started_at, ended_at, day, events, source)
SELECT user_hash, min(ts), max(ts), day, count(*),
       COALESCE((array_agg(open_source ORDER BY ts, uuid) FILTER (WHERE is_open))[1], 'organic')
FROM (
    SELECT *, sum(starts) OVER (PARTITION BY user_hash, day ORDER BY ts, uuid) AS session_no
    FROM (
        -- Only what the sessions need: the sorts below do not carry the properties.
        SELECT user_hash, day, ts, uuid, event = 'app_opened' AS is_open,
               CASE WHEN event = 'app_opened' THEN properties->>'source' END AS open_source,
               CASE WHEN lag(ts) OVER (PARTITION BY user_hash, day ORDER BY ts, uuid)
                         > ts - interval '30 minutes' THEN 0 ELSE 1 END AS starts
        FROM silver.events
        WHERE in_app AND day >= :'from'::date AND day < :'to'::date
    ) gaps
) numbered
GROUP BY user_hash, day, session_no;

-- Notifications sent in the days, with their first open and dismissal within 7 days (an
-- open a week later is not the notification's doing). Filters are on `day`, which the
-- index covers (ts and day agree: days are UTC).
DELETE FROM silver.notifications WHERE sent_at >= :'from'::date AND sent_at < :'to'::date;

INSERT INTO silver.notifications
    (notification_id, user_hash, sent_at, notif_type, arm, propensity, model_version, opened_at, dismissed_at, timezone)
SELECT s.id, s.user_hash, s.ts, s.notif_type, s.arm, s.propensity, s.model_version,
       CASE WHEN r.opened_at < s.ts + interval '7 days' THEN r.opened_at END,
       CASE WHEN r.dismissed_at < s.ts + interval '7 days' THEN r.dismissed_at END,
       tz.name
FROM (
    SELECT DISTINCT ON (properties->>'notification_id' COLLATE "C")
           properties->>'notification_id' COLLATE "C" AS id, user_hash, ts, properties->>'notif_type' AS notif_type,
           properties->>'arm' AS arm, (properties->>'propensity')::real AS propensity,
           properties->>'model_version' AS model_version, properties->>'timezone' AS timezone
    FROM silver.events
    WHERE event = 'notification_sent' AND day >= :'from'::date AND day < :'to'::date
    ORDER BY properties->>'notification_id' COLLATE "C", ts, uuid
) s
LEFT JOIN (
    SELECT properties->>'notification_id' COLLATE "C" AS id,
           min(ts) FILTER (WHERE event = 'notification_opened') AS opened_at,
           min(ts) FILTER (WHERE event = 'notification_dismissed') AS dismissed_at
    FROM silver.events
    WHERE event IN ('notification_opened', 'notification_dismissed')
      AND day >= :'from'::date AND day < :'to'::date + 8
    GROUP BY 1
) r ON r.id = s.id
-- A timezone Postgres does not know is dropped (the local hour then falls back to UTC).
LEFT JOIN (SELECT name FROM pg_timezone_names) tz ON tz.name = s.timezone
ON CONFLICT (notification_id) DO NOTHING;
