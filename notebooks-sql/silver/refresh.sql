-- Refreshes the silver layer for the UTC days [:'from', :'to'). Idempotent: a day range
-- refreshed twice holds the same rows. Run it with the gold refresh in one transaction
-- (`restitched_days` lives until the commit):
--   psql -1 -v from=2026-01-05 -v to=2026-03-06 \
--        -f notebooks-sql/refresh_settings.sql -f notebooks-sql/silver/refresh.sql \
--        -f notebooks-sql/gold/refresh.sql nudge
-- nudge-train sends the same files as one multi-statement transaction.

-- 1. Identity: every link from an anonymous or aliased id to a user (earliest link wins).
INSERT INTO silver.identity (distinct_hash, user_hash, linked_at)
SELECT DISTINCT ON (distinct_hash) distinct_hash, user_hash, ts
FROM (
    SELECT COALESCE(properties->>'$anon_distinct_id', properties->>'alias') AS distinct_hash, user_hash, ts
    FROM bronze.events WHERE event IN ('$identify', '$create_alias')
) links
WHERE distinct_hash IS NOT NULL AND distinct_hash <> user_hash
ORDER BY distinct_hash, ts, user_hash
ON CONFLICT (distinct_hash) DO UPDATE
SET user_hash = EXCLUDED.user_hash, linked_at = EXCLUDED.linked_at, stitched = false
WHERE (EXCLUDED.linked_at, EXCLUDED.user_hash) < (silver.identity.linked_at, silver.identity.user_hash);

-- 2. Events stored before their id was linked: move them to their user, and remember
--    their days, whose sessions change too.
CREATE TEMP TABLE restitched_days ON COMMIT DROP AS
WITH moved AS (
    UPDATE silver.events e SET user_hash = i.user_hash
    FROM silver.identity i
    WHERE NOT i.stitched AND e.distinct_hash = i.distinct_hash AND e.user_hash <> i.user_hash
    RETURNING e.day
)
SELECT DISTINCT day FROM moved;

UPDATE silver.identity SET stitched = true WHERE NOT stitched;

-- 3. Events of the range, attributed to their stitched user.
DELETE FROM silver.events WHERE day >= :'from'::date AND day < :'to'::date;

INSERT INTO silver.events (uuid, user_hash, distinct_hash, event, ts, day, in_app, properties)
SELECT b.uuid, COALESCE(i.user_hash, b.user_hash), b.user_hash, b.event, b.ts,
       (b.ts AT TIME ZONE 'UTC')::date,
       b.event NOT IN ('$identify', '$create_alias', 'notification_sent', 'notification_dismissed',
                       'email_opened', 'email_clicked', 'subscription_purchased',
                       'subscription_cancelled', 'ad_click', 'landing_view',
                       'consent_analytics_changed', 'ab_exposed', 'push_opt_out'),
       b.properties
FROM bronze.events b LEFT JOIN silver.identity i ON i.distinct_hash = b.user_hash
WHERE b.ts >= :'from'::date AND b.ts < :'to'::date;

-- 4. Sessions of the range's days and of the days whose events were re-attributed.
DELETE FROM silver.sessions
WHERE (day >= :'from'::date AND day < :'to'::date) OR day IN (SELECT day FROM restitched_days);

INSERT INTO silver.sessions (user_hash, started_at, ended_at, day, events, source)
SELECT user_hash, min(ts), max(ts), day, count(*),
       COALESCE((array_agg(properties->>'source' ORDER BY ts, uuid)
                 FILTER (WHERE event = 'app_opened'))[1], 'organic')
FROM (
    SELECT *, sum(starts) OVER (PARTITION BY user_hash, day ORDER BY ts, uuid) AS session_no
    FROM (
        SELECT user_hash, day, ts, uuid, event, properties,
               CASE WHEN lag(ts) OVER (PARTITION BY user_hash, day ORDER BY ts, uuid)
                         > ts - interval '30 minutes' THEN 0 ELSE 1 END AS starts
        FROM silver.events
        WHERE in_app AND ((day >= :'from'::date AND day < :'to'::date)
                          OR day IN (SELECT day FROM restitched_days))
    ) gaps
) numbered
GROUP BY user_hash, day, session_no;

-- 5. Notifications sent in the range, or the day before (their opens may fall in it).
DELETE FROM silver.notifications
WHERE sent_at >= :'from'::date - 1 AND sent_at < :'to'::date;

INSERT INTO silver.notifications
    (notification_id, user_hash, sent_at, notif_type, arm, propensity, model_version, opened_at, dismissed_at)
SELECT s.id, s.user_hash, s.ts, s.notif_type, s.arm, s.propensity, s.model_version, r.opened_at, r.dismissed_at
FROM (
    SELECT DISTINCT ON (properties->>'notification_id')
           properties->>'notification_id' AS id, user_hash, ts, properties->>'notif_type' AS notif_type,
           properties->>'arm' AS arm, (properties->>'propensity')::real AS propensity,
           properties->>'model_version' AS model_version
    FROM silver.events
    WHERE event = 'notification_sent' AND ts >= :'from'::date - 1 AND ts < :'to'::date
    ORDER BY properties->>'notification_id', ts, uuid
) s
LEFT JOIN (
    SELECT properties->>'notification_id' AS id,
           min(ts) FILTER (WHERE event = 'notification_opened') AS opened_at,
           min(ts) FILTER (WHERE event = 'notification_dismissed') AS dismissed_at
    FROM silver.events
    WHERE event IN ('notification_opened', 'notification_dismissed') AND ts >= :'from'::date - 1
    GROUP BY 1
) r ON r.id = s.id
ON CONFLICT (notification_id) DO NOTHING;
