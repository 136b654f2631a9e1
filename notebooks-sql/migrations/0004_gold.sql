-- Gold layer: per-user daily aggregates and point-in-time feature snapshots. Filled by
-- `nudge-train features refresh` (notebooks-sql/gold/refresh.sql).
CREATE SCHEMA IF NOT EXISTS gold;

-- What each user did on each UTC day they did anything (from silver).
CREATE TABLE gold.user_days (
    user_hash            text        NOT NULL,
    day                  date        NOT NULL,
    sessions             integer     NOT NULL,
    app_opens            integer     NOT NULL,  -- app_opened events: "activity" in the labels
    in_app_events        integer     NOT NULL,
    last_session_end     timestamptz,
    contacts_created     integer     NOT NULL,
    contacts_viewed      integer     NOT NULL,
    outreach             integer     NOT NULL,
    last_outreach_at     timestamptz,
    contact_count        integer,               -- the book's size last reported that day
    notifs_sent          integer     NOT NULL,
    notifs_opened        integer     NOT NULL,
    notifs_dismissed     integer     NOT NULL,
    last_notification_at timestamptz,
    opted_out            boolean     NOT NULL,  -- turned push off that day
    pricing_views        integer     NOT NULL,
    paywall_views        integer     NOT NULL,
    trials               integer     NOT NULL,
    emails_opened        integer     NOT NULL,
    emails_clicked       integer     NOT NULL,
    prompted_sessions    integer     NOT NULL,  -- sessions opened from a push or an e-mail
    PRIMARY KEY (user_hash, day)
);
CREATE INDEX gold_user_days_day ON gold.user_days (day);

-- Daily snapshots: the features of every known user as of midnight UTC, computed from
-- events strictly before `as_of`. Columns are the feature catalog's
-- (notebooks-sql/gold/feature_catalog.yaml), in its order.
CREATE TABLE gold.snapshots (
    user_hash                    text    NOT NULL,
    as_of                        date    NOT NULL,
    sessions_1d                  integer NOT NULL,
    sessions_7d                  integer NOT NULL,
    sessions_30d                 integer NOT NULL,
    active_days_7d               integer NOT NULL,
    active_days_30d              integer NOT NULL,
    events_7d                    integer NOT NULL,
    hours_since_last_session     real,
    contacts_created_30d         integer NOT NULL,
    contacts_viewed_7d           integer NOT NULL,
    outreach_7d                  integer NOT NULL,
    outreach_30d                 integer NOT NULL,
    notifs_sent_7d               integer NOT NULL,
    notifs_sent_30d              integer NOT NULL,
    notifs_opened_7d             integer NOT NULL,
    notifs_opened_30d            integer NOT NULL,
    notifs_dismissed_7d          integer NOT NULL,
    open_rate_30d                real,
    hours_since_last_notification real,
    opted_out                    boolean NOT NULL,
    days_since_last_outreach     real,
    contact_count                integer,
    intent_score                 real    NOT NULL,
    magnetism_index              real    NOT NULL,
    magnetism_band               text    NOT NULL,
    PRIMARY KEY (user_hash, as_of)
);
CREATE INDEX gold_snapshots_as_of ON gold.snapshots (as_of);
