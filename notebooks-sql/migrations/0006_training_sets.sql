-- Training sets: each label view joined point in time to the user's features. An example
-- takes the newest snapshot whose as_of midnight is at or before the example's time; a
-- snapshot as of D holds only events before D, so every event behind an example's
-- features is strictly before the example (Feast-style point-in-time join). An example
-- with no such snapshot (a user seen for the first time that day) keeps null features:
-- a cold start, as nudge-serve sees one. Columns: the label view's, then as_of and the
-- feature catalog's (notebooks-sql/gold/feature_catalog.yaml), in order.

-- The point-in-time rule, in one place: the newest snapshot of `who` at or before `at`.
CREATE FUNCTION gold.snapshot_at(who text, at timestamptz) RETURNS SETOF gold.snapshots
LANGUAGE sql STABLE AS $$
    SELECT s.* FROM gold.snapshots s
    WHERE s.user_hash = who AND s.as_of <= (at AT TIME ZONE 'UTC')::date
    ORDER BY s.as_of DESC LIMIT 1
$$;

CREATE VIEW gold.training_returned_24h_after_notif AS
SELECT * FROM gold.label_returned_24h_after_notif l
LEFT JOIN LATERAL gold.snapshot_at(l.user_hash, l.example_at) f USING (user_hash);

CREATE VIEW gold.training_churn_14d AS
SELECT * FROM gold.label_churn_14d l
LEFT JOIN LATERAL gold.snapshot_at(l.user_hash, l.example_at) f USING (user_hash);

CREATE VIEW gold.training_paywall AS
SELECT * FROM gold.label_paywall l
LEFT JOIN LATERAL gold.snapshot_at(l.user_hash, l.example_at) f USING (user_hash);
