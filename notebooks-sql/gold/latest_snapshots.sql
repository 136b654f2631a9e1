-- The newest snapshot of every user: what the online store serves (written to Redis by
-- `nudge-train features materialize`, loaded by nudge-serve's embedded store).
SELECT DISTINCT ON (user_hash) *
FROM gold.snapshots
ORDER BY user_hash, as_of DESC
