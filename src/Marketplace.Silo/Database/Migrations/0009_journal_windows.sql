-- Quota windows in the journal (issue 12): accounts and keys rebuild their counters from the totals when they activate,
-- and their caps count calls in a day or a month, not since the beginning. The totals of migration 0007 therefore also keep
-- the settled calls (rows with account_id set, as there) of the latest window each row had calls in.
--
-- 1. Account totals: month is the first day of the latest UTC month with calls, month_calls the settled calls in it (what
--    AccountGrain's monthly call cap counts). A reader takes month_calls only when month is the month it asks about.
--
-- 2. Key totals: day is the latest quota day with calls, month the first day of the latest quota month, both in the key's
--    window offset as each row carries it (JournalWindows.Day / Month of "at" and the record's WindowOffsetMinutes, what
--    ApiKeyGrain's daily and monthly quotas count); day_calls and month_calls are the settled calls in them.
--
-- 3. The writer aggregates each batch's latest window per row in memory and upserts it with the totals: a newer window
--    replaces the stored one, the same window adds to it, an older one (a late batch) leaves it. No extra statement per
--    batch; the columns are not indexed, so updates stay HOT. '1970-01-01' with 0 calls means "no window yet".

ALTER TABLE marketplace_account_totals
    ADD COLUMN month       date   NOT NULL DEFAULT '1970-01-01',
    ADD COLUMN month_calls bigint NOT NULL DEFAULT 0;

ALTER TABLE marketplace_key_totals
    ADD COLUMN day         date   NOT NULL DEFAULT '1970-01-01',
    ADD COLUMN day_calls   bigint NOT NULL DEFAULT 0,
    ADD COLUMN month       date   NOT NULL DEFAULT '1970-01-01',
    ADD COLUMN month_calls bigint NOT NULL DEFAULT 0;

-- 4. The calls logged so far, once (the migration runs before the writer starts): the current UTC day and month, at offset 0
--    for every key. An approximation for upgraded installs: the log does not say which offset a key had, so a key with
--    another offset starts from its UTC day and month until its next call in a newer window. Older windows are over and
--    count nothing.

UPDATE marketplace_account_totals AS t
SET month = m.month, month_calls = m.calls
FROM (SELECT account_id, coalesce(rtrim(currency), '') AS currency,
             date_trunc('month', now() AT TIME ZONE 'UTC')::date AS month, count(*) AS calls
      FROM marketplace_call_log
      WHERE account_id IS NOT NULL
        AND at >= date_trunc('month', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'
        AND at < (date_trunc('month', now() AT TIME ZONE 'UTC') + interval '1 month') AT TIME ZONE 'UTC'
      GROUP BY 1, 2) AS m
WHERE t.account_id = m.account_id AND t.currency = m.currency;

UPDATE marketplace_key_totals AS t
SET month = m.month, month_calls = m.month_calls,
    day = CASE WHEN m.day_calls > 0 THEN m.day ELSE t.day END, day_calls = m.day_calls
FROM (SELECT key_id, service_id, coalesce(rtrim(currency), '') AS currency,
             date_trunc('month', now() AT TIME ZONE 'UTC')::date AS month, count(*) AS month_calls,
             (now() AT TIME ZONE 'UTC')::date AS day,
             count(*) FILTER (WHERE at >= date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'
                                AND at < (date_trunc('day', now() AT TIME ZONE 'UTC') + interval '1 day') AT TIME ZONE 'UTC') AS day_calls
      FROM marketplace_call_log
      WHERE account_id IS NOT NULL AND key_id IS NOT NULL
        AND at >= date_trunc('month', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'
        AND at < (date_trunc('month', now() AT TIME ZONE 'UTC') + interval '1 month') AT TIME ZONE 'UTC'
      GROUP BY 1, 2, 3) AS m
WHERE t.key_id = m.key_id AND t.service_id = m.service_id AND t.currency = m.currency;
