-- Notification context for the ranker: the user's timezone at the send (a property of
-- notification_sent, as the scheduler gave it to /v1/score), kept only when Postgres
-- knows it, so the local hour and weekday below never fail on a bad value.
ALTER TABLE silver.notifications ADD COLUMN timezone text;

-- The local hour (0-23) and ISO weekday (1 = Monday … 7) of a time in a timezone (UTC
-- when unknown), as text: the ranker treats both as categories. nudge-serve computes the
-- same from the request's `now` and `timezone`.
CREATE FUNCTION gold.local_hour(at timestamptz, tz text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$ SELECT extract(hour FROM at AT TIME ZONE coalesce(tz, 'UTC'))::int::text $$;
CREATE FUNCTION gold.local_weekday(at timestamptz, tz text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$ SELECT extract(isodow FROM at AT TIME ZONE coalesce(tz, 'UTC'))::int::text $$;

-- The ranker's training set: each notification's label, its context and the user's
-- features as of the midnight before it (see gold.training_returned_24h_after_notif).
CREATE VIEW gold.training_notif_ranker AS
SELECT t.*, gold.local_hour(t.example_at, n.timezone) AS local_hour,
       gold.local_weekday(t.example_at, n.timezone) AS local_weekday
FROM gold.training_returned_24h_after_notif t
JOIN silver.notifications n USING (notification_id);
