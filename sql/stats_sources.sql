-- stats_sources: table macros that give stats queries their rows from the cheapest exact source.
-- A query's plan (engine/stats/reader.py) splits its period [start_ts, end_ts) at split_ts, the end
-- cut down to the hour. Before split_ts, days listed in daily_days (closed, clean, wholly in the period)
-- come from the daily tier and other hours not listed in raw_hours (hours dirtied since the last rollup
-- refresh) from the hourly tier: the rollup part, which the reader caches. The rest (the partial last
-- hour and the raw_hours, all at or after raw_from) comes from the raw records of a list of lake files:
-- the raw part, which the reader keeps file by file (engine/stats/live.py); end_ts NULL reads a file
-- to its end. Grouping and histogram ids are text, as the API reports them. Day and hour groups are
-- local to the request's zone, given as its UTC offsets (tz_starts, tz_offsets: offset i, in seconds
-- east of UTC, is in force from tz_starts[i]; see engine/zones.py): a day group is the local date, an
-- hour group the UTC instant of the local hour's start. A rollup row is labelled by its hour's start and
-- a raw record by its own created_at (`instant`), so an hour that a local day or hour boundary cuts must be
-- read raw (the reader's plan does so).
-- Grain: stats_rows, stats_raw_rows: rollup grain (hour or day x master x key x model x provider x
--   provider key; a raw record is one row with requests = 1); stats_latency_rows: hour or day x id of one
--   dimension x latency bucket.
-- Parameters: none (macros; filters f_master, f_key, f_model, f_provider, f_pkey are NULL for any;
--   dim_name is a histogram dimension and f_id an optional id of it; group_by and then_by are
--   stats_group names or 'none'; tz_starts, tz_offsets the zone's offsets; buckets: whether stats_raw_fine
--   rows are also by latency bucket).
-- Output: macros stats_rows / stats_raw_rows (hour, ids, the rollup measures), stats_latency_rows (hour, id, b,
--   n), stats_fine / stats_raw_fine (g1, g2, model, master_id, key_id (and b for stats_raw_fine) and the
--   measures: what the distinct counts and the three groupings of engine/stats/merging.py need),
--   stats_hist (g1, g2, b, n), dim_id(dim, ...) (a record's id in a dimension, as
--   text), stats_group(dim, ...) and stats_group_at (the text value a group_by name gives a row) and
--   hist_group(group_name, hour, id) (the same for a histogram row).
CREATE OR REPLACE MACRO dim_id(dim, master_id, key_id, model, provider_id, provider_key_id) AS
CASE dim
    WHEN 'master' THEN CAST(master_id AS VARCHAR)
    WHEN 'key' THEN CAST(key_id AS VARCHAR)
    WHEN 'model' THEN model
    WHEN 'provider' THEN CAST(provider_id AS VARCHAR)
    WHEN 'provider_key' THEN CAST(provider_key_id AS VARCHAR)
END;

-- The local wall-clock time of an instant (as a UTC-typed timestamp whose fields read local).
CREATE OR REPLACE MACRO local_time(instant, tz_starts, tz_offsets) AS
CASE WHEN len(tz_offsets) = 1 THEN instant + to_seconds(tz_offsets[1])
     ELSE instant + to_seconds(tz_offsets[len(list_filter(tz_starts, lambda s: s <= instant))])
END;

-- A day or hour group of an instant whose local time is `local`. A macro's argument is pasted wherever the
-- macro names it: given as a column (stats_raw_fine), the local time is bound and computed once, not three times.
CREATE OR REPLACE MACRO time_group_at(dim, instant, local) AS
CASE dim
    WHEN 'day' THEN strftime(local, '%Y-%m-%d')
    ELSE strftime(instant - (local - date_trunc('hour', local)), '%Y-%m-%dT%H:%M:00Z')
END;

CREATE OR REPLACE MACRO time_group(dim, instant, tz_starts, tz_offsets) AS
time_group_at(dim, instant, local_time(instant, tz_starts, tz_offsets));

CREATE OR REPLACE MACRO stats_group_at(dim, instant, local, master_id, key_id, model, provider_id, provider_key_id) AS
CASE WHEN dim IN ('day', 'hour') THEN time_group_at(dim, instant, local)
     ELSE dim_id(dim, master_id, key_id, model, provider_id, provider_key_id)
END;

CREATE OR REPLACE MACRO stats_group(dim, instant, tz_starts, tz_offsets, master_id, key_id, model, provider_id,
                                    provider_key_id) AS
stats_group_at(dim, instant, local_time(instant, tz_starts, tz_offsets), master_id, key_id, model, provider_id,
               provider_key_id);

CREATE OR REPLACE MACRO hist_group(group_name, instant, tz_starts, tz_offsets, id) AS
CASE WHEN group_name = 'none' THEN NULL
     WHEN group_name IN ('day', 'hour') THEN time_group(group_name, instant, tz_starts, tz_offsets)
     ELSE id
END;

CREATE OR REPLACE MACRO stats_filter(f_master, f_key, f_model, f_provider, f_pkey,
                                     master_id, key_id, model, provider_id, provider_key_id) AS
(f_master IS NULL OR master_id = f_master) AND (f_key IS NULL OR key_id = f_key)
AND (f_model IS NULL OR model = f_model) AND (f_provider IS NULL OR provider_id = f_provider)
AND (f_pkey IS NULL OR provider_key_id = f_pkey);

-- The raw part's time bounds: [raw_from, end_ts), and an hour before split_ts only when it is dirty.
CREATE OR REPLACE MACRO raw_window(created_at, raw_from, split_ts, end_ts, raw_hours) AS
created_at >= raw_from AND (end_ts IS NULL OR created_at < end_ts)
AND (created_at >= split_ts OR list_contains(raw_hours, date_trunc('hour', created_at)));

CREATE OR REPLACE MACRO stats_rows(start_ts, split_ts, raw_hours, daily_days,
                                   f_master, f_key, f_model, f_provider, f_pkey) AS TABLE
SELECT * EXCLUDE (date, status_class)
FROM rollups_daily
WHERE date >= list_min(daily_days) AND date <= list_max(daily_days) AND list_contains(daily_days, date)
  AND stats_filter(f_master, f_key, f_model, f_provider, f_pkey,
                   master_id, key_id, model, provider_id, provider_key_id)
UNION ALL BY NAME
SELECT * EXCLUDE (date, status_class)
FROM rollups_hourly
WHERE date >= CAST(start_ts AS DATE) AND date <= CAST(split_ts AS DATE)
  AND hour >= start_ts AND hour < split_ts AND NOT list_contains(raw_hours, hour)
  AND NOT list_contains(daily_days, date)
  AND stats_filter(f_master, f_key, f_model, f_provider, f_pkey,
                   master_id, key_id, model, provider_id, provider_key_id);

CREATE OR REPLACE MACRO stats_raw_rows(files, raw_from, split_ts, end_ts, raw_hours,
                                       f_master, f_key, f_model, f_provider, f_pkey) AS TABLE
SELECT date_trunc('hour', created_at) AS hour, created_at AS instant, master_id, key_id, model, provider_id,
       provider_key_id, 1 AS requests, CAST(is_success(status_code) AS BIGINT) AS successes,
       CAST(is_error(status_code) AS BIGINT) AS errors,
       CAST(is_rate_limited(status_code) AS BIGINT) AS rate_limited,
       CAST(is_provider_failure(provider_key_id, status_code) AS BIGINT) AS provider_failures,
       prompt_tokens, completion_tokens, total_tokens(prompt_tokens, completion_tokens) AS total_tokens,
       quota_cost, latency_ms AS latency_sum, latency_ms AS latency_max, CAST(is_stream AS BIGINT) AS streams,
       CAST(ttft_ms IS NOT NULL AS BIGINT) AS ttft_n, ttft_ms AS ttft_sum, ttft_ms AS ttft_max
FROM read_parquet(files)
WHERE raw_window(created_at, raw_from, split_ts, end_ts, raw_hours)
  AND stats_filter(f_master, f_key, f_model, f_provider, f_pkey,
                   master_id, key_id, model, provider_id, provider_key_id);

CREATE OR REPLACE MACRO stats_latency_rows(start_ts, split_ts, raw_hours, daily_days, dim_name, f_id) AS TABLE
SELECT hour, id, b, n
FROM latency_daily
WHERE date >= list_min(daily_days) AND date <= list_max(daily_days) AND list_contains(daily_days, date)
  AND dim = dim_name AND metric = 'latency' AND (f_id IS NULL OR id = f_id)
UNION ALL
SELECT hour, id, b, n
FROM latency_hourly
WHERE date >= CAST(start_ts AS DATE) AND date <= CAST(split_ts AS DATE)
  AND hour >= start_ts AND hour < split_ts AND NOT list_contains(raw_hours, hour)
  AND NOT list_contains(daily_days, date)
  AND dim = dim_name AND metric = 'latency' AND (f_id IS NULL OR id = f_id);

CREATE OR REPLACE MACRO stats_fine(start_ts, split_ts, raw_hours, daily_days,
                                   f_master, f_key, f_model, f_provider, f_pkey, group_by, then_by,
                                   tz_starts, tz_offsets) AS TABLE
SELECT stats_group(group_by, hour, tz_starts, tz_offsets, master_id, key_id, model, provider_id, provider_key_id)
           AS g1,
       stats_group(then_by, hour, tz_starts, tz_offsets, master_id, key_id, model, provider_id, provider_key_id)
           AS g2,
       model, master_id, key_id,
       CAST(sum(COLUMNS(lambda c: summed_measure(c))) AS BIGINT), max(COLUMNS(lambda c: max_measure(c)))
FROM stats_rows(start_ts, split_ts, raw_hours, daily_days, f_master, f_key, f_model, f_provider, f_pkey)
GROUP BY ALL;

-- With buckets, each row is also of one latency bucket b (NULL without): the raw part's histograms, in one
-- read of the files with its counts (a raw row's latency_max is its record's latency_ms). Each record's local
-- time is a column: a live request binds this macro for every new file, and binding local_time six times
-- (twice three, in g1 and g2) was a fifth of the query's time.
CREATE OR REPLACE MACRO stats_raw_fine(files, raw_from, split_ts, end_ts, raw_hours,
                                       f_master, f_key, f_model, f_provider, f_pkey, group_by, then_by,
                                       tz_starts, tz_offsets, buckets) AS TABLE
SELECT stats_group_at(group_by, instant, local, master_id, key_id, model, provider_id, provider_key_id) AS g1,
       stats_group_at(then_by, instant, local, master_id, key_id, model, provider_id, provider_key_id) AS g2,
       model, master_id, key_id,
       CASE WHEN buckets THEN CAST(latency_bucket(latency_max) AS SMALLINT) END AS b,
       CAST(sum(COLUMNS(lambda c: summed_measure(c))) AS BIGINT), max(COLUMNS(lambda c: max_measure(c)))
FROM (SELECT * EXCLUDE (hour), local_time(instant, tz_starts, tz_offsets) AS local
      FROM stats_raw_rows(files, raw_from, split_ts, end_ts, raw_hours, f_master, f_key, f_model, f_provider, f_pkey))
GROUP BY ALL;

CREATE OR REPLACE MACRO stats_hist(start_ts, split_ts, raw_hours, daily_days, dim_name, f_id, group_by, then_by,
                                   tz_starts, tz_offsets) AS TABLE
SELECT hist_group(group_by, hour, tz_starts, tz_offsets, id) AS g1,
       hist_group(then_by, hour, tz_starts, tz_offsets, id) AS g2, b, CAST(sum(n) AS BIGINT) AS n
FROM stats_latency_rows(start_ts, split_ts, raw_hours, daily_days, dim_name, f_id)
GROUP BY ALL;
