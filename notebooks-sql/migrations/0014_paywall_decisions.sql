-- nudge-serve's paywall decisions: one row per POST /v1/paywall answer, written in
-- batches off the request path beside serving.decisions.
CREATE TABLE serving.paywall_decisions (
    request_id     uuid        PRIMARY KEY,
    decided_at     timestamptz NOT NULL,            -- the request's `now`
    logged_at      timestamptz NOT NULL DEFAULT now(),
    user_hash      text        COLLATE "C" NOT NULL,
    placement      text        NOT NULL,
    arm            text        NOT NULL,            -- off | shadow | canary | control | full
    cold_start     boolean     NOT NULL,
    trial_version  text,                            -- null when the models did not run
    bounce_version text,
    policy_version text        NOT NULL,
    p_trial        float8,
    p_bounce       float8,
    net_benefit    float8,
    model_show     boolean,                         -- what the model rule would answer
    show           boolean     NOT NULL             -- what was answered
);
CREATE INDEX serving_paywall_decisions_decided_at ON serving.paywall_decisions (decided_at);
