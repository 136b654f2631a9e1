-- Bronze layer: raw product events as ingested, after the catalog's whitelist.
-- User ids are stored only as keyed hashes (HMAC-SHA-256, lowercase hex).
CREATE SCHEMA IF NOT EXISTS bronze;

CREATE TABLE bronze.events (
    uuid        uuid        PRIMARY KEY,          -- idempotency key: re-sent events store nothing
    event       text        NOT NULL,             -- catalog event name
    user_hash   text        NOT NULL,             -- keyed hash of the distinct id
    ts          timestamptz NOT NULL,             -- when it happened (client time)
    received_at timestamptz NOT NULL DEFAULT now(),
    properties  jsonb       NOT NULL DEFAULT '{}'::jsonb,  -- whitelisted properties only
    source      text        NOT NULL CHECK (source IN ('webhook', 'capture', 'simulator'))
);
-- Only the primary key: bronze is append-only and read wholesale into silver, whose
-- tables carry the indexes queries need. Every extra index here costs ingest throughput.

-- Consent changes, kept apart so ingest can decide per event whether it may be stored.
CREATE TABLE bronze.consent_changes (
    event_uuid uuid        PRIMARY KEY,
    user_hash  text        NOT NULL,
    changed_at timestamptz NOT NULL,
    granted    boolean     NOT NULL
);
CREATE INDEX consent_changes_user ON bronze.consent_changes (user_hash, changed_at);

-- Events that failed validation: why, when and from where. Never the payload, never an id.
CREATE TABLE bronze.rejects (
    id          bigserial   PRIMARY KEY,
    received_at timestamptz NOT NULL DEFAULT now(),
    source      text        NOT NULL,
    event       text,                              -- catalog event name, NULL when unknown
    reason      text        NOT NULL,
    field       text
);
CREATE INDEX rejects_received ON bronze.rejects (received_at);
