-- definitions: the shared meaning of SPEC.md's words, as DuckDB macros loaded into every connection.
-- Grain: none (scalar macros). Parameters: none. Output: macros
--   total_tokens(prompt, completion)  BIGINT sum that cannot overflow int32
--   is_success(status)                status_code < 400
--   is_rate_limited(status)           status_code = 429
--   is_error(status)                  status_code >= 400 and not 429
--   is_provider_failure(pk, status)   provider_key_id is not null and status_code >= 500
--   status_class(status)              '1xx' .. '5xx'
CREATE OR REPLACE MACRO total_tokens(prompt, completion) AS CAST(prompt AS BIGINT) + CAST(completion AS BIGINT);
CREATE OR REPLACE MACRO is_success(status) AS status < 400;
CREATE OR REPLACE MACRO is_rate_limited(status) AS status = 429;
CREATE OR REPLACE MACRO is_error(status) AS status >= 400 AND status <> 429;
CREATE OR REPLACE MACRO is_provider_failure(provider_key, status) AS provider_key IS NOT NULL AND status >= 500;
CREATE OR REPLACE MACRO status_class(status) AS CAST(status // 100 AS VARCHAR) || 'xx';
