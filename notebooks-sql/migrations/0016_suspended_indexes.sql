-- Indexes a bulk feature refresh dropped to write silver.events faster, with the
-- definitions that build them again. A refresh that rewrites most of the table loads it
-- without its secondary indexes and builds each once afterwards (one sort instead of
-- millions of insertions); rows stay here only in between, so a refresh that failed
-- there leaves them for the next one to build.
CREATE TABLE silver.suspended_indexes (
    name       text PRIMARY KEY,   -- schema-qualified, quoted
    definition text NOT NULL       -- pg_indexes.indexdef
);
