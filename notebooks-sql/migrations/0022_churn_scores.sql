-- nudge-serve's churn scores: one row per user of each POST /v1/churn answer, written in
-- batches off the request path beside serving.decisions, so that a served model's
-- calibration can be checked against what the users then did (kpi.churn_calibration).
CREATE TABLE serving.churn_scores (
    request_id     uuid        NOT NULL,
    scored_at      timestamptz NOT NULL,            -- when it was answered
    user_hash      text        COLLATE "C" NOT NULL,
    features_as_of date,                            -- the snapshot scored; null: cold start
    model_version  text        NOT NULL,
    policy_version text        NOT NULL,
    score          float8      NOT NULL,
    band           text        NOT NULL,
    PRIMARY KEY (request_id, user_hash)
);
CREATE INDEX serving_churn_scores_features_as_of ON serving.churn_scores (features_as_of);

-- Served churn scores beside the outcome, per model version, band and notification arm.
-- A score of features as of day D predicts the label of D − 1, the day whose end the
-- snapshot describes (gold.label_churn_14d: active that day, then 14 days without an app
-- open). Only scores whose label is complete count, each (user, snapshot, model) once,
-- with its latest score; cold starts and users inactive on D − 1 have no label. The arm
-- is the user's in their latest /v1/score decision before the snapshot's midnight
-- ('none' without one). Snapshots as of [p_from, p_to); a null bound does not bound.
CREATE FUNCTION kpi.churn_calibration(p_from date, p_to date)
RETURNS TABLE (model_version text, band text, arm text, users bigint, mean_score float8,
               churned bigint)
LANGUAGE sql STABLE AS $$
WITH scored AS (
    SELECT DISTINCT ON (s.user_hash, s.features_as_of, s.model_version)
           s.user_hash, s.features_as_of, s.model_version, s.score, s.band
    FROM serving.churn_scores s
    WHERE s.features_as_of >= coalesce(p_from, '-infinity')
      AND s.features_as_of < coalesce(p_to, 'infinity')
    ORDER BY s.user_hash, s.features_as_of, s.model_version, s.scored_at DESC, s.request_id
), labelled AS MATERIALIZED (
    SELECT sc.*, l.churn_14d
    FROM scored sc
    JOIN gold.label_churn_14d l
      ON l.user_hash = sc.user_hash AND l.day = sc.features_as_of - 1 AND l.complete
), their_decisions AS MATERIALIZED (
    -- One pass over the log for the users scored (the log has no index by user): a
    -- lookup per score would read the log once per user.
    SELECT x.user_hash, x.decided_at, x.arm
    FROM serving.decisions x
    WHERE x.user_hash IN (SELECT user_hash FROM labelled)
      AND x.decided_at < (SELECT max(features_as_of) FROM labelled)::timestamp AT TIME ZONE 'UTC'
), with_arm AS (
    SELECT DISTINCT ON (lb.user_hash, lb.features_as_of, lb.model_version)
           lb.model_version, lb.band, lb.score, lb.churn_14d, coalesce(x.arm, 'none') AS arm
    FROM labelled lb
    LEFT JOIN their_decisions x
      ON x.user_hash = lb.user_hash
     AND x.decided_at < lb.features_as_of::timestamp AT TIME ZONE 'UTC'
    ORDER BY lb.user_hash, lb.features_as_of, lb.model_version, x.decided_at DESC NULLS LAST
)
SELECT w.model_version, w.band, w.arm, count(*), avg(w.score),
       count(*) FILTER (WHERE w.churn_14d)
FROM with_arm w
GROUP BY 1, 2, 3
ORDER BY 1, 2, 3
$$;
