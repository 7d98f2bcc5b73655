-- stats_latency: approximate latency percentiles (within 1 %) of a period and filter, from merged
-- log-scale histograms: rollup histograms plus one bucket per raw record.
-- Grain: the total, and per (g1, g2) group; `kind` says which.
-- Parameters: $start, $end, $split, $raw_from, $raw_hours (sources, see stats_sources.sql);
--   $master_id, $key_id, $model, $provider_id, $provider_key_id (filters, NULL = any);
--   $group_by, $then_by (a stats_group dimension or 'none').
-- Output: kind ('total' | 'group'), g1, g2, p50, p95, p99 (ms, DOUBLE; nearest-rank percentile of the
--   bucket holding that rank, reported as the bucket's representative value).
WITH r AS (
    SELECT
        stats_group($group_by, hour, master_id, key_id, model, provider_id, provider_key_id) AS g1,
        stats_group($then_by, hour, master_id, key_id, model, provider_id, provider_key_id) AS g2,
        b,
        n
    FROM stats_latency_rows($start, $end, $split, $raw_from, $raw_hours,
                            $master_id, $key_id, $model, $provider_id, $provider_key_id)
),
h AS (
    SELECT GROUPING(g1, g2) AS gset, g1, g2, b, sum(n) AS n
    FROM r
    GROUP BY GROUPING SETS ((b), (g1, g2, b))
),
c AS (
    SELECT
        *,
        sum(n) OVER (PARTITION BY gset, g1, g2 ORDER BY b ROWS UNBOUNDED PRECEDING) AS cum,
        sum(n) OVER (PARTITION BY gset, g1, g2) AS total
    FROM h
)
SELECT
    CASE WHEN gset = 0 THEN 'group' ELSE 'total' END AS kind,
    g1,
    g2,
    bucket_value(min(b) FILTER (WHERE cum >= ceil(0.50 * total))) AS p50,
    bucket_value(min(b) FILTER (WHERE cum >= ceil(0.95 * total))) AS p95,
    bucket_value(min(b) FILTER (WHERE cum >= ceil(0.99 * total))) AS p99
FROM c
GROUP BY gset, g1, g2
