-- rollup_day: the daily rollup of one closed day, merged from its hourly rollup rows.
-- Grain: day x master_id x key_id x model x provider_id x provider_key_id (status classes merged:
--   status_class is NULL), so a month of dashboard reads touches ~30 small files.
-- Parameters: $day (DATE).
-- Output: the rollups_daily columns (= rollups_hourly's; hour is the day's 00:00), sorted.
SELECT
    CAST($day AS TIMESTAMPTZ) AS hour,
    master_id,
    key_id,
    model,
    provider_id,
    provider_key_id,
    CAST(NULL AS VARCHAR) AS status_class,
    CAST(sum(requests) AS BIGINT) AS requests,
    CAST(sum(successes) AS BIGINT) AS successes,
    CAST(sum(errors) AS BIGINT) AS errors,
    CAST(sum(rate_limited) AS BIGINT) AS rate_limited,
    CAST(sum(provider_failures) AS BIGINT) AS provider_failures,
    CAST(sum(prompt_tokens) AS BIGINT) AS prompt_tokens,
    CAST(sum(completion_tokens) AS BIGINT) AS completion_tokens,
    CAST(sum(total_tokens) AS BIGINT) AS total_tokens,
    CAST(sum(quota_cost) AS BIGINT) AS quota_cost,
    CAST(sum(latency_sum) AS BIGINT) AS latency_sum,
    max(latency_max) AS latency_max,
    CAST(sum(streams) AS BIGINT) AS streams,
    CAST(sum(ttft_n) AS BIGINT) AS ttft_n,
    CAST(sum(ttft_sum) AS BIGINT) AS ttft_sum,
    max(ttft_max) AS ttft_max
FROM rollups_hourly
WHERE date = $day
GROUP BY master_id, key_id, model, provider_id, provider_key_id
ORDER BY master_id, key_id, model, provider_id NULLS FIRST, provider_key_id NULLS FIRST
