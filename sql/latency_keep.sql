-- latency_keep: the stored hourly histogram rows of one day, except some hours (being recomputed).
-- Grain: as latency_hourly (hour x dim x id x metric x bucket).
-- Parameters: $day (DATE, the partition), $hours (TIMESTAMPTZ[], the hours to leave out).
-- Output: the latency_hourly columns (without the date partition column).
SELECT * EXCLUDE (date)
FROM latency_hourly
WHERE date = $day AND NOT list_contains($hours, hour)
