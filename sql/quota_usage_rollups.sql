-- quota_usage_rollups: the rolled-up part of each key's quota usage: quota_cost of the whole hours of its
-- period that the rollups hold (engine/stats/usage.py adds the raw part; together they are exact).
-- A key's period is [its start, $split) here: whole days listed in $daily_days that start at or after the
-- key's start come from the daily tier; other hours from the hourly tier when they start at or after
-- the key's start, end by $split and are not dirty ($raw_hours). The partial first hour of a start that
-- is not on the hour, the dirty hours and the hours from $split on are the raw part's.
-- Grain: one row per key with rolled-up usage (keys without any are absent).
-- Parameters: $key_ids BIGINT[], $starts TIMESTAMPTZ[] (each key's period start, same order);
--   $split TIMESTAMPTZ (the end cut down to the hour); $raw_hours TIMESTAMPTZ[] (dirty hours);
--   $daily_days DATE[] (closed clean days with a daily tier, wholly before $split);
--   $hourly_days DATE[] (the days whose hourly rows may be needed: the others in the range, and the
--   days of starts that are not at midnight).
-- Output: key_id BIGINT, used BIGINT
WITH periods AS (
    SELECT unnest(CAST($key_ids AS BIGINT[])) AS key_id, unnest(CAST($starts AS TIMESTAMPTZ[])) AS period_start
),
rolled AS (
    SELECT d.key_id, d.quota_cost
    FROM rollups_daily AS d
    JOIN periods AS p ON p.key_id = d.key_id
    WHERE d.date >= list_min($daily_days) AND d.date <= list_max($daily_days)
      AND list_contains($daily_days, d.date)
      AND CAST(d.date AS TIMESTAMPTZ) >= p.period_start
    UNION ALL
    SELECT h.key_id, h.quota_cost
    FROM rollups_hourly AS h
    JOIN periods AS p ON p.key_id = h.key_id
    WHERE h.date >= list_min($hourly_days) AND h.date <= list_max($hourly_days)
      AND list_contains($hourly_days, h.date)
      AND h.hour >= p.period_start AND h.hour < $split AND NOT list_contains($raw_hours, h.hour)
      -- a day this key took whole from the daily tier
      AND NOT (list_contains($daily_days, h.date) AND CAST(h.date AS TIMESTAMPTZ) >= p.period_start)
)
SELECT key_id, CAST(sum(quota_cost) AS BIGINT) AS used
FROM rolled
GROUP BY key_id
ORDER BY key_id
