-- latency_fold: per-dimension latency and ttft histograms of some hours of a day with the records of newly
--   published files folded in: the histograms latency_hourly holds for those hours plus those of the new
--   files' records (the relation latency_fresh the engine registers). See rollup_fold.sql.
-- Grain: as latency_hourly (hour x dim x id x metric x bucket).
-- Parameters: $day (DATE, the partition), $hours (TIMESTAMPTZ[], the hours folded; latency_fresh holds
--   rows of these hours only).
-- Output: hour, dim, id, metric, b (SMALLINT), n (BIGINT, the two counts added), sorted.
WITH parts AS (
    SELECT hour, dim, id, metric, b, n FROM latency_hourly WHERE date = $day AND list_contains($hours, hour)
    UNION ALL
    SELECT hour, dim, id, metric, b, n FROM latency_fresh
)
SELECT hour, dim, id, metric, b, CAST(sum(n) AS BIGINT) AS n
FROM parts
GROUP BY hour, dim, id, metric, b
ORDER BY hour, dim, id NULLS FIRST, metric, b
