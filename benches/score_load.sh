#!/usr/bin/env bash
# POST /v1/score load benchmark against a release nudge-serve on loopback, with wrk.
#   1. `nudge-train demo` in a fresh database: simulated history, features, and every
#      model trained and promoted into a fresh registry (the ranker is the real GBM).
#   2. Features materialised to a fresh Redis prefix; policy in canary at 50 %, so every
#      request runs the model (both arms score) and the gates, and a send reserves quota.
#   3. wrk, 5 candidates per request, users drawn uniformly: concurrency 32 for 20 s,
#      with Redis (features and quotas), then with the embedded store.
# Prints throughput, latency percentiles, the CPU seconds used by the server, Redis,
# Postgres (the decision log's inserts) and wrk, and the decisions logged and dropped.
# Leaves nothing behind.
#   benches/score_load.sh [users, default 2000] [seconds, default 20]
set -euo pipefail
cd "$(dirname "$0")/.."
USERS="${1:-2000}"
SECONDS_PER_RUN="${2:-20}"
DB="nudge_bench_score_$$"
URL="postgres://postgres@127.0.0.1:5432/$DB"
REDIS="${REDIS_URL:-redis://127.0.0.1:6379}"
PREFIX="nudge-bench-$$:"
PORT="${NUDGE_BENCH_PORT:-18082}"
KEY="bench-hash-key-0123456789"
TOKEN="bench-scheduler-token"
WORK="$(mktemp -d)"
command -v wrk >/dev/null || { echo "wrk is required (apt-get install wrk)" >&2; exit 1; }
cargo build --release --quiet --bins
cleanup() {
  [[ -n "${SERVER:-}" ]] && kill "$SERVER" 2>/dev/null && wait "$SERVER" 2>/dev/null || true
  psql -q -h 127.0.0.1 -U postgres -d postgres -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null
  redis-cli -u "$REDIS" --scan --pattern "${PREFIX}*" | xargs -r redis-cli -u "$REDIS" UNLINK >/dev/null
  rm -rf "$WORK"
}
trap cleanup EXIT

NUDGE_HASH_KEY="$KEY" target/release/nudge-train demo --database-url "$URL" \
  --models-dir "$WORK/models" --users "$USERS" >"$WORK/demo.log"
grep -A6 '^model cards' "$WORK/demo.log"
REDIS_URL="$REDIS" NUDGE_REDIS_PREFIX="$PREFIX" \
  target/release/nudge-train features materialize --database-url "$URL"
sed -e 's/^  mode: shadow /  mode: canary /' -e 's/^  canary_percent: 0 /  canary_percent: 50 /' \
  policy/policy.yaml >"$WORK/policy.yaml"
grep -q 'mode: canary' "$WORK/policy.yaml" && grep -q 'canary_percent: 50' "$WORK/policy.yaml"
# The demo's bulk writes settle before the measured runs, so that autovacuum and the
# checkpointer catching up on them are not counted as the decision log's cost.
psql -q -h 127.0.0.1 -U postgres -d "$DB" -c "VACUUM ANALYZE" -c "CHECKPOINT"

cpu_seconds() { # user+system CPU seconds of a process so far
  awk -v hz="$(getconf CLK_TCK)" '{ printf "%.2f", ($14 + $15) / hz }' "/proc/$1/stat"
}
postgres_ticks() { # "pid ticks" of every Postgres process (backends come and go)
  for pid in $(pgrep -u postgres); do
    awk -v pid="$pid" '{ print pid, $14 + $15 }' "/proc/$pid/stat" 2>/dev/null || true
  done
}
postgres_seconds_since() { # CPU seconds Postgres used since the ticks in file $1
  postgres_ticks | awk -v hz="$(getconf CLK_TCK)" 'NR == FNR { before[$1] = $2; next }
    { used += $2 - before[$1] } END { printf "%.2f", used / hz }' "$1" -
}

run() { # $1 = label; the rest = extra environment for nudge-serve
  local label="$1"; shift
  env RUST_LOG=warn NUDGE_HASH_KEY="$KEY" NUDGE_SCHEDULER_TOKEN="$TOKEN" "$@" \
    target/release/nudge-serve --database-url "$URL" --listen "127.0.0.1:$PORT" \
    --models-dir "$WORK/models" --policy "$WORK/policy.yaml" &
  SERVER=$!
  for _ in $(seq 300); do curl -sf "http://127.0.0.1:$PORT/readyz" >/dev/null && break; sleep 0.1; done
  curl -sf "http://127.0.0.1:$PORT/readyz" >/dev/null || { echo "server not ready" >&2; exit 1; }
  export BENCH_USERS="$USERS" BENCH_TOKEN="$TOKEN"
  wrk -t1 -c32 -d5s -s benches/score.lua "http://127.0.0.1:$PORT/v1/score" >/dev/null # warm-up
  local redis_pid server_before redis_before
  redis_pid="$(pgrep -x redis-server | head -1)"
  server_before="$(cpu_seconds "$SERVER")"; redis_before="$(cpu_seconds "$redis_pid")"
  postgres_ticks >"$WORK/postgres.ticks"
  echo "== $label: wrk -t2 -c32 -d${SECONDS_PER_RUN}s, 5 candidates, $USERS users"
  /usr/bin/time -f "wrk CPU: %U s user + %S s system" \
    wrk -t2 -c32 -d"${SECONDS_PER_RUN}s" --latency -s benches/score.lua "http://127.0.0.1:$PORT/v1/score" \
    | grep -E 'Latency|50%|90%|99%|Requests/sec|requests in|Non-2xx|Socket errors'
  echo "server CPU: $(echo "$(cpu_seconds "$SERVER") - $server_before" | bc) s;" \
       "redis CPU: $(echo "$(cpu_seconds "$redis_pid") - $redis_before" | bc) s;" \
       "postgres CPU: $(postgres_seconds_since "$WORK/postgres.ticks") s"
  local metrics
  metrics="$(curl -s "http://127.0.0.1:$PORT/metrics")"
  grep -E '^nudge_decisions_total' <<<"$metrics" | sort | head -12
  # Throughput only counts if every decision was logged: a full queue drops (and counts).
  echo "decision log: $(awk '/^nudge_decision_log_written_total /{ print $2 }' <<<"$metrics") written," \
       "$(awk '/^nudge_decision_log_dropped_total /{ d = $2 } END { print d + 0 }' <<<"$metrics") dropped"
  kill "$SERVER"; wait "$SERVER" 2>/dev/null || true; SERVER=""
}

run "redis" REDIS_URL="$REDIS" NUDGE_REDIS_PREFIX="$PREFIX"
run "embedded"
