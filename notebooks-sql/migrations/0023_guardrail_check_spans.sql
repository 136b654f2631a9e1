-- What each guardrail check weighed: the decisions made in [weighed_from, weighed_to), or
-- for D7 retention the users first decided then (the window that ended 8 days before the
-- check). Null for a D7 check with no such users, and for checks stored before this.
ALTER TABLE serving.guardrail_checks
    ADD COLUMN weighed_from timestamptz,
    ADD COLUMN weighed_to   timestamptz;
