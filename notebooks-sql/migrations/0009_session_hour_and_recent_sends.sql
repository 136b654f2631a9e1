-- When a user usually opens the app, and how many pushes they had in the last three days:
-- a push near the user's own hour is opened more often, and a burst of pushes wears them
-- out faster than a 7-day count shows.

-- Per day, the sums of sin and cos of each session's start as an angle on the UTC clock
-- (24 h = 2π): summed over a window, their direction is the circular mean start hour.
ALTER TABLE gold.user_days
    ADD COLUMN session_hour_sin real NOT NULL DEFAULT 0,
    ADD COLUMN session_hour_cos real NOT NULL DEFAULT 0;

-- New catalog features, appended in catalog order.
ALTER TABLE gold.snapshots
    ADD COLUMN notifs_sent_3d integer NOT NULL DEFAULT 0,
    ADD COLUMN usual_session_hour real;

-- Circular distance in hours (0..12) between the UTC time of day of `at` and `usual_hour`
-- (a UTC hour of day); null without a usual hour. The ranker's hours_from_usual_session;
-- nudge-serve computes the same from the request's `now`.
CREATE FUNCTION gold.hours_from_usual_session(at timestamptz, usual_hour real) RETURNS real
LANGUAGE sql IMMUTABLE AS $$
    SELECT (12 - abs(12 - mod((extract(epoch FROM at)::numeric / 3600 - usual_hour::numeric + 48), 24)))::real
$$;

-- Training views expand their columns when created: recreate them over the new snapshot
-- columns (same definitions as 0006 and 0008).
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
