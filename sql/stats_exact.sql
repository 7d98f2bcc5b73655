-- stats_exact: exact latency percentiles (nearest rank) of a period and filter, from raw records only.
-- Used when every hour of the period is read raw, or when a query filters or groups on two id
-- dimensions (no single-dimension histogram answers it).
-- Grain: the total, and per (g1, g2) group; `kind` says which.
-- Parameters: $files (VARCHAR[], the log_records files that may hold the period); $start, $end
--   (TIMESTAMPTZ, [start, end)); $master_id, $key_id, $model, $provider_id, $provider_key_id
--   (filters, NULL = any); $group_by, $then_by (a stats_group dimension or 'none'); $tz_starts,
--   $tz_offsets (the zone's UTC offsets, see stats_sources.sql); $keep_g1, $keep_g2 (VARCHAR[] or NULL:
--   the groups kept by a top-N; any other value of that column, NULL included unless the list holds
--   the text '\0null', becomes the group '\0other').
-- Output: kind ('total' | 'group'), g1, g2, p50, p95, p99 (ms, DOUBLE).
WITH r AS (
    SELECT
        stats_group($group_by, instant, $tz_starts, $tz_offsets, master_id, key_id, model, provider_id, provider_key_id)
            AS g1,
        stats_group($then_by, instant, $tz_starts, $tz_offsets, master_id, key_id, model, provider_id, provider_key_id)
            AS g2,
        latency_sum AS latency_ms
    FROM stats_raw_rows($files, $start, $start, $end, [], $master_id, $key_id, $model, $provider_id,
                        $provider_key_id)
),
folded AS (
    SELECT
        CASE WHEN $keep_g1 IS NULL OR list_contains($keep_g1, coalesce(g1, chr(0) || 'null')) THEN g1
             ELSE chr(0) || 'other' END AS g1,
        CASE WHEN $keep_g2 IS NULL OR list_contains($keep_g2, coalesce(g2, chr(0) || 'null')) THEN g2
             ELSE chr(0) || 'other' END AS g2,
        latency_ms
    FROM r
)
SELECT
    CASE WHEN GROUPING(g1, g2) = 0 THEN 'group' ELSE 'total' END AS kind,
    g1,
    g2,
    CAST(quantile_disc(latency_ms, 0.50) AS DOUBLE) AS p50,
    CAST(quantile_disc(latency_ms, 0.95) AS DOUBLE) AS p95,
    CAST(quantile_disc(latency_ms, 0.99) AS DOUBLE) AS p99
FROM folded
GROUP BY GROUPING SETS ((), (g1, g2))
