-- stats_hist: the rollup part of an answer's latency percentiles: one dimension's daily and hourly
-- histograms merged per group; the reader caches it like stats_fine.
-- Grain: g1 x g2 x bucket.
-- Parameters: $start, $split, $raw_hours, $daily_days (the plan, see stats_sources.sql);
--   $dim, $dim_id (the histogram dimension and an optional id of it); $group_by, $then_by ('none',
--   'day', 'hour' or $dim); $tz_starts, $tz_offsets (the zone's
--   UTC offsets, see stats_sources.sql).
-- Output: g1, g2, b, n.
SELECT *
FROM stats_hist($start, $split, $raw_hours, $daily_days, $dim, $dim_id, $group_by, $then_by, $tz_starts, $tz_offsets)
