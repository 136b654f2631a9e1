#!/usr/bin/env bash
# How long `kpi.churn_calibration` (the logged /v1/churn scores beside the users' churn
# labels, read by `nudge-train kpis` and the demo) takes on a log of production size, in
# a fresh database: USERS users, each with 10 /v1/score decisions over the week before the
# snapshot (canary or control), active on the 10 days up to it and, unless churned (one
# in five), the 10 after, and two logged churn scores of the snapshot as of 2026-03-09
# (the later one counts). Prints the row counts, the function's groups, and three timed
# runs (psql \timing).
#   benches/churn_calibration.sh [USERS=100000]
set -euo pipefail
USERS="${1:-100000}"
cd "$(dirname "$0")/.."
source benches/stores.sh
fresh_stores calibration
cargo build --release --quiet --bin nudge-train

target/release/nudge-train migrate --database-url "$URL" >/dev/null
psql -q -h 127.0.0.1 -U postgres -d "$DB" \
  -c "INSERT INTO serving.decisions (request_id, decided_at, user_hash, arm, cold_start,
        policy_version, threshold, candidates)
      SELECT gen_random_uuid(),
             timestamptz '2026-03-02' + k * interval '16 hours' + (u % 3600) * interval '1 second',
             md5(u::text), CASE WHEN u % 2 = 0 THEN 'canary' ELSE 'control' END, false, 'p', 0.3,
             '[]'
      FROM generate_series(1, $USERS) u, generate_series(0, 9) k" \
  -c "INSERT INTO gold.user_days (user_hash, day, sessions, app_opens, in_app_events,
        contacts_created, contacts_viewed, outreach, notifs_sent, notifs_opened,
        notifs_dismissed, opted_out, pricing_views, paywall_views, trials, emails_opened,
        emails_clicked, prompted_sessions)
      SELECT md5(u::text), date '2026-03-08' + d, 1, 1, 0, 0, 0, 0, 0, 0, 0, false, 0, 0, 0, 0,
             0, 0
      FROM generate_series(1, $USERS) u, generate_series(-9, 10) d
      WHERE d <= 0 OR u % 5 <> 0" \
  -c "INSERT INTO silver.refreshes (from_day, to_day, started_at, events)
      VALUES ('2026-02-01', '2026-03-30', now(), 1)" \
  -c "INSERT INTO silver.events (uuid, user_hash, distinct_hash, event, ts, day, in_app, properties)
      VALUES (gen_random_uuid(), 'h', 'h', 'app_opened', '2026-03-29T12:00:00Z', '2026-03-29', true, '{}')" \
  -c "INSERT INTO serving.churn_scores (request_id, scored_at, user_hash, features_as_of,
        model_version, policy_version, score, band)
      SELECT gen_random_uuid(), timestamptz '2026-03-09 06:00' + k * interval '1 hour', md5(u::text),
             '2026-03-09', 'v1', 'p', (u % 100) / 100.0,
             CASE WHEN u % 100 >= 30 THEN 'medium' ELSE 'low' END
      FROM generate_series(1, $USERS) u, generate_series(0, 1) k" \
  -c "VACUUM ANALYZE" -c "CHECKPOINT"
psql -h 127.0.0.1 -U postgres -d "$DB" -At \
  -c "SELECT 'decisions: ' || count(*) FROM serving.decisions" \
  -c "SELECT 'user days: ' || count(*) FROM gold.user_days" \
  -c "SELECT 'churn scores: ' || count(*) FROM serving.churn_scores"
psql -h 127.0.0.1 -U postgres -d "$DB" \
  -c "SELECT * FROM kpi.churn_calibration('2026-03-09', '2026-03-10')" \
  -c '\timing on' \
  -c "SELECT count(*) FROM kpi.churn_calibration('2026-03-09', '2026-03-10')" \
  -c "SELECT count(*) FROM kpi.churn_calibration('2026-03-09', '2026-03-10')" \
  -c "SELECT count(*) FROM kpi.churn_calibration('2026-03-09', '2026-03-10')" |
  grep -E "Time:|v1|model_version"
