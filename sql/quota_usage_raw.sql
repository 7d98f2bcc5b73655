-- quota_usage_raw: the raw part of each key's quota usage within one range of time, from some lake files:
-- quota_cost of the key's records from its period start on that the rollups do not hold (see
-- quota_usage_rollups.sql): the partial first hour of a start that is not on the hour, the dirty hours,
-- and everything from $split on. The engine reads each range on its own, and keeps the part of each
-- file it has read (engine/stats/live.py): a published file never changes.
-- Grain: one row per key with raw usage in those files (keys without any are absent).
-- Parameters: $files VARCHAR[] (log_records files that may hold records of the range); $lo TIMESTAMPTZ
--   (the range's start); $end TIMESTAMPTZ (its end; NULL reads the files whole: all their records are
--   before it); $key_ids BIGINT[], $starts TIMESTAMPTZ[] (each key's period start, same order);
--   $split TIMESTAMPTZ; $raw_hours TIMESTAMPTZ[] (dirty hours).
-- Output: key_id BIGINT, used BIGINT
WITH periods AS (
    SELECT unnest(CAST($key_ids AS BIGINT[])) AS key_id, unnest(CAST($starts AS TIMESTAMPTZ[])) AS period_start
)
SELECT r.key_id, CAST(sum(r.quota_cost) AS BIGINT) AS used
FROM read_parquet($files) AS r
JOIN periods AS p ON p.key_id = r.key_id
WHERE r.created_at >= $lo AND ($end IS NULL OR r.created_at < $end)
  AND r.created_at >= p.period_start
  AND (date_trunc('hour', r.created_at) < p.period_start
       OR r.created_at >= $split
       OR list_contains($raw_hours, date_trunc('hour', r.created_at)))
GROUP BY r.key_id
ORDER BY r.key_id
