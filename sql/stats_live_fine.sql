-- stats_live_fine: the raw part of a stats answer's counts, and with $buckets of its latency histograms,
-- from some lake files (the reader keeps it file by file, see engine/stats/live.py), summed down like
-- stats_fine. A row's requests by (g1, g2, b) are the histogram counts of the answer's one histogram
-- dimension: that of its filters and groups (engine/stats/reader.py `_histogram_dim`), so the records
-- a histogram of it would count are those the filters keep, in the same groups.
-- Grain: g1 x g2 x model x master_id x key_id (x b with $buckets).
-- Parameters: $files (VARCHAR[], Parquet files of log_records); $raw_from, $split, $end (NULL: to the
--   file's end), $raw_hours (the plan's raw window, see stats_sources.sql); $master_id, $key_id,
--   $model, $provider_id, $provider_key_id (filters, NULL = any); $group_by, $then_by;
--   $tz_starts, $tz_offsets (the zone's UTC offsets, see stats_sources.sql); $buckets (BOOLEAN).
-- Output: the stats_fine columns, and b (SMALLINT latency bucket, NULL without $buckets).
SELECT *
FROM stats_raw_fine($files, $raw_from, $split, $end, $raw_hours, $master_id, $key_id, $model, $provider_id,
                    $provider_key_id, $group_by, $then_by, $tz_starts, $tz_offsets, $buckets)
