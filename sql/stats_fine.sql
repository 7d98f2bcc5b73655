-- stats_fine: the closed-day part of a stats_metrics answer, summed down to the ids its distinct
-- counts and groupings need; the reader caches it (closed days change only by late data, which
-- rewrites the daily tier files the cache key watches).
-- Grain: g1 x g2 x model x master_id x key_id.
-- Parameters: $daily_days (DATE[], read from the daily tier only); $master_id, $key_id, $model,
--   $provider_id, $provider_key_id (filters, NULL = any); $group_by, $then_by (stats_group names).
-- Output: g1, g2, model, master_id, key_id, requests .. quota_cost, latency_sum, latency_max,
--   streams, ttft_n, ttft_sum, ttft_max (the stats_fine macro's columns).
SELECT *
FROM stats_fine(TIMESTAMPTZ '1970-01-01 00:00:00+00', TIMESTAMPTZ '1970-01-01 00:00:00+00',
                TIMESTAMPTZ '1970-01-01 00:00:00+00', TIMESTAMPTZ '1970-01-01 00:00:00+00', [], $daily_days,
                TRUE, $master_id, $key_id, $model, $provider_id, $provider_key_id, $group_by, $then_by)
