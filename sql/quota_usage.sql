-- quota_usage: quota units each key consumed since the start of its current quota period, from raw log records.
-- Grain: one row per key asked for (0 when it has no records in its period).
-- Parameters: $key_ids BIGINT[] keys; $starts TIMESTAMPTZ[] the period start of each key (same order);
--   $since TIMESTAMPTZ the earliest of $starts (prunes date partitions); $end TIMESTAMPTZ exclusive end (now).
-- Output: key_id BIGINT, used BIGINT (sum of quota_cost of the key's records with start <= created_at < end)
WITH periods AS (
    SELECT unnest(CAST($key_ids AS BIGINT[])) AS key_id, unnest(CAST($starts AS TIMESTAMPTZ[])) AS period_start
),
recent AS (
    SELECT key_id, created_at, quota_cost
    FROM log_records
    WHERE date >= CAST(CAST($since AS TIMESTAMPTZ) AS DATE) AND date <= CAST(CAST($end AS TIMESTAMPTZ) AS DATE)
      AND created_at >= $since AND created_at < $end
)
SELECT p.key_id, CAST(coalesce(sum(r.quota_cost), 0) AS BIGINT) AS used
FROM periods AS p
LEFT JOIN recent AS r ON r.key_id = p.key_id AND r.created_at >= p.period_start
GROUP BY p.key_id
ORDER BY p.key_id
