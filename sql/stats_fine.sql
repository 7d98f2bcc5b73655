-- stats_fine: the rollup part of a stats answer's counts (daily and hourly tiers, no raw records),
-- summed down to the ids its distinct counts and groupings need. The reader caches it: its key holds
-- the daily files' identities and the versions of the hours read (see rollups.py).
-- Grain: g1 x g2 x model x master_id x key_id.
-- Parameters: $start, $split, $raw_hours, $daily_days (the plan, see stats_sources.sql);
--   $master_id, $key_id, $model, $provider_id, $provider_key_id (filters, NULL = any);
--   $group_by, $then_by (stats_group names or 'none'); $tz_starts, $tz_offsets (the zone's UTC offsets,
--   see stats_sources.sql).
-- Output: g1, g2, model, master_id, key_id and the rollup measures (the stats_fine macro's columns).
SELECT *
FROM stats_fine($start, $split, $raw_hours, $daily_days, $master_id, $key_id, $model, $provider_id,
                $provider_key_id, $group_by, $then_by, $tz_starts, $tz_offsets)
