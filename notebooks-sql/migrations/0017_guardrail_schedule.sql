-- When the guardrails were last checked: a check reads the whole guardrail window of the
-- decision log, so it runs at most once per `guardrails.interval`, not at every tick.
ALTER TABLE serving.controller ADD COLUMN guardrails_checked_at timestamptz;
