-- Which model arm each guardrail check compared with control: `canary`, or `full` when
-- the control is the rollout's holdout. The canary_* columns hold that arm's counts;
-- checks stored before this compared the canary.
ALTER TABLE serving.guardrail_checks
    ADD COLUMN arm text NOT NULL DEFAULT 'canary' CHECK (arm IN ('canary', 'full'));
