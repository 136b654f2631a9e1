-- gold.hours_from_usual_session in double precision, step by step as nudge-serve computes
-- it (serving::ranker::hours_from_usual_session): the first version cast the real usual
-- hour to numeric, which keeps only 6 significant digits, so the two differed in the
-- fifth decimal. Seconds since UTC midnight (exact) / 3600, minus the usual hour, plus
-- 48, modulo 24 (x - 24·floor(x/24) is exact here), folded to 0..12, rounded to real.
CREATE OR REPLACE FUNCTION gold.hours_from_usual_session(at timestamptz, usual_hour real) RETURNS real
LANGUAGE sql IMMUTABLE AS $$
    SELECT (12 - abs(12 - (x - 24 * floor(x / 24))))::real
    FROM (SELECT extract(epoch FROM (at AT TIME ZONE 'UTC')::time)::float8 / 3600
                 - usual_hour::float8 + 48 AS x) d
$$;
