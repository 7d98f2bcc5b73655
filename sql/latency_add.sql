-- latency_add: per-dimension latency and ttft histograms of some hours of a day with new counts added: those
--   held for the hours (the relation latency_stored: latency_hourly or latency_base, as rollup_stored in
--   rollup_add.sql) plus latency_fresh (the histograms of the new records only).
-- Grain: as latency_hourly (hour x dim x id x metric x bucket).
-- Parameters: $day (DATE, the partition), $hours (TIMESTAMPTZ[], the hours wanted; latency_fresh holds
--   rows of these hours only).
-- Output: hour, dim, id, metric, b (SMALLINT), n (BIGINT, the two counts added), sorted.
WITH parts AS (
    SELECT hour, dim, id, metric, b, n FROM latency_stored WHERE date = $day AND list_contains($hours, hour)
    UNION ALL
    SELECT hour, dim, id, metric, b, n FROM latency_fresh
)
SELECT hour, dim, id, metric, b, CAST(sum(n) AS BIGINT) AS n
FROM parts
GROUP BY hour, dim, id, metric, b
ORDER BY hour, dim, id NULLS FIRST, metric, b
