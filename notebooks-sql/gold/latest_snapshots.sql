-- The newest snapshot of every user: what the online store serves (written to Redis by
-- `nudge-train features materialize`, loaded by nudge-serve's embedded store).
--
-- The snapshot grid (gold/snapshots.sql) gives every user known before a day a snapshot
-- as of that day's end, so after contiguous refreshes the newest as_of holds every user's
-- newest snapshot, and one index range read replaces a per-user sort of the whole table.
SELECT *
FROM gold.snapshots
WHERE as_of = (SELECT max(as_of) FROM gold.snapshots)
