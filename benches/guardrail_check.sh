#!/usr/bin/env bash
# What one guardrail check reads from Postgres on a log of production size, in a fresh
# database: USERS users (half canary, half control), each with a /v1/score decision every
# 16 hours from 2026-03-16 to 03-30 (about 10 a week; every third one sends), a session
# every day of March for two users in three, an app_opened from a push half an hour after
# each send for one user in four (silver.notifications is left empty: no open rate), a
# push opt-out for one user in 49, and an `$exception` for one user in 97 (a third of
# them fatal: crashes). A check at 2026-03-30
# reads the window's KPIs (`kpi.arms` over the last 7 days) and the D7 of the users
# first decided in the week that ended 8 days before (`kpi.first_seen` grouped by arm,
# as `kpi::d7_by_arm` sends it), as a fixed test's check does; then what a sequential
# test's check reads when the rollout began with the log (2026-03-16): the KPIs of all
# two weeks and the D7 of every user first decided up to 8 days before. Prints the row
# counts, the results and three timed runs of each (psql \timing).
#   benches/guardrail_check.sh [USERS=100000]
set -euo pipefail
USERS="${1:-100000}"
cd "$(dirname "$0")/.."
source benches/stores.sh
fresh_stores guardrail
cargo build --release --quiet --bin nudge-train

target/release/nudge-train migrate --database-url "$URL" >/dev/null
psql -q -h 127.0.0.1 -U postgres -d "$DB" \
  -c "INSERT INTO serving.decisions (request_id, decided_at, user_hash, arm, cold_start,
        policy_version, threshold, sent, candidates)
      SELECT gen_random_uuid(),
             timestamptz '2026-03-16' + k * interval '16 hours' + (u % 3600) * interval '1 second',
             md5(u::text), CASE WHEN u % 2 = 0 THEN 'canary' ELSE 'control' END, false, 'p', 0.3,
             CASE WHEN (u + k) % 3 = 0 THEN 'n-' || u || '-' || k END, '[]'
      FROM generate_series(1, $USERS) u, generate_series(0, 20) k" \
  -c "INSERT INTO silver.sessions (user_hash, started_at, ended_at, day, events, source)
      SELECT md5(u::text), timestamptz '2026-03-01 18:00' + d * interval '1 day',
             timestamptz '2026-03-01 18:10' + d * interval '1 day', date '2026-03-01' + d, 3,
             'organic'
      FROM generate_series(1, $USERS) u, generate_series(0, 29) d
      WHERE u % 3 <> 0" \
  -c "INSERT INTO silver.events (uuid, user_hash, distinct_hash, event, ts, day, in_app, properties)
      SELECT gen_random_uuid(), d.user_hash, d.user_hash, 'app_opened', d.decided_at + interval '30 minutes',
             (d.decided_at + interval '30 minutes')::date, true, '{\"source\": \"push\"}'
      FROM serving.decisions d
      WHERE d.sent IS NOT NULL AND ('x' || substr(d.user_hash, 1, 8))::bit(32)::int % 4 = 0" \
  -c "INSERT INTO silver.events (uuid, user_hash, distinct_hash, event, ts, day, in_app, properties)
      SELECT gen_random_uuid(), md5(u::text), md5(u::text), 'push_opt_out', timestamptz '2026-03-26 12:00',
             '2026-03-26', true, '{}'
      FROM generate_series(1, $USERS) u WHERE u % 49 = 0" \
  -c "INSERT INTO silver.events (uuid, user_hash, distinct_hash, event, ts, day, in_app, properties)
      SELECT gen_random_uuid(), md5(u::text), md5(u::text), '\$exception', timestamptz '2026-03-27 09:00',
             '2026-03-27', false,
             jsonb_build_object('\$exception_level', CASE WHEN u % 3 = 0 THEN 'fatal' ELSE 'error' END)
      FROM generate_series(1, $USERS) u WHERE u % 97 = 0" \
  -c "VACUUM ANALYZE" -c "CHECKPOINT"
psql -h 127.0.0.1 -U postgres -d "$DB" -At \
  -c "SELECT 'decisions: ' || count(*) FROM serving.decisions" \
  -c "SELECT 'sessions: ' || count(*) FROM silver.sessions" \
  -c "SELECT 'events: ' || count(*) FROM silver.events"
ARMS="SELECT * FROM kpi.arms('2026-03-23', '2026-03-30', '2026-03-30')"
D7="SELECT arm, count(retained_d7), count(*) FILTER (WHERE retained_d7)
    FROM kpi.first_seen('2026-03-15', '2026-03-22', '2026-03-30') GROUP BY arm ORDER BY arm"
psql -h 127.0.0.1 -U postgres -d "$DB" -c "$ARMS" -c "$D7"
echo "== kpi.arms over the window"
psql -h 127.0.0.1 -U postgres -d "$DB" -c '\timing on' -c "$ARMS" -c "$ARMS" -c "$ARMS" |
  grep "Time:"
echo "== D7 of the users first decided 8 to 15 days before"
psql -h 127.0.0.1 -U postgres -d "$DB" -c '\timing on' -c "$D7" -c "$D7" -c "$D7" | grep "Time:"
ARMS_ALL="SELECT * FROM kpi.arms('2026-03-16', '2026-03-30', '2026-03-30')"
D7_ALL="SELECT arm, count(retained_d7), count(*) FILTER (WHERE retained_d7)
    FROM kpi.first_seen('2026-03-16', '2026-03-22', '2026-03-30') GROUP BY arm ORDER BY arm"
psql -h 127.0.0.1 -U postgres -d "$DB" -c "$ARMS_ALL" -c "$D7_ALL"
echo "== sequential: kpi.arms since the rollout began (two weeks)"
psql -h 127.0.0.1 -U postgres -d "$DB" -c '\timing on' -c "$ARMS_ALL" -c "$ARMS_ALL" -c "$ARMS_ALL" |
  grep "Time:"
echo "== sequential: D7 of the users first decided since the rollout began, 8 days before"
psql -h 127.0.0.1 -U postgres -d "$DB" -c '\timing on' -c "$D7_ALL" -c "$D7_ALL" -c "$D7_ALL" |
  grep "Time:"
