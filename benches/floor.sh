#!/usr/bin/env bash
# The machine's floor under the serving load benchmarks: examples/loopback_floor (axum,
# tokio, redis-rs and mimalloc as in nudge-serve, doing only nudge-serve's Redis reads
# and answering fixed bodies of nudge-serve's sizes) under the same load generators and
# concurrency as benches/score_load.sh and benches/features_online.sh:
#   1. GET /static, no Redis: HTTP on loopback alone (wrk);
#   2. GET /v1/features/{id}: one HMGET (wrk, and examples/features_load in closed loop);
#   3. POST /v1/score: HMGET + ZRANGE in one round trip (wrk with benches/score.lua).
# Prints throughput, latency percentiles and the CPU seconds of server, Redis and wrk.
# Leaves nothing behind.
#   benches/floor.sh [seconds per run, default 20]
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_PER_RUN="${1:-20}"
USERS=2000
REDIS="${REDIS_URL:-redis://127.0.0.1:6379}"
PREFIX="nudge-floor-$$:"
PORT="${NUDGE_BENCH_PORT:-18090}"
command -v wrk >/dev/null || { echo "wrk is required (apt-get install wrk)" >&2; exit 1; }
cargo build --release --quiet --example loopback_floor --example features_load
cleanup() {
  [[ -n "${SERVER:-}" ]] && kill "$SERVER" 2>/dev/null && wait "$SERVER" 2>/dev/null || true
  redis-cli -u "$REDIS" --scan --pattern "${PREFIX}*" | xargs -r redis-cli -u "$REDIS" UNLINK >/dev/null
  rm -f "${WRK_SCRIPT:-}"
}
trap cleanup EXIT

# A live feature hash like a materialisation's: a version field and one row per user,
# of the size of nudge-serve's encoded rows.
ROW='["2026-03-06",1,4,17,3,12,88,13.571428,2,7,1,5,2,1,14,6,0.42857143,21.333334,false,3,11.25,0.25,41,37.5,"cooling","Europe/Berlin"]'
{ echo "HSET ${PREFIX}features:live :version floor"
  for u in $(seq 0 $((USERS - 1))); do echo "HSET ${PREFIX}features:live u$u $ROW"; done
} | redis-cli -u "$REDIS" >/dev/null

WRK_SCRIPT="$(mktemp --suffix=.lua)"
cat >"$WRK_SCRIPT" <<LUA
math.randomseed(1)
request = function()
  return wrk.format("GET", "/v1/features/u" .. math.random(0, $USERS - 1))
end
LUA

cpu_seconds() { # user+system CPU seconds of a process so far
  awk -v hz="$(getconf CLK_TCK)" '{ printf "%.2f", ($14 + $15) / hz }' "/proc/$1/stat"
}

measure() { # $1 = label, $2 = path, $3 = wrk script (or "")
  local label="$1" path="$2" script="$3" redis_pid server_before redis_before
  local args=(-t2 -c32 -d"${SECONDS_PER_RUN}s" --latency)
  [[ -n "$script" ]] && args+=(-s "$script")
  wrk -t1 -c32 -d3s ${script:+-s "$script"} "http://127.0.0.1:$PORT$path" >/dev/null # warm-up
  redis_pid="$(pgrep -x redis-server | head -1)"
  server_before="$(cpu_seconds "$SERVER")"; redis_before="$(cpu_seconds "$redis_pid")"
  echo "== $label: wrk ${args[*]}"
  /usr/bin/time -f "wrk CPU: %U s user + %S s system" wrk "${args[@]}" "http://127.0.0.1:$PORT$path" \
    | grep -E 'Latency|50%|90%|99%|Requests/sec|requests in|Non-2xx|Socket errors'
  echo "server CPU: $(echo "$(cpu_seconds "$SERVER") - $server_before" | bc) s;" \
       "redis CPU: $(echo "$(cpu_seconds "$redis_pid") - $redis_before" | bc) s"
}

start() { # extra arguments for the floor server
  target/release/examples/loopback_floor --listen "127.0.0.1:$PORT" --prefix "$PREFIX" "$@" &
  SERVER=$!
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$PORT/static" >/dev/null && break; sleep 0.1; done
}

start --redis-url "$REDIS"
measure "static answer, no Redis" /static ""
measure "GET /v1/features, one HMGET" /v1/features/u1 "$WRK_SCRIPT"
echo "== GET /v1/features, one HMGET: examples/features_load, closed loop, concurrency 32"
target/release/examples/features_load --url "http://127.0.0.1:$PORT" --users "$USERS" \
  --concurrency 32 --token unused --requests 20000 >/dev/null
target/release/examples/features_load --url "http://127.0.0.1:$PORT" --users "$USERS" \
  --concurrency 32 --token unused --requests 300000
export BENCH_USERS="$USERS"
measure "POST /v1/score, HMGET + ZRANGE" /v1/score benches/score.lua
kill "$SERVER"; wait "$SERVER" 2>/dev/null || true; SERVER=""
start
measure "POST /v1/score, no Redis" /v1/score benches/score.lua
