-- stats_metrics: the SPEC metrics of a period and filter, in total, per group and per model.
-- Grain: GROUPING SETS (), (g1, g2), (model); `kind` says which set a row belongs to.
-- Parameters: $start, $end, $split, $raw_from, $raw_hours, $daily_days (sources, see stats_sources.sql);
--   $master_id, $key_id, $model, $provider_id, $provider_key_id (filters, NULL = any);
--   $group_by, $then_by (a stats_group dimension or 'none'); $exact (BOOLEAN: every row is a raw
--   record, so exact percentiles can be computed; otherwise p50..p99 are NULL).
-- Output: kind ('total' | 'group' | 'model'), g1, g2, model, requests, successes, errors,
--   rate_limited, provider_failures, prompt_tokens, completion_tokens, total_tokens, quota_cost,
--   masters, keys (distinct counts), latency_sum, latency_max, streams, ttft_n, ttft_sum, ttft_max,
--   p50, p95, p99 (exact latency percentiles, nearest rank).
WITH r AS (
    SELECT
        stats_group($group_by, hour, master_id, key_id, model, provider_id, provider_key_id) AS g1,
        stats_group($then_by, hour, master_id, key_id, model, provider_id, provider_key_id) AS g2,
        *
    FROM stats_rows($start, $end, $split, $raw_from, $raw_hours, $daily_days,
                    $master_id, $key_id, $model, $provider_id, $provider_key_id)
)
SELECT
    CASE WHEN GROUPING(model) = 0 THEN 'model' WHEN GROUPING(g1, g2) = 0 THEN 'group' ELSE 'total' END AS kind,
    g1,
    g2,
    model,
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
    max(ttft_max) AS ttft_max,
    CAST(quantile_disc(latency_sum, 0.50) FILTER (WHERE $exact) AS DOUBLE) AS p50,
    CAST(quantile_disc(latency_sum, 0.95) FILTER (WHERE $exact) AS DOUBLE) AS p95,
    CAST(quantile_disc(latency_sum, 0.99) FILTER (WHERE $exact) AS DOUBLE) AS p99
FROM r
GROUP BY GROUPING SETS ((), (g1, g2), (model))
