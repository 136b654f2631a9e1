-- The simulator's ground truth: the exact probabilities it drew each outcome from.
-- Only simulated data lands here; production databases keep these tables empty.
-- "Activity" in every label is an app_opened event (a session).
CREATE SCHEMA IF NOT EXISTS sim;

-- The simulated population this database holds (at most one).
CREATE TABLE sim.runs (
    id          smallint    PRIMARY KEY DEFAULT 1 CHECK (id = 1),
    seed        bigint      NOT NULL,
    users       integer     NOT NULL,
    days        integer     NOT NULL,
    start_date  date        NOT NULL,
    exploration real        NOT NULL,
    simulator   integer     NOT NULL,         -- version of the behavioural model that drew it
    started_at  timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz,
    summary     jsonb
);

-- Latent traits of each simulated user, keyed like the events (keyed hash of the app id).
CREATE TABLE sim.users (
    user_hash           text     PRIMARY KEY,
    cohort              text     NOT NULL CHECK (cohort IN ('existing', 'new')),
    signup_date         date     NOT NULL,
    timezone            text     NOT NULL,
    preferred_hour      smallint NOT NULL,   -- local hour of most app use
    notify_hour         smallint NOT NULL,   -- local hour of the scheduler's daily slot
    activity            real     NOT NULL,   -- organic sessions per day at full engagement
    fatigue_sensitivity real     NOT NULL,
    price_sensitivity   real     NOT NULL,
    outreach_habit      real     NOT NULL,
    in_truth            boolean  NOT NULL    -- false for users who change consent (left out of the truth)
);

-- Every notification sent: P(the push is opened) and P(any app open within 24 h).
-- returned_24h is NULL when the window runs past the simulated horizon.
CREATE TABLE sim.notification_truth (
    notification_id text        PRIMARY KEY,
    user_hash       text        NOT NULL,
    sent_at         timestamptz NOT NULL,
    notif_type      text        NOT NULL,
    propensity      real,
    p_open          real        NOT NULL,
    p_return_24h    real,
    returned_24h    boolean
);

-- Every active user-day (UTC): P(no app open in the next 14 days).
CREATE TABLE sim.churn_truth (
    user_hash   text    NOT NULL,
    day         date    NOT NULL,
    p_churn_14d real    NOT NULL,
    churned_14d boolean,
    PRIMARY KEY (user_hash, day)
);

-- Every paywall view: P(trial within 24 h) and P(no app open within 24 h).
CREATE TABLE sim.paywall_truth (
    event_uuid  uuid        PRIMARY KEY,
    user_hash   text        NOT NULL,
    viewed_at   timestamptz NOT NULL,
    placement   text        NOT NULL,
    p_trial     real        NOT NULL,
    p_bounce    real,
    trial_24h   boolean     NOT NULL,
    bounced_24h boolean
);
