-- The user's timezone, as the scheduler last reported it with a notification: what
-- nudge-serve falls back to when a /v1/score request names none (API.md: "the user's
-- stored timezone, else UTC").

-- Per day, the timezone of the day's last notification that carried a known one.
ALTER TABLE gold.user_days ADD COLUMN timezone text;

-- New catalog feature, appended in catalog order: the newest day's timezone before as_of.
ALTER TABLE gold.snapshots ADD COLUMN timezone text;

-- Training views expand their columns when created: recreate them over the new snapshot
-- column (same definitions as 0010).
DROP VIEW gold.training_notif_ranker;
DROP VIEW gold.training_returned_24h_after_notif;
DROP VIEW gold.training_churn_14d;
DROP VIEW gold.training_paywall;

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
