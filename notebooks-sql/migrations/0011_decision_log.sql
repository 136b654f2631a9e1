-- nudge-serve's decision log: one row per POST /v1/score answer, written in batches off
-- the request path. KPIs, the controller and the dashboard read it.
CREATE SCHEMA IF NOT EXISTS serving;

CREATE TABLE serving.decisions (
    request_id      uuid        PRIMARY KEY,
    decided_at      timestamptz NOT NULL,            -- the request's `now`
    logged_at       timestamptz NOT NULL DEFAULT now(),
    user_hash       text        COLLATE "C" NOT NULL,
    arm             text        NOT NULL,            -- off | shadow | canary | control | full
    cold_start      boolean     NOT NULL,            -- no stored features for the user
    model_name      text,
    model_version   text,                            -- null when no model ran
    policy_version  text        NOT NULL,
    threshold       real,
    sent            text,                            -- candidate id sent, if any
    model_choice    text,                            -- what the model rule would send
    baseline_choice text,                            -- what the baseline rule would send
    candidates      jsonb       NOT NULL             -- [{id, type, score, send, reason}]
);
CREATE INDEX serving_decisions_decided_at ON serving.decisions (decided_at);
