-- The ranker's oracle: P(any app open within 24 h of a push) given what the logs show and
-- the user's traits. p_return_24h also knows whether a silent user lapsed at the end of
-- their last active day, a coin flip nothing records (an alive user who is away leaves
-- the same silence); this column weighs the two readings by the lapse's posterior given
-- that silence, so it is the best any model of the logged data could reach.
ALTER TABLE sim.notification_truth ADD COLUMN p_return_24h_attainable real;
