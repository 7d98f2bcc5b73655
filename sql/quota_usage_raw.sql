-- quota_usage_raw: the raw part of each key's quota usage within one scanned range [$lo, $hi): quota_cost of
-- the key's records from its period start on that the rollups do not hold (see quota_usage_rollups.sql):
-- the partial first hour of a start that is not on the hour, the dirty hours, and everything from
-- $split on. The engine scans only the ranges where such records can be, one query each, so that
-- DuckDB reads few partitions and row groups.
-- Grain: one row per key with raw usage in the range (keys without any are absent).
-- Parameters: $key_ids BIGINT[], $starts TIMESTAMPTZ[] (each key's period start, same order);
--   $split TIMESTAMPTZ; $raw_hours TIMESTAMPTZ[] (dirty hours); $lo, $hi TIMESTAMPTZ (the range scanned,
--   $hi at most the usage's end); $lo_day, $hi_day DATE (its first and last UTC day, for partition pruning).
-- Output: key_id BIGINT, used BIGINT
WITH periods AS (
    SELECT unnest(CAST($key_ids AS BIGINT[])) AS key_id, unnest(CAST($starts AS TIMESTAMPTZ[])) AS period_start
)
SELECT r.key_id, CAST(sum(r.quota_cost) AS BIGINT) AS used
FROM log_records AS r
JOIN periods AS p ON p.key_id = r.key_id
WHERE r.date >= $lo_day AND r.date <= $hi_day
  AND r.created_at >= $lo AND r.created_at < $hi
  AND r.created_at >= p.period_start
  AND (date_trunc('hour', r.created_at) < p.period_start
       OR r.created_at >= $split
       OR list_contains($raw_hours, date_trunc('hour', r.created_at)))
GROUP BY r.key_id
ORDER BY r.key_id
