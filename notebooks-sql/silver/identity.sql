-- Silver, stage 1 of the feature refresh: identity links (anonymous and aliased ids to
-- the user who identified; the earliest link wins), and the events stored before their id
-- was linked, moved to their user. `silver.restitched_days` lists the days whose events
-- moved: stages 3 and 4 rebuild their sessions, notifications and daily aggregates, and
-- nudge-train clears the list once they have.
--
-- The feature refresh runs these files in order, each as its own transaction(s) after
-- notebooks-sql/refresh_settings.sql, with psql variables `from` and `to` (UTC days,
-- `to` excluded):
--   1. silver/identity.sql     once, no range; lists the days whose events it moved
--                              (silver.restitched_days, cleared after stage 4)
--   2. silver/events.sql       the range
--   3. silver/derived.sql      the range widened one day back (a notification sent the
--                              day before may be opened in it), plus each listed day
--   4. gold/user_days.sql      the same ranges as 3
--   5. gold/snapshots.sql      the range (snapshots as of its days' ends)
-- nudge-train splits each range-wise stage into chunks of days run side by side; each
-- stage reads only what earlier stages wrote, and chunks of one stage touch disjoint rows.
-- By hand, e.g. the days 2026-01-05 … 2026-03-05:
--   psql -1 -v from=2026-01-05 -v to=2026-03-06 -f notebooks-sql/refresh_settings.sql \
--        -f notebooks-sql/silver/identity.sql -f notebooks-sql/silver/events.sql nudge

-- Identity: every link from an anonymous or aliased id to a user (earliest link wins).
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

-- Events stored before their id was linked: move them to their user, and remember their
-- days (silver.restitched_days), whose sessions change too.
WITH moved AS (
    UPDATE silver.events e SET user_hash = i.user_hash
    FROM silver.identity i
    WHERE NOT i.stitched AND e.distinct_hash = i.distinct_hash AND e.user_hash <> i.user_hash
    RETURNING e.day
)
INSERT INTO silver.restitched_days SELECT DISTINCT day FROM moved ON CONFLICT DO NOTHING;

UPDATE silver.identity SET stitched = true WHERE NOT stitched;

