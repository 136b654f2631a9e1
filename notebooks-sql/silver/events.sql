-- Silver, stage 2: the events of the days [:'from', :'to'), deduplicated, typed and
-- attributed to their stitched user. See silver/identity.sql for the order of the stages.
DELETE FROM silver.events WHERE day >= :'from'::date AND day < :'to'::date;

INSERT INTO silver.events (uuid, user_hash, distinct_hash, event, ts, day, in_app, properties)
SELECT b.uuid, COALESCE(i.user_hash, b.user_hash), b.user_hash, b.event, b.ts,
       (b.ts AT TIME ZONE 'UTC')::date,
       b.event NOT IN ('$identify', '$create_alias', 'notification_sent', 'notification_dismissed',
                       'email_opened', 'email_clicked', 'subscription_purchased',
                       'subscription_cancelled', 'ad_click', 'landing_view',
                       'consent_analytics_changed', 'ab_exposed', 'push_opt_out', '$exception'),
       b.properties
FROM bronze.events b LEFT JOIN silver.identity i ON i.distinct_hash = b.user_hash
WHERE b.ts >= :'from'::date AND b.ts < :'to'::date;

