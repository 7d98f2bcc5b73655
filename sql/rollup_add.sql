-- rollup_add: hourly rollup rows of a day whose raw partition the log cleaner dropped, for some hours:
--   the rows its rollups held at the drop (rollups_base) plus the rows of the records that arrived since
--   (the relation rollup_fresh the engine registers: rollup_hours over the day's raw records, all of
--   which are later than the drop).
-- Grain: as rollups_hourly (hour x master_id x key_id x model x provider_id x provider_key_id x status_class).
-- Parameters: $day (DATE, the partition), $hours (TIMESTAMPTZ[], the hours wanted; rollup_fresh holds
--   rows of these hours only).
-- Output: the rollups_hourly columns, sorted by the grain: counts and sums added, maxima the larger.
WITH parts AS (
    SELECT * EXCLUDE (date) FROM rollups_base WHERE date = $day AND list_contains($hours, hour)
    UNION ALL BY NAME
    SELECT * FROM rollup_fresh
)
SELECT
    hour,
    master_id,
    key_id,
    model,
    provider_id,
    provider_key_id,
    status_class,
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
FROM parts
GROUP BY hour, master_id, key_id, model, provider_id, provider_key_id, status_class
ORDER BY hour, master_id, key_id, model, provider_id NULLS FIRST, provider_key_id NULLS FIRST, status_class
