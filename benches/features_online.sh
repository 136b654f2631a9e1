#!/usr/bin/env bash
# Online feature store benchmark, on synthetic snapshots (100,000 users × 60 days, the
# shape of the simulator's) in a fresh database and a fresh Redis prefix:
#   1. `nudge-train features materialize` into Redis, three times (each run writes a new
#      version and drops the previous one);
#   2. a release nudge-serve reading Redis, loaded by examples/features_load: closed loop
#      at concurrency 32, then open loop at fixed rates over 32 connections.
# Leaves nothing behind.
#   benches/features_online.sh [users, default 100000]
set -euo pipefail
cd "$(dirname "$0")/.."
USERS="${1:-100000}"
DB="nudge_bench_online_$$"
URL="postgres://postgres@127.0.0.1:5432/$DB"
REDIS="${REDIS_URL:-redis://127.0.0.1:6379}"
PREFIX="nudge-bench-$$:"
PORT="${NUDGE_BENCH_PORT:-18081}"
KEY="bench-hash-key-0123456789"
cargo build --release --quiet --bins --example features_load
cleanup() {
  [[ -n "${SERVER:-}" ]] && kill "$SERVER" 2>/dev/null && wait "$SERVER" 2>/dev/null || true
  psql -q -h 127.0.0.1 -U postgres -d postgres -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null
  redis-cli -u "$REDIS" --scan --pattern "${PREFIX}*" | xargs -r redis-cli -u "$REDIS" UNLINK >/dev/null
}
trap cleanup EXIT
target/release/nudge-train migrate --database-url "$URL" >/dev/null
echo "synthetic snapshots: $USERS users × 60 days"
psql -q -h 127.0.0.1 -U postgres -d "$DB" <<SQL
CREATE EXTENSION pgcrypto;
INSERT INTO gold.snapshots
SELECT h, d::date,
       (u + i) % 3, (u + i) % 9, (u + i) % 30, (u + i) % 8, (u + i) % 31, (u * 7 + i) % 120,
       CASE WHEN u % 10 = 0 THEN NULL ELSE ((u * 13 + i) % 500) / 7.0 END,
       (u + i) % 5, (u + i) % 11, (u + i) % 4, (u + i) % 12, (u + i) % 6, (u + i) % 20,
       (u + i) % 3, (u + i) % 9, (u + i) % 2,
       CASE WHEN (u + i) % 20 = 0 THEN NULL ELSE ((u + i) % 17) / 17.0 END,
       CASE WHEN u % 7 = 0 THEN NULL ELSE ((u * 3 + i) % 300) / 3.0 END,
       u % 50 = 0,
       CASE WHEN u % 4 = 0 THEN NULL ELSE ((u + i) % 90) / 4.0 END,
       CASE WHEN u % 5 = 0 THEN NULL ELSE (u % 400) END,
       (u * 11 + i) % 101, ((u * 17 + i) % 1000) / 10.0,
       (ARRAY['cold', 'cooling', 'warm', 'hot'])[1 + (u + i) % 4]
FROM (SELECT u, encode(hmac('u' || u, '$KEY', 'sha256'), 'hex') AS h
      FROM generate_series(0, $USERS - 1) u) users,
     generate_series(0, 59) i,
     LATERAL (SELECT '2026-01-06'::date + i AS d) day;
ANALYZE gold.snapshots;
SQL
for run in 1 2 3; do
  REDIS_URL="$REDIS" NUDGE_REDIS_PREFIX="$PREFIX" \
    target/release/nudge-train features materialize --database-url "$URL"
done
echo "redis memory: $(redis-cli -u "$REDIS" info memory | grep '^used_memory_human' | tr -d '\r')"
RUST_LOG=warn NUDGE_HASH_KEY="$KEY" NUDGE_SCHEDULER_TOKEN=bench-scheduler-token REDIS_URL="$REDIS" NUDGE_REDIS_PREFIX="$PREFIX" \
  target/release/nudge-serve --database-url "$URL" --listen "127.0.0.1:$PORT" &
SERVER=$!
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null && break; sleep 0.1; done
LOAD=(target/release/examples/features_load --url "http://127.0.0.1:$PORT" --users "$USERS" --concurrency 32
      --token bench-scheduler-token)
"${LOAD[@]}" --requests 20000 >/dev/null   # warm-up
"${LOAD[@]}" --requests 300000
for rate in 2000 5000 10000; do
  "${LOAD[@]}" --requests $((rate * 20)) --rate "$rate"
done
