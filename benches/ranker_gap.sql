-- Diagnostic examples for benches/ranker_gap.sh: the ranker's training view, plus
--   * what the event stream shows between the snapshot's midnight and the send (the app
--     opens of the 24 h before it, the hours since the last one), which nudge-serve could
--     only know from a streaming feature;
--   * what only the simulator knows: two hidden traits, whether the user is lapsed (the
--     open probability is exactly 0), and the true open probability itself.
-- Runs in the benchmark's own database, after `features refresh`.
CREATE TABLE public.ranker_gap AS
SELECT t.*,
       (SELECT count(*) FROM silver.events e
        WHERE e.user_hash = t.user_hash AND e.event = 'app_opened'
          AND e.ts < t.example_at AND e.ts >= t.example_at - interval '24 hours')::int AS app_opens_24h_before_send,
       (extract(epoch FROM t.example_at - (SELECT max(e.ts) FROM silver.events e
                                           WHERE e.user_hash = t.user_hash AND e.event = 'app_opened'
                                             AND e.ts < t.example_at)) / 3600)::float8 AS hours_since_app_open_at_send,
       u.activity, u.fatigue_sensitivity,
       (tr.p_open = 0)::int AS lapsed,
       tr.p_open
FROM gold.training_notif_ranker t
JOIN sim.users u USING (user_hash)
JOIN sim.notification_truth tr USING (notification_id);
