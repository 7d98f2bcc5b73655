-- daily_stats: the immutable statistics of one closed UTC day, read from that day's daily rollups
-- (rollups_daily for counts, latency_daily for the histograms), never from raw records.
-- Grain: day x grain, grain being 'gateway' (one row), 'master', 'key', 'model', 'provider' or
--   'provider_key' (one row per id; a NULL provider id is the group of requests refused before routing).
-- Parameters: $day (DATE), $top (INTEGER: how many top models each row lists).
-- Output: grain, master_id, key_id, model, provider_id, provider_key_id (the row's id, others NULL),
--   requests, successes, errors, rate_limited, provider_failures, prompt_tokens, completion_tokens,
--   total_tokens, quota_cost, masters, keys (distinct), streams, latency_avg, latency_p50,
--   latency_p95, latency_p99, latency_max, ttft_avg, ttft_p95, ttft_max (ms; percentiles from merged
--   histograms, within 1 %), top_models (list of {model, requests, total_tokens}, by requests desc).
WITH r AS (
    SELECT * FROM rollups_daily WHERE date = $day
),
hist AS (
    SELECT CASE WHEN dim = 'gateway' THEN 'gateway' ELSE dim END AS grain, coalesce(id, '') AS scope, metric, b, n
    FROM latency_daily
    WHERE date = $day
),
scoped AS (
    SELECT
        g.grain,
        CASE g.grain
            WHEN 'master' THEN CAST(master_id AS VARCHAR)
            WHEN 'key' THEN CAST(key_id AS VARCHAR)
            WHEN 'model' THEN model
            WHEN 'provider' THEN coalesce(CAST(provider_id AS VARCHAR), '')
            WHEN 'provider_key' THEN coalesce(CAST(provider_key_id AS VARCHAR), '')
            ELSE ''
        END AS scope,
        r.*
    FROM r, (VALUES ('gateway'), ('master'), ('key'), ('model'), ('provider'), ('provider_key')) AS g(grain)
),
m AS (
    SELECT
        grain,
        scope,
        CASE WHEN grain = 'master' THEN any_value(master_id) END AS master_id,
        CASE WHEN grain = 'key' THEN any_value(key_id) END AS key_id,
        CASE WHEN grain = 'model' THEN any_value(model) END AS model,
        CASE WHEN grain = 'provider' THEN any_value(provider_id) END AS provider_id,
        CASE WHEN grain = 'provider_key' THEN any_value(provider_key_id) END AS provider_key_id,
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
        CAST(sum(streams) AS BIGINT) AS streams,
        sum(latency_sum) / sum(requests) AS latency_avg,
        max(latency_max) AS latency_max,
        CASE WHEN sum(ttft_n) > 0 THEN sum(ttft_sum) / sum(ttft_n) END AS ttft_avg,
        max(ttft_max) AS ttft_max
    FROM scoped
    GROUP BY grain, scope
),
lat AS (
    SELECT
        grain,
        scope,
        bucket_value(min(b) FILTER (WHERE cum >= ceil(0.50 * total))) AS latency_p50,
        bucket_value(min(b) FILTER (WHERE cum >= ceil(0.95 * total))) AS latency_p95,
        bucket_value(min(b) FILTER (WHERE cum >= ceil(0.99 * total))) AS latency_p99
    FROM (
        SELECT *, sum(n) OVER (PARTITION BY grain, scope ORDER BY b ROWS UNBOUNDED PRECEDING) AS cum,
                  sum(n) OVER (PARTITION BY grain, scope) AS total
        FROM hist
        WHERE metric = 'latency'
    )
    GROUP BY grain, scope
),
ttft AS (
    SELECT grain, scope, bucket_value(min(b) FILTER (WHERE cum >= ceil(0.95 * total))) AS ttft_p95
    FROM (
        SELECT *, sum(n) OVER (PARTITION BY grain, scope ORDER BY b ROWS UNBOUNDED PRECEDING) AS cum,
                  sum(n) OVER (PARTITION BY grain, scope) AS total
        FROM hist
        WHERE metric = 'ttft'
    )
    GROUP BY grain, scope
),
per_model AS (
    SELECT grain, scope, model AS top_model, CAST(sum(requests) AS BIGINT) AS requests,
           CAST(sum(total_tokens) AS BIGINT) AS total_tokens
    FROM scoped
    GROUP BY grain, scope, model
),
top AS (
    SELECT grain, scope,
           list({'model': top_model, 'requests': requests, 'total_tokens': total_tokens}
                ORDER BY requests DESC, top_model) AS top_models
    FROM (
        SELECT *, row_number() OVER (PARTITION BY grain, scope ORDER BY requests DESC, top_model) AS rank
        FROM per_model
    )
    WHERE rank <= $top
    GROUP BY grain, scope
)
SELECT
    m.* EXCLUDE (scope, latency_max, ttft_avg, ttft_max),
    lat.latency_p50,
    lat.latency_p95,
    lat.latency_p99,
    m.latency_max,
    m.ttft_avg,
    ttft.ttft_p95,
    m.ttft_max,
    top.top_models
FROM m
LEFT JOIN lat USING (grain, scope)
LEFT JOIN ttft USING (grain, scope)
LEFT JOIN top USING (grain, scope)
ORDER BY list_position(['gateway', 'master', 'key', 'model', 'provider', 'provider_key'], m.grain),
         m.requests DESC, m.scope
