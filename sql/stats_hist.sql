-- stats_hist: the closed-day part of a stats_latency answer: one dimension's daily histograms merged
-- per group; the reader caches it like stats_fine.
-- Grain: g1 x g2 x bucket.
-- Parameters: $daily_days (DATE[], read from the daily tier only); $dim, $dim_id (the histogram
--   dimension and an optional id of it); $group_by, $then_by ('none', 'day', 'hour' or $dim).
-- Output: g1, g2, b, n.
SELECT *
FROM stats_hist(TIMESTAMPTZ '1970-01-01 00:00:00+00', TIMESTAMPTZ '1970-01-01 00:00:00+00',
                TIMESTAMPTZ '1970-01-01 00:00:00+00', TIMESTAMPTZ '1970-01-01 00:00:00+00', [], $daily_days,
                TRUE, $dim, $dim_id, $group_by, $then_by)
