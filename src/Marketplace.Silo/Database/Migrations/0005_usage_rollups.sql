-- Usage rollups: calls, charged amount and a latency histogram per UTC minute, hour and day × account × key × service ×
-- version × outcome × currency. Reports read only this table, never the call log. The call-log writer maintains it in
-- the same statement that inserts a batch into the log, counting only the rows that insert actually added, so a retried
-- batch (whose rows are already in the log) adds nothing here either.
--
-- Missing values are stored as '' (rejected calls have no account; calls never routed have no version; calls refused
-- before a price was known have no currency), so that every column can be part of the key.
--
-- currency is the currency of the service's price at the time of the call. A charge needs the account's currency to
-- equal it, so within one account every row has the account's currency; it is in the key so that no report adds
-- amounts of two currencies.
--
-- latency_buckets counts calls by total time (ms) into 15 buckets: [0,1), [1,2), [2,5), [5,10), [10,20), [20,50),
-- [50,100), [100,200), [200,500), [500,1000), [1000,2000), [2000,5000), [5000,10000), [10000,30000), [30000,∞)
-- (CallLogWriter.LatencyBoundsMs; the bounds are fixed: changing them needs a new table).
--
-- One partition per granularity: the writer upserts minute, hour and day rows together, and a day's report should read
-- the few hundred thousand day rows packed together, not scattered among a hundred times as many minute rows. (It also
-- lets minute rows get their own retention later.)
--
-- The key columns compare bytewise (COLLATE "C"): identifiers need no linguistic order, and every batch upserts thousands
-- of rows through an eight-column key. Rows of the current hour and day are updated by every batch; the free space
-- (fillfactor) lets most of those updates stay on the row's page without new index entries (HOT updates).
--
-- Provider reports filter by service_id with the provider's service ids from the catalog, so no provider_id is stored
-- (the call record does not carry one, and a service's calls stay with the service).

CREATE TABLE marketplace_usage_rollup
(
    granularity     varchar(6)   NOT NULL,
    bucket_start    timestamptz  NOT NULL,
    account_id      varchar(64)  COLLATE "C" NOT NULL,
    key_id          varchar(64)  COLLATE "C" NOT NULL,
    service_id      varchar(64)  COLLATE "C" NOT NULL,
    version         varchar(32)  COLLATE "C" NOT NULL,
    outcome         varchar(32)  COLLATE "C" NOT NULL,
    currency        varchar(3)   COLLATE "C" NOT NULL,
    calls           bigint       NOT NULL,
    charged         bigint       NOT NULL,
    latency_buckets bigint[]     NOT NULL CHECK (cardinality(latency_buckets) = 15),
    PRIMARY KEY (granularity, bucket_start, account_id, key_id, service_id, version, outcome, currency)
) PARTITION BY LIST (granularity);

CREATE TABLE marketplace_usage_rollup_minute PARTITION OF marketplace_usage_rollup FOR VALUES IN ('minute') WITH (fillfactor = 90);
CREATE TABLE marketplace_usage_rollup_hour PARTITION OF marketplace_usage_rollup FOR VALUES IN ('hour') WITH (fillfactor = 90);
CREATE TABLE marketplace_usage_rollup_day PARTITION OF marketplace_usage_rollup FOR VALUES IN ('day') WITH (fillfactor = 90);

-- The primary key serves the admin reports (every row of a granularity in a time range). Consumer and provider
-- reports look up one account or a few services within a time range: equality column first, then the range (the
-- granularity is the partition).
CREATE INDEX ix_marketplace_usage_rollup_account ON marketplace_usage_rollup (account_id, bucket_start);
CREATE INDEX ix_marketplace_usage_rollup_service ON marketplace_usage_rollup (service_id, bucket_start);

-- Calls logged before this migration: rolled up once, here (the migration runs before the writer starts).
INSERT INTO marketplace_usage_rollup (granularity, bucket_start, account_id, key_id, service_id, version, outcome, currency,
                                      calls, charged, latency_buckets)
SELECT granularity, bucket_start, account_id, key_id, service_id, version, outcome, currency, count(*), sum(charged)::bigint,
       ARRAY[count(*) FILTER (WHERE latency_bucket = 0), count(*) FILTER (WHERE latency_bucket = 1), count(*) FILTER (WHERE latency_bucket = 2),
             count(*) FILTER (WHERE latency_bucket = 3), count(*) FILTER (WHERE latency_bucket = 4), count(*) FILTER (WHERE latency_bucket = 5),
             count(*) FILTER (WHERE latency_bucket = 6), count(*) FILTER (WHERE latency_bucket = 7), count(*) FILTER (WHERE latency_bucket = 8),
             count(*) FILTER (WHERE latency_bucket = 9), count(*) FILTER (WHERE latency_bucket = 10), count(*) FILTER (WHERE latency_bucket = 11),
             count(*) FILTER (WHERE latency_bucket = 12), count(*) FILTER (WHERE latency_bucket = 13), count(*) FILTER (WHERE latency_bucket = 14)]
FROM (SELECT g.granularity, date_trunc(g.granularity, l.at, 'UTC') AS bucket_start, coalesce(l.account_id, '') AS account_id,
             coalesce(l.key_id, '') AS key_id, l.service_id, coalesce(l.version, '') AS version, l.outcome,
             coalesce(rtrim(l.currency), '') AS currency, l.charged,
             width_bucket(l.total_ms, '{1,2,5,10,20,50,100,200,500,1000,2000,5000,10000,30000}'::real[]) AS latency_bucket
      FROM marketplace_call_log l
      CROSS JOIN (VALUES ('minute'), ('hour'), ('day')) AS g (granularity)) AS calls
GROUP BY granularity, bucket_start, account_id, key_id, service_id, version, outcome, currency;
