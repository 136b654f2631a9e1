#!/usr/bin/env bash
# Does the monthly retrain put the churn model right about the ranker's users? In a
# fresh database: the demo (USERS users, SEED), then nudge-serve on its registry scores
# every user through POST /v1/churn on the features of the loop's last day, which logs
# each score (serving.churn_scores). Then `nudge-train fit training/churn_14d.yaml
# --promote` retrains on everything the database now holds (history and closed loop),
# nudge-serve reloads, and every user is scored again. Prints, per champion and per arm
# (the arm of the user's latest /v1/score decision; a blank arm is all of them), the users
# the simulator has a true P(churn_14d) for on the day the snapshot describes, their mean
# served score and their mean true P, then both cards' headlines and the retrained
# model's data windows. (The demo's own churn watch, two weeks earlier, is left out.)
# Leaves nothing behind.
#   benches/churn_retrain.sh [USERS=2000] [SEED=7]
set -euo pipefail
USERS="${1:-2000}"
SEED="${2:-7}"
PORT="${NUDGE_BENCH_PORT:-18084}"
cd "$(dirname "$0")/.."
source benches/stores.sh
fresh_stores retrain
KEY="bench-hash-key-0123456789"
ADMIN="bench-admin-token"
cargo build --release --quiet --bins

export NUDGE_HASH_KEY="$KEY" DATABASE_URL="$URL" NUDGE_MODELS_DIR="$WORK/models"
target/release/nudge-train demo --users "$USERS" --seed "$SEED" >"$WORK/demo.log"
env RUST_LOG=warn NUDGE_SCHEDULER_TOKEN=bench NUDGE_ADMIN_TOKEN="$ADMIN" NUDGE_CONTROLLER_TICK_SECS=0 \
  target/release/nudge-serve --listen "127.0.0.1:$PORT" &
SERVER=$!
for _ in $(seq 600); do curl -sf "http://127.0.0.1:$PORT/readyz" >/dev/null && break; sleep 0.1; done

# Scores every simulated user, 1,000 per request, and waits until the log holds them.
score_everyone() {
  local before
  before=$(psql -h 127.0.0.1 -U postgres -d "$DB" -Atc "SELECT count(*) FROM serving.churn_scores")
  for ((first = 0; first < USERS; first += 1000)); do
    seq "$first" $((first + 999 < USERS - 1 ? first + 999 : USERS - 1)) |
      jq -Rn '{user_ids: [inputs | "u" + .]}' |
      curl -sf -H "Authorization: Bearer bench" -H "content-type: application/json" \
        --data-binary @- "http://127.0.0.1:$PORT/v1/churn" >/dev/null
  done
  for _ in $(seq 600); do
    (($(psql -h 127.0.0.1 -U postgres -d "$DB" -Atc "SELECT count(*) FROM serving.churn_scores") \
      >= before + USERS)) && return
    sleep 0.1
  done
  echo "churn scores not logged" >&2; exit 1
}

score_everyone
target/release/nudge-train fit training/churn_14d.yaml --promote >"$WORK/fit.log"
curl -sf -X POST -H "Authorization: Bearer $ADMIN" "http://127.0.0.1:$PORT/admin/reload" >/dev/null
score_everyone

psql -h 127.0.0.1 -U postgres -d "$DB" -c "
  WITH arms AS (
    SELECT DISTINCT ON (user_hash) user_hash, arm FROM serving.decisions
    ORDER BY user_hash, decided_at DESC)
  SELECT s.model_version AS champion, coalesce(a.arm, 'none') AS arm, count(*) AS users,
         round(100 * avg(s.score)::numeric, 1) AS served_pct,
         round(100 * avg(t.p_churn_14d)::numeric, 1) AS true_pct
  FROM serving.churn_scores s
  JOIN sim.churn_truth t ON t.user_hash = s.user_hash AND t.day = s.features_as_of - 1
  LEFT JOIN arms a ON a.user_hash = s.user_hash
  WHERE s.features_as_of = (SELECT max(features_as_of) FROM serving.churn_scores)
  GROUP BY ROLLUP (s.model_version, coalesce(a.arm, 'none'))
  HAVING s.model_version IS NOT NULL
  ORDER BY min(s.scored_at), grouping(coalesce(a.arm, 'none')), 2"
grep 'churn_14d.*test AUC' "$WORK/demo.log" | tail -1
grep 'churn_14d.*test AUC' "$WORK/fit.log" | tail -1
# The retrained model's data windows, from its card.
retrained=$(ls -t "$WORK/models/churn_14d" | grep -v json | head -1)
awk '/^## Data/ {on = 1; next} /^## / {on = 0} on && /^\|/' "$WORK/models/churn_14d/$retrained/card.md"
