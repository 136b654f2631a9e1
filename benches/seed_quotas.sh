#!/usr/bin/env bash
# How long nudge-serve's start-up seeding of the quota store takes (the day's sends and,
# under the shipped policy's send budget, every user's send load, read from
# silver.notifications): USERS users with SENDS sends each, one every 38 h back from
# the newest (so the budget's 48-day memory holds about 30 of them), in a fresh database;
# the server is started once embedded and once on a fresh Redis prefix, and its
# "quotas seeded" log line (users, sends, loads, elapsed_ms) is printed with the server's
# peak resident memory once seeded (VmHWM; embedded, that includes the quotas it holds).
#   benches/seed_quotas.sh [USERS=100000] [SENDS=40]
set -euo pipefail
USERS="${1:-100000}"
SENDS="${2:-40}"
cd "$(dirname "$0")/.."
source benches/stores.sh
fresh_stores seed
cargo build --release --quiet --bins

target/release/nudge-train migrate --database-url "$URL" >/dev/null
psql -q -h 127.0.0.1 -U postgres -d "$DB" -c "
  INSERT INTO silver.notifications (notification_id, user_hash, sent_at, notif_type)
  SELECT 'n' || u || '-' || k, md5(u::text),
         timestamptz '2026-03-01' - k * interval '38 hours' - (u % 86400) * interval '1 second',
         'contact_reminder'
  FROM generate_series(1, $USERS) u, generate_series(0, $SENDS - 1) k" \
  -c "VACUUM ANALYZE silver.notifications" -c "CHECKPOINT"
echo "silver.notifications: $((USERS * SENDS)) sends of $USERS users"

for store in embedded redis; do
  extra=()
  [[ $store == redis ]] && extra=(REDIS_URL="$REDIS" NUDGE_REDIS_PREFIX="$PREFIX")
  env RUST_LOG=info NUDGE_HASH_KEY=bench-hash-key-0123456789 NUDGE_SCHEDULER_TOKEN=bench "${extra[@]}" \
    target/release/nudge-serve --database-url "$URL" --listen 127.0.0.1:0 \
    --models-dir "$WORK/models" --policy policy/policy.yaml >"$WORK/$store.log" 2>&1 &
  SERVER=$!
  for _ in $(seq 1200); do grep -q "quotas" "$WORK/$store.log" && break; sleep 0.1; done
  peak=$(awk '/VmHWM/ {print $2 / 1024 " MiB"}' "/proc/$SERVER/status")
  kill "$SERVER"; wait "$SERVER" 2>/dev/null || true; SERVER=
  echo "$store: $(grep -m1 "quotas" "$WORK/$store.log" | sed 's/\x1b\[[0-9;]*m//g')"
  echo "$store: peak resident memory once seeded: $peak"
done
