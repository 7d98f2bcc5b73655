-- alert_minutes: every record of [$start, $end) cut down to what the alert rules count, with the minute
-- it falls in: a backtest sums them per minute and scope (engine/alerts/backtest.py) in one pass,
-- instead of running each rule's window query (alert_rate_limit, alert_error_spike, alert_provider_down,
-- alert_traffic) over one-minute buckets; the counts are the same definitions.
-- Grain: one row per raw record.
-- Parameters: $start, $end (TIMESTAMPTZ, the half-open span); $start_day, $end_day (DATE, first and last
--   UTC day the span touches, for partition pruning).
-- Output: minute (INTEGER, whole minutes since $start), master_id, key_id, provider_key_id,
--   rate_limited, error, failure (BOOLEAN: is_rate_limited, is_error, is_provider_failure), tokens (BIGINT,
--   total_tokens).
SELECT
    CAST((epoch_us(created_at) - epoch_us($start)) // 60000000 AS INTEGER) AS minute,
    master_id,
    key_id,
    provider_key_id,
    is_rate_limited(status_code) AS rate_limited,
    is_error(status_code) AS error,
    is_provider_failure(provider_key_id, status_code) AS failure,
    total_tokens(prompt_tokens, completion_tokens) AS tokens
FROM log_records
WHERE date BETWEEN $start_day AND $end_day
  AND created_at >= $start AND created_at < $end
