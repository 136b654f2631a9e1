-- Runtime flags shared by every nudge-serve replica when there is no Redis (embedded
-- mode): the rollout override and the kill switch, each one JSON value by name.
CREATE TABLE serving.flags (
    name       text        PRIMARY KEY,   -- rollout | kill_switch
    value      jsonb       NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
