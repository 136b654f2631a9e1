-- Label views: one row per training example, with its timestamp, so a training set is one
-- query away. "Activity" is an app_opened event (after identity stitching). `complete` is
-- false while the example's window runs past the data (see gold.horizon).

-- How far the data reaches: the end of the refreshed days, or the newest event if that is
-- earlier (today's refresh, or a history that stops). Windows ending later are not complete.
CREATE VIEW gold.horizon AS
SELECT least(
    (SELECT coalesce(max(to_day), '-infinity'::date)::timestamp AT TIME ZONE 'UTC' FROM silver.refreshes),
    (SELECT coalesce(max(ts), '-infinity') FROM silver.events WHERE day = (SELECT max(day) FROM silver.events))
) AS horizon;

-- Notification ranker: did the user open the app within 24 h after the send?
CREATE VIEW gold.label_returned_24h_after_notif AS
SELECT n.notification_id, n.user_hash, n.sent_at AS example_at, n.notif_type, n.arm, n.propensity,
       EXISTS (SELECT 1 FROM silver.events o
               WHERE o.user_hash = n.user_hash AND o.event = 'app_opened'
                 AND o.ts > n.sent_at AND o.ts <= n.sent_at + interval '24 hours') AS returned_24h_after_notif,
       n.sent_at + interval '24 hours' <= h.horizon AS complete
FROM silver.notifications n CROSS JOIN gold.horizon h;

-- Churn early warning: an active user-day d, and no activity on days d+1 … d+14. The
-- example's time is the midnight ending d.
CREATE VIEW gold.label_churn_14d AS
SELECT u.user_hash, u.day, (u.day + 1)::timestamp AT TIME ZONE 'UTC' AS example_at,
       NOT EXISTS (SELECT 1 FROM gold.user_days n
                   WHERE n.user_hash = u.user_hash AND n.day > u.day AND n.day <= u.day + 14
                     AND n.app_opens > 0) AS churn_14d,
       (u.day + 15)::timestamp AT TIME ZONE 'UTC' <= h.horizon AS complete
FROM gold.user_days u CROSS JOIN gold.horizon h
WHERE u.app_opens > 0;

-- Contextual paywall: after a paywall_view, a trial within 24 h? no activity within 24 h?
CREATE VIEW gold.label_paywall AS
SELECT p.uuid AS event_uuid, p.user_hash, p.ts AS example_at, p.properties->>'placement' AS placement,
       EXISTS (SELECT 1 FROM silver.events t
               WHERE t.user_hash = p.user_hash AND t.event = 'trial_started'
                 AND t.ts > p.ts AND t.ts <= p.ts + interval '24 hours') AS paywall_trial,
       NOT EXISTS (SELECT 1 FROM silver.events o
                   WHERE o.user_hash = p.user_hash AND o.event = 'app_opened'
                     AND o.ts > p.ts AND o.ts <= p.ts + interval '24 hours') AS paywall_bounce,
       p.ts + interval '24 hours' <= h.horizon AS complete
FROM silver.events p CROSS JOIN gold.horizon h
WHERE p.event = 'paywall_view';
