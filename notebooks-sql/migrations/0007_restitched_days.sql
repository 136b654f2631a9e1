-- Days whose events a late identity link moved to another user: their sessions,
-- notifications and daily aggregates must be rebuilt. Stage 1 of the feature refresh
-- adds them; they are removed only once a refresh has rebuilt them, so a refresh that
-- fails half-way leaves them for the next one.
CREATE TABLE silver.restitched_days (
    day date PRIMARY KEY
);
