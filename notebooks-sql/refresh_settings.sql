-- Settings of a feature refresh transaction (first of the refresh files).
-- Day boundaries are UTC midnights whatever the session's time zone.
SET LOCAL TimeZone = 'UTC';
-- Sorts and hashes of a refresh fit in memory (one refresh runs at a time, in a few
-- transactions side by side).
SET LOCAL work_mem = '1GB';
