#!/usr/bin/env bash
# POST /v1/score load benchmark against a release nudge-serve on loopback, with wrk.
#   1. The setup of benches/score_setup.sh: the demo's models and data, features in
#      Redis, the policy in canary at 50 %.
#   2. wrk, 5 candidates per request, users drawn uniformly: concurrency 32 for 20 s,
#      with Redis (features and quotas), then with the embedded store.
# Prints throughput, latency percentiles, the CPU seconds used by the server, Redis,
# Postgres (the decision log's inserts) and wrk, and the decisions logged and dropped.
# Leaves nothing behind.
#   benches/score_load.sh [users, default 2000] [seconds, default 20]
set -euo pipefail
cd "$(dirname "$0")/.."
USERS="${1:-2000}"
SECONDS_PER_RUN="${2:-20}"
PORT="${NUDGE_BENCH_PORT:-18082}"
source benches/score_setup.sh

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
  start_server "$PORT" "$@"
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
