-- The decision log's candidates as `json`, not `jsonb`: Postgres keeps the text the writer
-- sends after checking its syntax, instead of converting it to jsonb's binary form. The
-- log is written for every /v1/score answer and read rarely (nothing in the service reads
-- this column; an analyst's `->` and `json_array_elements` work on either type), so the
-- write is what counts: an insert of the demo's decisions costs Postgres 6.4 µs of CPU
-- per row with `json` against 9.6 µs with `jsonb` (BENCHMARKS.md, "Scoring load").
ALTER TABLE serving.decisions ALTER COLUMN candidates TYPE json USING candidates::json;
