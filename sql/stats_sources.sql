-- stats_sources: table macros that give stats queries their rows from the cheapest exact source.
-- Days listed in daily_days (closed, clean, wholly in the period) come from the daily tier; other
-- hours in [start_ts, split_ts) not listed in raw_hours and not in daily_days from the hourly tier;
-- everything else in
-- [start_ts, end_ts) (the partial last hour, hours dirtied since the last rollup refresh) from raw
-- log_records, one row per record (requests = 1). raw_from (<= every raw hour) bounds the raw scan.
-- part ('rollups', 'raw' or 'all') selects the rollup branches, the raw branch or both: the reader
-- caches the rollup part of an answer and computes only the raw part per request.
-- Grain: stats_rows: rollup grain (hour or day x master x key x model x provider x provider key);
--   stats_latency_rows: hour or day x id of one dimension x latency bucket.
-- Parameters: none (the macros take start_ts, end_ts, split_ts, raw_from, raw_hours, daily_days,
--   part, then for stats_rows/stats_fine the filters f_master, f_key, f_model, f_provider, f_pkey
--   (NULL = any), for stats_latency_rows/stats_hist a dimension dim and an optional id f_id of it;
--   stats_fine and stats_hist also take the group_by and then_by names).
-- Output: macros stats_rows(...) (hour, ids, requests .. ttft_max), stats_latency_rows(...) (hour,
--   id, b, n), stats_fine(...) (g1, g2, model, master_id, key_id and sums: what the distinct counts
--   and the three groupings of stats_metrics need), stats_hist(...) (g1, g2, b, n), dim_id(dim, ...)
--   (a record's id in a dimension, as text) and stats_group(dim, ...) (the text value a group_by
--   name gives a row).
CREATE OR REPLACE MACRO dim_id(dim, master_id, key_id, model, provider_id, provider_key_id) AS
CASE dim
    WHEN 'master' THEN CAST(master_id AS VARCHAR)
    WHEN 'key' THEN CAST(key_id AS VARCHAR)
    WHEN 'model' THEN model
    WHEN 'provider' THEN CAST(provider_id AS VARCHAR)
    WHEN 'provider_key' THEN CAST(provider_key_id AS VARCHAR)
END;

CREATE OR REPLACE MACRO stats_group(dim, hour, master_id, key_id, model, provider_id, provider_key_id) AS
CASE dim
    WHEN 'day' THEN strftime(hour, '%Y-%m-%d')
    WHEN 'hour' THEN strftime(hour, '%Y-%m-%dT%H:00:00Z')
    ELSE dim_id(dim, master_id, key_id, model, provider_id, provider_key_id)
END;

CREATE OR REPLACE MACRO stats_rows(start_ts, end_ts, split_ts, raw_from, raw_hours, daily_days, part,
                                   f_master, f_key, f_model, f_provider, f_pkey) AS TABLE
SELECT hour, master_id, key_id, model, provider_id, provider_key_id, requests, successes, errors,
       rate_limited, provider_failures, prompt_tokens, completion_tokens, total_tokens, quota_cost,
       latency_sum, latency_max, streams, ttft_n, ttft_sum, ttft_max
FROM rollups_daily
WHERE part <> 'raw' AND date >= list_min(daily_days) AND date <= list_max(daily_days)
  AND list_contains(daily_days, date)
  AND (f_master IS NULL OR master_id = f_master) AND (f_key IS NULL OR key_id = f_key)
  AND (f_model IS NULL OR model = f_model) AND (f_provider IS NULL OR provider_id = f_provider)
  AND (f_pkey IS NULL OR provider_key_id = f_pkey)
UNION ALL
SELECT hour, master_id, key_id, model, provider_id, provider_key_id, requests, successes, errors,
       rate_limited, provider_failures, prompt_tokens, completion_tokens, total_tokens, quota_cost,
       latency_sum, latency_max, streams, ttft_n, ttft_sum, ttft_max
FROM rollups_hourly
WHERE part <> 'raw' AND date >= CAST(start_ts AS DATE) AND date <= CAST(split_ts AS DATE)
  AND hour >= start_ts AND hour < split_ts AND NOT list_contains(raw_hours, hour)
  AND NOT list_contains(daily_days, date)
  AND (f_master IS NULL OR master_id = f_master) AND (f_key IS NULL OR key_id = f_key)
  AND (f_model IS NULL OR model = f_model) AND (f_provider IS NULL OR provider_id = f_provider)
  AND (f_pkey IS NULL OR provider_key_id = f_pkey)
UNION ALL
SELECT date_trunc('hour', created_at), master_id, key_id, model, provider_id, provider_key_id,
       1, CAST(is_success(status_code) AS BIGINT), CAST(is_error(status_code) AS BIGINT),
       CAST(is_rate_limited(status_code) AS BIGINT),
       CAST(is_provider_failure(provider_key_id, status_code) AS BIGINT),
       prompt_tokens, completion_tokens, total_tokens(prompt_tokens, completion_tokens), quota_cost,
       latency_ms, latency_ms, CAST(is_stream AS BIGINT), CAST(ttft_ms IS NOT NULL AS BIGINT), ttft_ms, ttft_ms
FROM log_records
WHERE part <> 'rollups' AND date >= CAST(raw_from AS DATE) AND date <= CAST(end_ts AS DATE)
  AND created_at >= greatest(start_ts, raw_from) AND created_at < end_ts
  AND (created_at >= split_ts OR list_contains(raw_hours, date_trunc('hour', created_at)))
  AND (f_master IS NULL OR master_id = f_master) AND (f_key IS NULL OR key_id = f_key)
  AND (f_model IS NULL OR model = f_model) AND (f_provider IS NULL OR provider_id = f_provider)
  AND (f_pkey IS NULL OR provider_key_id = f_pkey);

CREATE OR REPLACE MACRO stats_latency_rows(start_ts, end_ts, split_ts, raw_from, raw_hours, daily_days,
                                           part, dim_name, f_id) AS TABLE
SELECT hour, id, b, n
FROM latency_daily
WHERE part <> 'raw' AND date >= list_min(daily_days) AND date <= list_max(daily_days)
  AND list_contains(daily_days, date)
  AND dim = dim_name AND metric = 'latency' AND (f_id IS NULL OR id = f_id)
UNION ALL
SELECT hour, id, b, n
FROM latency_hourly
WHERE part <> 'raw' AND date >= CAST(start_ts AS DATE) AND date <= CAST(split_ts AS DATE)
  AND hour >= start_ts AND hour < split_ts AND NOT list_contains(raw_hours, hour)
  AND NOT list_contains(daily_days, date)
  AND dim = dim_name AND metric = 'latency' AND (f_id IS NULL OR id = f_id)
UNION ALL
SELECT date_trunc('hour', created_at), dim_id(dim_name, master_id, key_id, model, provider_id, provider_key_id),
       CAST(latency_bucket(latency_ms) AS SMALLINT), CAST(1 AS BIGINT)
FROM log_records
WHERE part <> 'rollups' AND date >= CAST(raw_from AS DATE) AND date <= CAST(end_ts AS DATE)
  AND created_at >= greatest(start_ts, raw_from) AND created_at < end_ts
  AND (created_at >= split_ts OR list_contains(raw_hours, date_trunc('hour', created_at)))
  AND (f_id IS NULL OR dim_id(dim_name, master_id, key_id, model, provider_id, provider_key_id) = f_id);

CREATE OR REPLACE MACRO stats_fine(start_ts, end_ts, split_ts, raw_from, raw_hours, daily_days, part,
                                   f_master, f_key, f_model, f_provider, f_pkey, group_by, then_by) AS TABLE
SELECT
    stats_group(group_by, hour, master_id, key_id, model, provider_id, provider_key_id) AS g1,
    stats_group(then_by, hour, master_id, key_id, model, provider_id, provider_key_id) AS g2,
    model,
    master_id,
    key_id,
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
FROM stats_rows(start_ts, end_ts, split_ts, raw_from, raw_hours, daily_days, part,
                f_master, f_key, f_model, f_provider, f_pkey)
GROUP BY ALL;

CREATE OR REPLACE MACRO stats_hist(start_ts, end_ts, split_ts, raw_from, raw_hours, daily_days, part,
                                   dim_name, f_id, group_by, then_by) AS TABLE
SELECT
    CASE group_by WHEN 'none' THEN NULL WHEN 'day' THEN strftime(hour, '%Y-%m-%d')
        WHEN 'hour' THEN strftime(hour, '%Y-%m-%dT%H:00:00Z') ELSE id END AS g1,
    CASE then_by WHEN 'none' THEN NULL WHEN 'day' THEN strftime(hour, '%Y-%m-%d')
        WHEN 'hour' THEN strftime(hour, '%Y-%m-%dT%H:00:00Z') ELSE id END AS g2,
    b,
    CAST(sum(n) AS BIGINT) AS n
FROM stats_latency_rows(start_ts, end_ts, split_ts, raw_from, raw_hours, daily_days, part, dim_name, f_id)
GROUP BY ALL;
