#!/usr/bin/env bash
# Where the notification ranker's gap to the simulator's oracle comes from: the ranker's
# boosted trees fitted on the committed spec's features, then on those plus one group of
# extra columns at a time (benches/ranker_gap.sql), each measured on the same test
# examples against the oracle (given what the logs record) and against the truth given
# the hidden lapse as well. A group that closes a gap names what the features miss.
# Fresh database, simulator seed 1, 60 days; leaves nothing behind.
#   benches/ranker_gap.sh [users, default 30000]
set -euo pipefail
cd "$(dirname "$0")/.."
USERS="${1:-30000}"
DB="nudge_bench_gap_$$"
export DATABASE_URL="postgres://postgres@127.0.0.1:5432/$DB"
export NUDGE_HASH_KEY="bench-hash-key-0123456789"
WORK="$(mktemp -d)"
cargo build --release --quiet --bins
cleanup() {
  psql -q -h 127.0.0.1 -U postgres -d postgres -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null
  rm -rf "$WORK"
}
trap cleanup EXIT
target/release/nudge-train migrate >/dev/null
target/release/nudge-train simulate --users "$USERS" --days 60 --seed 1 >"$WORK/simulate.log" 2>&1
head -1 "$WORK/simulate.log"
target/release/nudge-train features refresh --from 2026-01-04 --to 2026-03-06 >"$WORK/refresh.log" 2>&1
tail -1 "$WORK/refresh.log"
psql -q -h 127.0.0.1 -U postgres -d "$DB" -f benches/ranker_gap.sql

# One spec per row: the committed ranker spec on the diagnostic table, boosted trees only
# (the champion of every committed run), with `extra` appended to its numeric features.
fit() {
  local name="$1" extra="$2" spec="$WORK/$1.yaml"
  sed -e "s#^name: notif_ranker#name: $name#" \
      -e 's#relation: gold.training_notif_ranker#relation: public.ranker_gap#' \
      -e "s#hours_from_usual_session\]#hours_from_usual_session${extra}]#" \
      -e '/name: logistic, algorithm: logistic/d' training/notif_ranker.yaml >"$spec"
  grep -q "relation: public.ranker_gap" "$spec" && grep -q "^name: $name" "$spec" \
    || { echo "the ranker spec changed shape; update $0" >&2; exit 1; }
  target/release/nudge-train fit "$spec" --models-dir "$WORK/models" >/dev/null
  jq -r '[.oracle.model_auc, .oracle.oracle_auc, .oracle.hidden_state_auc, .oracle.examples] | @tsv' \
    "$WORK"/models/"$name"/*/card.json |
    while IFS=$'\t' read -r model oracle hidden examples; do
      local added="${extra#, }"
      printf '| %s | %s | %.4f | %.4f | %.4f | %.4f | %.4f | %d |\n' "$name" "${added:-—}" "$model" \
        "$oracle" "$(echo "$oracle - $model" | bc -l)" "$hidden" "$(echo "$hidden - $model" | bc -l)" "$examples"
    done
}
psql -Atq -h 127.0.0.1 -U postgres -d "$DB" -F ' ' -c "
  SELECT round(100.0 * avg((lapsed = 1)::int), 1), round(100.0 * avg(returned_24h_after_notif::int) FILTER (WHERE lapsed = 1), 2)
  FROM public.ranker_gap" | {
  read -r share returned
  echo "sends to lapsed users: $share % of all (returned within 24 h: $returned %)"
}
echo "| features | added | GBM test AUC | oracle AUC | gap | hidden-state AUC | gap | test examples |"
echo "|---|---|---|---|---|---|---|---|"
fit committed ""
fit intraday ", app_opens_24h_before_send, hours_since_app_open_at_send"
fit traits ", activity, fatigue_sensitivity"
fit lapse ", lapsed"
fit open_probability ", p_open"
