-- stats_live_hist: the raw part of an answer's latency histograms from some lake files (kept file by
-- file like stats_live_fine): one bucket per record, merged per group.
-- Grain: g1 x g2 x bucket.
-- Parameters: $files (VARCHAR[]); $raw_from, $split, $end (NULL: to the file's end), $raw_hours (the
--   plan's raw window, see stats_sources.sql); $dim, $dim_id, $group_by, $then_by, $tz_starts, $tz_offsets (as stats_hist).
-- Output: g1, g2, b, n.
SELECT *
FROM stats_raw_hist($files, $raw_from, $split, $end, $raw_hours, $dim, $dim_id, $group_by, $then_by, $tz_starts, $tz_offsets)
