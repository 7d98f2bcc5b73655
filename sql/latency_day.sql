-- latency_day: the per-dimension histograms of one closed day, merged from its hourly histograms.
-- Grain: day x dim x id x metric x bucket (as latency_hourly; see engine/stats/histogram_counts.py).
-- Parameters: $day (DATE).
-- Output: the latency_daily columns (= latency_hourly's; hour is the day's 00:00), sorted.
SELECT CAST($day AS TIMESTAMPTZ) AS hour, dim, id, metric, b, CAST(sum(n) AS BIGINT) AS n
FROM latency_hourly
WHERE date = $day
GROUP BY dim, id, metric, b
ORDER BY dim, id NULLS FIRST, metric, b
