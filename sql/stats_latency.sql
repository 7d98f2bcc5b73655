-- stats_latency: approximate latency percentiles (within 1 %) of a period, from merged log-scale
-- histograms of one dimension: daily and hourly histograms plus one bucket per raw record.
-- Grain: the total, and per (g1, g2) group; `kind` says which.
-- Parameters: $start, $end, $split, $raw_from, $raw_hours, $daily_days (sources, see stats_sources.sql;
--   the rollup part is read from the relation stats_hist_cache the reader registers, see stats_hist.sql);
--   $dim (the histogram dimension: 'gateway' or the one id dimension the query filters or groups by),
--   $dim_id (only this id of it, or NULL); $group_by, $then_by ('none', 'day', 'hour' or $dim).
-- Output: kind ('total' | 'group'), g1, g2, p50, p95, p99 (ms, DOUBLE; the nearest-rank percentile's
--   bucket, reported as the bucket's representative value).
WITH r AS (
    -- The rollup-served part (cached by the reader, registered as stats_hist_cache) and the raw part.
    SELECT * FROM stats_hist_cache
    UNION ALL
    SELECT * FROM stats_hist($start, $end, $split, $raw_from, $raw_hours, $daily_days, 'raw', $dim, $dim_id,
                             $group_by, $then_by)
),
h AS (
    SELECT kind, g1, g2, b, sum(n) AS n
    FROM (
        SELECT 'total' AS kind, NULL AS g1, NULL AS g2, b, n FROM r
        UNION ALL
        SELECT 'group', g1, g2, b, n FROM r WHERE $group_by <> 'none' OR $then_by <> 'none'
    )
    GROUP BY kind, g1, g2, b
),
c AS (
    SELECT
        *,
        sum(n) OVER (PARTITION BY kind, g1, g2 ORDER BY b ROWS UNBOUNDED PRECEDING) AS cum,
        sum(n) OVER (PARTITION BY kind, g1, g2) AS total
    FROM h
)
SELECT
    kind,
    g1,
    g2,
    bucket_value(min(b) FILTER (WHERE cum >= ceil(0.50 * total))) AS p50,
    bucket_value(min(b) FILTER (WHERE cum >= ceil(0.95 * total))) AS p95,
    bucket_value(min(b) FILTER (WHERE cum >= ceil(0.99 * total))) AS p99
FROM c
GROUP BY kind, g1, g2
