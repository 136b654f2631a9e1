-- The rollout whose evidence the guardrails weigh (the model arm compared with control,
-- its percent, the holdout and the salt). When it changes, the evidence starts again
-- (`guardrails_since`): a sequential test weighs everything since then. NULL before this
-- was kept: the first tick after it restarts the evidence once.
ALTER TABLE serving.controller ADD COLUMN guardrails_rollout text;

-- The z at and above which each check breached: fixed under a fixed test, rising with
-- the evidence under a sequential one. NULL when z is, and for checks stored before.
ALTER TABLE serving.guardrail_checks ADD COLUMN critical double precision;
