-- bucket_values: the representative latency of histogram buckets (definitions.sql's bucket_value),
-- for percentiles the reader ranks over merged histograms (engine/stats/histograms.py).
-- Grain: one row per bucket given.
-- Parameters: $buckets (INTEGER[]).
-- Output: b, ms (DOUBLE).
SELECT b, bucket_value(b) AS ms
FROM unnest($buckets) AS t(b)
