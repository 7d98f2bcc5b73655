-- definitions: the shared meaning of SPEC.md's words, as DuckDB macros loaded into every connection.
-- Grain: none (scalar macros). Parameters: none. Output: macros
--   total_tokens(prompt, completion)  BIGINT sum that cannot overflow int32
--   is_success(status)                status_code < 400
--   is_rate_limited(status)           status_code = 429
--   is_error(status)                  status_code >= 400 and not 429
--   is_provider_failure(pk, status)   provider_key_id is not null and status_code >= 500
--   status_class(status)              '1xx' .. '5xx'
--   latency_bucket(ms), bucket_value(b)  mergeable log-scale latency histogram buckets (<= 1 % error)
--   summed_measure(column), max_measure(column)  which rollup columns merge by sum and which by max
CREATE OR REPLACE MACRO total_tokens(prompt, completion) AS CAST(prompt AS BIGINT) + CAST(completion AS BIGINT);
CREATE OR REPLACE MACRO is_success(status) AS status < 400;
CREATE OR REPLACE MACRO is_rate_limited(status) AS status = 429;
CREATE OR REPLACE MACRO is_error(status) AS status >= 400 AND status <> 429;
CREATE OR REPLACE MACRO is_provider_failure(provider_key, status) AS provider_key IS NOT NULL AND status >= 500;
CREATE OR REPLACE MACRO status_class(status) AS CAST(status // 100 AS VARCHAR) || 'xx';
-- Latency histograms (rollups): log-scale buckets of ratio 1.02, so a bucket's representative value is
-- within 0.99 % of every value in it (DDSketch). Bucket 0 holds exactly 0 ms; bucket b >= 1 holds
-- (1.02^(b-2), 1.02^(b-1)].
CREATE OR REPLACE MACRO latency_bucket(ms) AS CASE WHEN ms <= 0 THEN 0 ELSE CAST(ceil(ln(ms) / ln(1.02)) AS INTEGER) + 1 END;
CREATE OR REPLACE MACRO bucket_value(b) AS CASE WHEN b = 0 THEN 0.0 ELSE 2.0 * pow(1.02, b - 1) / 2.02 END;
-- The measures of a rollup row, by how rows merge: every query that merges rollup rows selects them with
-- CAST(sum(COLUMNS(lambda c: summed_measure(c))) AS BIGINT) and max(COLUMNS(lambda c: max_measure(c))),
-- so a new measure is declared here once.
CREATE OR REPLACE MACRO summed_measure(c) AS c IN ('requests', 'successes', 'errors', 'rate_limited',
    'provider_failures', 'prompt_tokens', 'completion_tokens', 'total_tokens', 'quota_cost', 'latency_sum',
    'streams', 'ttft_n', 'ttft_sum');
CREATE OR REPLACE MACRO max_measure(c) AS c IN ('latency_max', 'ttft_max');
