-- Gold, stage 4 of the feature refresh: what each user did on each of the days
-- [:'from', :'to'), from silver. nudge-train runs it over the same days as stage 3. See
-- silver/identity.sql for the order of the stages.
DELETE FROM gold.user_days WHERE day >= :'from'::date AND day < :'to'::date;

INSERT INTO gold.user_days
    (user_hash, day, sessions, app_opens, in_app_events, last_session_end, contacts_created, contacts_viewed,
     outreach, last_outreach_at, contact_count, notifs_sent, notifs_opened, notifs_dismissed,
     last_notification_at, opted_out, pricing_views, paywall_views, trials, emails_opened,
     emails_clicked, prompted_sessions, session_hour_sin, session_hour_cos, timezone)
SELECT e.user_hash, e.day,
       coalesce(max(s.sessions), 0),
       count(*) FILTER (WHERE e.event = 'app_opened'),
       count(*) FILTER (WHERE e.in_app),
       max(s.last_end),
       count(*) FILTER (WHERE e.event = 'contact_created'),
       count(*) FILTER (WHERE e.event = 'contact_viewed'),
       count(*) FILTER (WHERE e.event = 'outreach_sent'),
       max(e.ts) FILTER (WHERE e.event = 'outreach_sent'),
       max(e.contact_count),
       count(*) FILTER (WHERE e.event = 'notification_sent'),
       count(*) FILTER (WHERE e.event = 'notification_opened'),
       count(*) FILTER (WHERE e.event = 'notification_dismissed'),
       max(e.ts) FILTER (WHERE e.event = 'notification_sent'),
       bool_or(e.event = 'push_opt_out'),
       count(*) FILTER (WHERE e.event = 'pricing_view'),
       count(*) FILTER (WHERE e.event = 'paywall_view'),
       count(*) FILTER (WHERE e.event = 'trial_started'),
       count(*) FILTER (WHERE e.event = 'email_opened'),
       count(*) FILTER (WHERE e.event = 'email_clicked'),
       coalesce(max(s.prompted), 0),
       coalesce(max(s.hour_sin), 0),
       coalesce(max(s.hour_cos), 0),
       max(n.timezone)
FROM (
    -- Only the columns the aggregates need (OFFSET 0 keeps the projection below the
    -- sort, so it does not carry every event's properties).
    SELECT user_hash, day, event, in_app, ts,
           CASE WHEN event = 'contact_created' THEN (properties->>'contact_count')::int END AS contact_count
    FROM silver.events
    WHERE day >= :'from'::date AND day < :'to'::date
    OFFSET 0
) e
LEFT JOIN (
    SELECT user_hash, day, count(*) AS sessions, max(ended_at) AS last_end,
           count(*) FILTER (WHERE source IN ('push', 'email')) AS prompted,
           -- Start times as angles on the UTC clock (see migration 0009).
           sum(sin(radians(15 * extract(epoch FROM started_at - day) / 3600))) AS hour_sin,
           sum(cos(radians(15 * extract(epoch FROM started_at - day) / 3600))) AS hour_cos
    FROM silver.sessions
    WHERE day >= :'from'::date AND day < :'to'::date
    GROUP BY user_hash, day
) s ON s.user_hash = e.user_hash AND s.day = e.day
LEFT JOIN (
    -- The timezone of each user's last notification of the day that carried a known one
    -- (silver.notifications keeps only timezones Postgres knows).
    SELECT DISTINCT ON (user_hash, (sent_at AT TIME ZONE 'UTC')::date)
           user_hash, (sent_at AT TIME ZONE 'UTC')::date AS day, timezone
    FROM silver.notifications
    WHERE timezone IS NOT NULL AND sent_at >= :'from'::date AND sent_at < :'to'::date
    ORDER BY user_hash, (sent_at AT TIME ZONE 'UTC')::date, sent_at DESC
) n ON n.user_hash = e.user_hash AND n.day = e.day
GROUP BY e.user_hash, e.day
-- In key order, the primary key's index fills page after page instead of at random.
ORDER BY e.user_hash, e.day;

