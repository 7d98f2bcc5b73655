-- stats_metrics: the SPEC metrics of a period and filter, in total, per group and per model.
-- Grain: the total, each (g1, g2) group, each model; `kind` says which.
-- Parameters: $start, $end, $split, $raw_from, $raw_hours, $daily_days (sources, see stats_sources.sql;
--   the rollup part is read from the relation stats_fine_cache the reader registers, see stats_fine.sql);
--   $master_id, $key_id, $model, $provider_id, $provider_key_id (filters, NULL = any);
--   $group_by, $then_by (a stats_group dimension or 'none').
-- Output: kind ('total' | 'group' | 'model'), g1, g2, model, requests, successes, errors,
--   rate_limited, provider_failures, prompt_tokens, completion_tokens, total_tokens, quota_cost,
--   masters, keys (distinct counts), latency_sum, latency_max, streams, ttft_n, ttft_sum, ttft_max.
WITH fine AS MATERIALIZED (
    -- The rollup-served part (cached by the reader, registered as stats_fine_cache) and the raw part,
    -- summed down to the ids the distinct counts and the three groupings need.
    SELECT * FROM stats_fine_cache
    UNION ALL
    SELECT * FROM stats_fine($start, $end, $split, $raw_from, $raw_hours, $daily_days, 'raw',
                             $master_id, $key_id, $model, $provider_id, $provider_key_id, $group_by, $then_by)
),
keyed AS (
    -- Each fine row once per set it belongs to, then one plain GROUP BY: DuckDB runs GROUPING SETS
    -- with DISTINCT aggregates as a pass per aggregate, several times slower here.
    SELECT 'total' AS kind, NULL AS k1, NULL AS k2, NULL AS k3, * FROM fine
    UNION ALL
    SELECT 'group', g1, g2, NULL, * FROM fine WHERE $group_by <> 'none' OR $then_by <> 'none'
    UNION ALL
    SELECT 'model', NULL, NULL, model, * FROM fine
)
SELECT
    kind,
    k1 AS g1,
    k2 AS g2,
    k3 AS model,
    CAST(sum(requests) AS BIGINT) AS requests,
    CAST(sum(successes) AS BIGINT) AS successes,
    CAST(sum(errors) AS BIGINT) AS errors,
    CAST(sum(rate_limited) AS BIGINT) AS rate_limited,
    CAST(sum(provider_failures) AS BIGINT) AS provider_failures,
    CAST(sum(prompt_tokens) AS BIGINT) AS prompt_tokens,
    CAST(sum(completion_tokens) AS BIGINT) AS completion_tokens,
    CAST(sum(total_tokens) AS BIGINT) AS total_tokens,
    CAST(sum(quota_cost) AS BIGINT) AS quota_cost,
    count(DISTINCT master_id) AS masters,
    count(DISTINCT key_id) AS keys,
    CAST(sum(latency_sum) AS BIGINT) AS latency_sum,
    max(latency_max) AS latency_max,
    CAST(sum(streams) AS BIGINT) AS streams,
    CAST(sum(ttft_n) AS BIGINT) AS ttft_n,
    CAST(sum(ttft_sum) AS BIGINT) AS ttft_sum,
    max(ttft_max) AS ttft_max
FROM keyed
GROUP BY kind, k1, k2, k3
