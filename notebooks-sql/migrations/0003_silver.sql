-- Silver layer: bronze events cleaned, identity-stitched and sessionised. Filled by
-- `nudge-train features refresh` (notebooks-sql/silver/refresh.sql), day range by day range.
CREATE SCHEMA IF NOT EXISTS silver;

-- Which user an anonymous or aliased distinct id belongs to ($identify, $create_alias).
-- When one id was linked to several users, the earliest link wins.
CREATE TABLE silver.identity (
    distinct_hash text        PRIMARY KEY,   -- keyed hash of the anonymous / aliased id
    user_hash     text        NOT NULL,      -- keyed hash of the identified user
    linked_at     timestamptz NOT NULL,
    stitched      boolean     NOT NULL DEFAULT false  -- earlier silver events moved to user_hash
);

-- Every stored event, attributed to its stitched user. Bronze already holds each uuid
-- once, and refreshes replace whole days, so the only index is the day's: random-order
-- indexes (uuid, user) would cost most of a refresh's time.
CREATE TABLE silver.events (
    uuid          uuid        NOT NULL,
    user_hash     text        NOT NULL,      -- stitched user
    distinct_hash text        NOT NULL,      -- the id the event was sent under
    event         text        NOT NULL,
    ts            timestamptz NOT NULL,
    day           date        NOT NULL,      -- UTC day of ts
    in_app        boolean     NOT NULL,      -- happened inside the app (counts for sessions)
    properties    jsonb       NOT NULL
);
CREATE INDEX silver_events_day ON silver.events (day);
-- The label views look up a user's next app open or trial after a moment.
CREATE INDEX silver_events_returns ON silver.events (user_hash, ts) WHERE event IN ('app_opened', 'trial_started');

-- Sessions: in-app events of one user with gaps under 30 minutes. A session also ends at
-- midnight UTC (as Google Analytics ends them), so each day's sessions depend on that
-- day's events alone and a day can be refreshed on its own.
CREATE TABLE silver.sessions (
    user_hash  text        NOT NULL,
    started_at timestamptz NOT NULL,
    ended_at   timestamptz NOT NULL,
    day        date        NOT NULL,
    events     integer     NOT NULL,
    source     text        NOT NULL,         -- push | email | organic: the first app_opened's source
    PRIMARY KEY (user_hash, started_at)
);
CREATE INDEX silver_sessions_day ON silver.sessions (day);

-- Each notification sent, with what became of it.
CREATE TABLE silver.notifications (
    notification_id text        PRIMARY KEY,
    user_hash       text        NOT NULL,
    sent_at         timestamptz NOT NULL,
    notif_type      text        NOT NULL,
    arm             text,
    propensity      real,
    model_version   text,
    opened_at       timestamptz,
    dismissed_at    timestamptz
);
CREATE INDEX silver_notifications_user_sent ON silver.notifications (user_hash, sent_at);

-- What each refresh covered, for freshness reports.
CREATE TABLE silver.refreshes (
    id           bigserial   PRIMARY KEY,
    from_day     date        NOT NULL,
    to_day       date        NOT NULL,       -- excluded
    started_at   timestamptz NOT NULL,       -- events received before this are covered
    finished_at  timestamptz NOT NULL DEFAULT now(),
    events       bigint      NOT NULL
);
