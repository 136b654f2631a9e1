#!/usr/bin/env bash
# Ingest throughput benchmark: a release nudge-serve on a fresh database, loaded through
# the capture endpoint with batches of 100 unique events. Leaves nothing behind.
#   benches/ingest_load.sh [extra ingest_load flags, e.g. --requests 10000 --concurrency 32]
set -euo pipefail
cd "$(dirname "$0")/.."
DB="nudge_bench_$$"
URL="postgres://postgres@127.0.0.1:5432/$DB"
PORT="${NUDGE_BENCH_PORT:-18080}"
TOKEN="phc_bench_token"
cargo build --release --quiet --bins --example ingest_load
cleanup() {
  [[ -n "${SERVER:-}" ]] && kill "$SERVER" 2>/dev/null && wait "$SERVER" 2>/dev/null || true
  psql -q -h 127.0.0.1 -U postgres -d postgres -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null
}
trap cleanup EXIT
target/release/nudge-train migrate --database-url "$URL" >/dev/null
RUST_LOG=warn NUDGE_HASH_KEY="bench-hash-key-0123456789" NUDGE_POSTHOG_TOKEN="$TOKEN" \
  target/release/nudge-serve --database-url "$URL" --listen "127.0.0.1:$PORT" &
SERVER=$!
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$PORT/readyz" >/dev/null && break; sleep 0.1; done
target/release/examples/ingest_load --url "http://127.0.0.1:$PORT/batch/" --token "$TOKEN" "$@"
echo "rows stored: $(psql -Atq -h 127.0.0.1 -U postgres -d "$DB" -c 'SELECT count(*) FROM bronze.events')"
