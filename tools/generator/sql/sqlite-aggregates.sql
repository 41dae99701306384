-- The pipeline event each row becomes (generate --format api).
CREATE VIEW pipeline_events AS
SELECT
    event_ref AS id,
    event_source AS source,
    CASE event_type WHEN 1 THEN 'call_out' WHEN 2 THEN 'call_in' WHEN 3 THEN 'sms' WHEN 5 THEN 'data_session' END AS type,
    event_date AS timestamp,
    CASE WHEN event_type = 2 THEN called_number ELSE calling_number END AS user_id,
    duration_seconds,
    bytes_down * (1 + called_number / 1000 % 10) / 50 AS bytes_up,
    bytes_down
FROM (
    SELECT *,
           CASE WHEN event_type = 5
                THEN duration_seconds * 128 * (1 + called_number % 10) * (1 + called_number / 10 % 10)
                     * (1 + called_number / 100 % 10)
           END AS bytes_down
    FROM calls
) AS calls_with_volume;

-- Each event once for its UTC day and once for its UTC month.
CREATE VIEW event_periods AS
SELECT 'day' AS period, substr(timestamp, 1, 10) AS period_start, * FROM pipeline_events
UNION ALL
SELECT 'month' AS period, substr(timestamp, 1, 7) AS period_start, * FROM pipeline_events;

CREATE VIEW user_totals AS
SELECT period, period_start, user_id,
       count(*) AS events,
       count(*) FILTER (WHERE type = 'call_out') AS call_out,
       count(*) FILTER (WHERE type = 'call_in') AS call_in,
       count(*) FILTER (WHERE type = 'sms') AS sms,
       count(*) FILTER (WHERE type = 'data_session') AS data_session,
       sum(duration_seconds) AS duration_seconds,
       coalesce(sum(bytes_up), 0) AS bytes_up,
       coalesce(sum(bytes_down), 0) AS bytes_down
FROM event_periods
GROUP BY period, period_start, user_id;

CREATE VIEW global_totals AS
SELECT period, period_start,
       count(*) AS events,
       count(*) FILTER (WHERE type = 'call_out') AS call_out,
       count(*) FILTER (WHERE type = 'call_in') AS call_in,
       count(*) FILTER (WHERE type = 'sms') AS sms,
       count(*) FILTER (WHERE type = 'data_session') AS data_session,
       sum(duration_seconds) AS duration_seconds,
       coalesce(sum(bytes_up), 0) AS bytes_up,
       coalesce(sum(bytes_down), 0) AS bytes_down
FROM event_periods
GROUP BY period, period_start;

CREATE VIEW user_source_counts AS
SELECT period, period_start, user_id, source, count(*) AS events
FROM event_periods
GROUP BY period, period_start, user_id, source;

CREATE VIEW global_source_counts AS
SELECT period, period_start, source, count(*) AS events
FROM event_periods
GROUP BY period, period_start, source;
