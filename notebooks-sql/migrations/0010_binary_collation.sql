-- Keyed hashes and notification ids compare byte by byte (collation "C"): their order
-- means nothing, and the database's default collation made every sort, window and index
-- insert on them call the C library's collation (a sort of the user-days by user took
-- 16.7 s instead of 6.0 s). Views on these columns block the change: they are dropped and
-- recreated with the same definitions (0005, 0009).

DROP VIEW gold.training_notif_ranker;
DROP VIEW gold.training_returned_24h_after_notif;
DROP VIEW gold.training_churn_14d;
DROP VIEW gold.training_paywall;
DROP VIEW gold.label_returned_24h_after_notif;
DROP VIEW gold.label_churn_14d;
DROP VIEW gold.label_paywall;

ALTER TABLE bronze.events ALTER COLUMN user_hash TYPE text COLLATE "C";
ALTER TABLE bronze.consent_changes ALTER COLUMN user_hash TYPE text COLLATE "C";
ALTER TABLE silver.identity ALTER COLUMN distinct_hash TYPE text COLLATE "C", ALTER COLUMN user_hash TYPE text COLLATE "C";
ALTER TABLE silver.events ALTER COLUMN user_hash TYPE text COLLATE "C", ALTER COLUMN distinct_hash TYPE text COLLATE "C";
ALTER TABLE silver.sessions ALTER COLUMN user_hash TYPE text COLLATE "C";
ALTER TABLE silver.notifications ALTER COLUMN notification_id TYPE text COLLATE "C", ALTER COLUMN user_hash TYPE text COLLATE "C";
ALTER TABLE gold.user_days ALTER COLUMN user_hash TYPE text COLLATE "C";
ALTER TABLE gold.snapshots ALTER COLUMN user_hash TYPE text COLLATE "C";
ALTER TABLE sim.users ALTER COLUMN user_hash TYPE text COLLATE "C";
ALTER TABLE sim.notification_truth ALTER COLUMN notification_id TYPE text COLLATE "C", ALTER COLUMN user_hash TYPE text COLLATE "C";
ALTER TABLE sim.churn_truth ALTER COLUMN user_hash TYPE text COLLATE "C";
ALTER TABLE sim.paywall_truth ALTER COLUMN user_hash TYPE text COLLATE "C";

-- Nothing reads notifications by user and time; the index only slowed each refresh's
-- inserts (random order).
DROP INDEX silver.silver_notifications_user_sent;

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

CREATE VIEW gold.training_returned_24h_after_notif AS
SELECT * FROM gold.label_returned_24h_after_notif l
LEFT JOIN LATERAL gold.snapshot_at(l.user_hash, l.example_at) f USING (user_hash);

CREATE VIEW gold.training_churn_14d AS
SELECT * FROM gold.label_churn_14d l
LEFT JOIN LATERAL gold.snapshot_at(l.user_hash, l.example_at) f USING (user_hash);

CREATE VIEW gold.training_paywall AS
SELECT * FROM gold.label_paywall l
LEFT JOIN LATERAL gold.snapshot_at(l.user_hash, l.example_at) f USING (user_hash);

CREATE VIEW gold.training_notif_ranker AS
SELECT t.*, gold.local_hour(t.example_at, n.timezone) AS local_hour,
       gold.local_weekday(t.example_at, n.timezone) AS local_weekday,
       gold.hours_from_usual_session(t.example_at, t.usual_session_hour) AS hours_from_usual_session
FROM gold.training_returned_24h_after_notif t
JOIN silver.notifications n USING (notification_id);
