-- latency_add: per-dimension latency and ttft histograms of a day whose raw partition the log cleaner
--   dropped, for some hours: the histograms its rollups held at the drop (latency_base) plus those of the
--   records that arrived since (the relation latency_fresh the engine registers: the histograms of the
--   day's raw records, all of which are later than the drop).
-- Grain: as latency_hourly (hour x dim x id x metric x bucket).
-- Parameters: $day (DATE, the partition), $hours (TIMESTAMPTZ[], the hours wanted; latency_fresh holds
--   rows of these hours only).
-- Output: hour, dim, id, metric, b (SMALLINT), n (BIGINT, the two counts added), sorted.
WITH parts AS (
    SELECT hour, dim, id, metric, b, n FROM latency_base WHERE date = $day AND list_contains($hours, hour)
    UNION ALL
    SELECT hour, dim, id, metric, b, n FROM latency_fresh
)
SELECT hour, dim, id, metric, b, CAST(sum(n) AS BIGINT) AS n
FROM parts
GROUP BY hour, dim, id, metric, b
ORDER BY hour, dim, id NULLS FIRST, metric, b
