-- quota_usage_hours: quota_cost per key in some hours of one day, from the hourly rollups: what quota
-- usage keeps of the current day hour by hour (engine/stats/usage.py), each hour until its rows change.
-- Grain: one row per hour and key with rolled-up usage.
-- Parameters: $day (DATE, the partition); $hours (TIMESTAMPTZ[], the hours wanted, all of that day).
-- Output: hour TIMESTAMPTZ, key_id BIGINT, used BIGINT
SELECT hour, key_id, CAST(sum(quota_cost) AS BIGINT) AS used
FROM rollups_hourly
WHERE date = $day AND list_contains($hours, hour)
GROUP BY hour, key_id
ORDER BY hour, key_id
