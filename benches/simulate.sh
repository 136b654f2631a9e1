#!/usr/bin/env bash
# Simulator benchmark: `nudge-train simulate` (release) into a fresh database, timed, with
# peak memory. Leaves nothing behind.
#   benches/simulate.sh [simulate flags; default --users 100000 --days 60 --seed 1]
set -euo pipefail
cd "$(dirname "$0")/.."
DB="nudge_bench_sim_$$"
URL="postgres://postgres@127.0.0.1:5432/$DB"
cargo build --release --quiet --bin nudge-train
cleanup() {
  psql -q -h 127.0.0.1 -U postgres -d postgres -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null
}
trap cleanup EXIT
target/release/nudge-train migrate --database-url "$URL" >/dev/null
ARGS=("$@")
[[ ${#ARGS[@]} -eq 0 ]] && ARGS=(--users 100000 --days 60 --seed 1)
/usr/bin/time -f "wall %e s, peak RSS %M KiB, CPU %P (nudge-train only)" \
  env NUDGE_HASH_KEY="bench-hash-key-0123456789" \
  target/release/nudge-train simulate --database-url "$URL" "${ARGS[@]}"
echo "rows stored: $(psql -Atq -h 127.0.0.1 -U postgres -d "$DB" -c 'SELECT count(*) FROM bronze.events')"
