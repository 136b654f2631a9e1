#!/usr/bin/env bash
# Instructions per POST /v1/score request: a release nudge-serve under valgrind's
# callgrind in the setup of benches/score_setup.sh (the demo's models and data, features
# and quotas in Redis, the policy in canary at 50 %), driven by wrk with
# benches/score.lua. Counting starts after a warm-up and stops before shutdown.
# Unlike throughput, which moves by 15 % or more from run to run and from machine to
# machine, the count repeats within about 0.5 %: it compares two builds of the server's
# own (user-space) work. It leaves out the kernel's part (the loopback sends and
# receives), Redis, Postgres and wrk. Valgrind runs the server's threads one at a time,
# about 50 times slower.
# Prints the requests counted, the instructions, their ratio, and the functions with the
# largest inclusive share. Leaves nothing behind.
#   benches/score_instructions.sh [users, default 2000] [seconds counted, default 15]
set -euo pipefail
cd "$(dirname "$0")/.."
USERS="${1:-2000}"
SECONDS_COUNTED="${2:-15}"
PORT="${NUDGE_BENCH_PORT:-18083}"
command -v valgrind >/dev/null || { echo "valgrind is required" >&2; exit 1; }
source benches/score_setup.sh

OUT="$WORK/callgrind.out"
BENCH_SERVER_WRAPPER="valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file=$OUT" \
  start_server "$PORT" REDIS_URL="$REDIS" NUDGE_REDIS_PREFIX="$PREFIX" 2>"$WORK/valgrind.log"
export BENCH_USERS="$USERS" BENCH_TOKEN="$TOKEN"
wrk -t1 -c8 -d5s -s benches/score.lua "http://127.0.0.1:$PORT/v1/score" >/dev/null # warm-up
callgrind_control --instr=on "$SERVER" >/dev/null 2>&1
result="$(wrk -t1 -c8 -d"${SECONDS_COUNTED}s" -s benches/score.lua "http://127.0.0.1:$PORT/v1/score")"
callgrind_control --instr=off "$SERVER" >/dev/null 2>&1
grep -E 'requests in|Non-2xx|Socket errors' <<<"$result" || true
# SIGINT: a graceful shutdown, after which valgrind writes the counts.
kill -INT "$SERVER"; wait "$SERVER" 2>/dev/null || true; SERVER=""
requests="$(awk '/requests in/ { print $1 }' <<<"$result")"
instructions="$(callgrind_annotate "$OUT" | awk '/PROGRAM TOTALS/ { gsub(",", "", $1); print $1 }')"
echo "== $requests requests, $instructions instructions: $((instructions / requests)) per request"
callgrind_annotate --inclusive=yes "$OUT" | grep -E '^ *[0-9,]+ +\( *[0-9.]+%\) +\?\?\?:nudge::' | head -15
