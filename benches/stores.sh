# Fresh stores for one benchmark run (sourced from the repository's root):
#   fresh_stores <name>
# sets DB and URL (a database nudge_bench_<name>_<pid>, not created here), REDIS and
# PREFIX (a Redis key prefix of this run), WORK (a scratch directory), and a cleanup on
# exit that stops $SERVER if set, drops the database, unlinks the prefix's keys and
# removes WORK, so a run leaves nothing behind however it ends.
fresh_stores() {
  DB="nudge_bench_$1_$$"
  URL="postgres://postgres@127.0.0.1:5432/$DB"
  REDIS="${REDIS_URL:-redis://127.0.0.1:6379}"
  PREFIX="nudge-bench-$1-$$:"
  WORK="$(mktemp -d)"
  trap cleanup_stores EXIT
}

cleanup_stores() {
  [[ -n "${SERVER:-}" ]] && kill "$SERVER" 2>/dev/null && wait "$SERVER" 2>/dev/null || true
  psql -q -h 127.0.0.1 -U postgres -d postgres -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null
  redis-cli -u "$REDIS" --scan --pattern "${PREFIX}*" | xargs -r redis-cli -u "$REDIS" UNLINK >/dev/null
  rm -rf "$WORK"
}
