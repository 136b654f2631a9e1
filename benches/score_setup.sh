# The setup the POST /v1/score benchmarks share (sourced by benches/score_load.sh and
# benches/score_instructions.sh, from the repository's root):
#   1. `nudge-train demo` in a fresh database: simulated history, features, and every
#      model trained and promoted into a fresh registry (the ranker is the real GBM);
#   2. features materialised to a fresh Redis prefix; the shipped policy in canary at
#      50 %, so every request runs the model (both arms score) and the gates, and a send
#      reserves quota;
#   3. the demo's bulk writes settled (VACUUM ANALYZE, CHECKPOINT) before any measured
#      run, so that autovacuum and the checkpointer catching up on them are not counted
#      as the decision log's cost.
# Sets DB, URL, REDIS, PREFIX, WORK (benches/stores.sh), KEY and TOKEN; expects USERS.
command -v wrk >/dev/null || { echo "wrk is required (apt-get install wrk)" >&2; exit 1; }
source benches/stores.sh
fresh_stores score
KEY="bench-hash-key-0123456789"
TOKEN="bench-scheduler-token"
cargo build --release --quiet --bins

NUDGE_HASH_KEY="$KEY" target/release/nudge-train demo --database-url "$URL" \
  --models-dir "$WORK/models" --users "$USERS" >"$WORK/demo.log"
grep -A6 '^model cards' "$WORK/demo.log"
REDIS_URL="$REDIS" NUDGE_REDIS_PREFIX="$PREFIX" \
  target/release/nudge-train features materialize --database-url "$URL"
sed -e 's/^  mode: shadow /  mode: canary /' -e 's/^  canary_percent: 0 /  canary_percent: 50 /' \
  policy/policy.yaml >"$WORK/policy.yaml"
grep -q 'mode: canary' "$WORK/policy.yaml" && grep -q 'canary_percent: 50' "$WORK/policy.yaml"
psql -q -h 127.0.0.1 -U postgres -d "$DB" -c "VACUUM ANALYZE" -c "CHECKPOINT"

# Starts nudge-serve (release) on port $1 with this setup's data, the rest of the
# arguments before it as extra environment (e.g. REDIS_URL=…), and waits until it is
# ready; sets SERVER. With BENCH_SERVER_WRAPPER set (e.g. "valgrind --tool=callgrind …"),
# the server runs under it.
start_server() {
  local port="$1"; shift
  # shellcheck disable=SC2086 # the wrapper is a command line, split on purpose
  env RUST_LOG=warn NUDGE_HASH_KEY="$KEY" NUDGE_SCHEDULER_TOKEN="$TOKEN" "$@" \
    ${BENCH_SERVER_WRAPPER:-} target/release/nudge-serve --database-url "$URL" \
    --listen "127.0.0.1:$port" --models-dir "$WORK/models" --policy "$WORK/policy.yaml" &
  SERVER=$!
  for _ in $(seq 1200); do curl -sf "http://127.0.0.1:$port/readyz" >/dev/null && return; sleep 0.1; done
  echo "server not ready" >&2; exit 1
}
