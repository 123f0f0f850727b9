-- Per-service usage rollups: calls, charged amount and the latency histogram per UTC minute, hour and day × service ×
-- version × outcome × currency, without account and key. The reports that need neither (a provider's revenue, the admin
-- summary and top services) read these: a day of hour rows is then services × versions × outcomes × 24 rows, however many
-- accounts and keys called, instead of 24 times the per-account day rows (1-3 s for 100 million calls a day before).
--
-- The call-log writer maintains this table in the same statement as the call log and marketplace_usage_rollup, from the
-- rows that statement actually added to the log, so all three commit together and a retried batch adds nothing (the same
-- exactly-once rule as migration 0005). Same bucket bounds, same '' for missing values, same histogram as there.
--
-- Few rows, each updated by nearly every batch: not partitioned; free space on the pages for HOT updates. Rows older than
-- CallLog:MinuteRollupRetentionDays (minute) and CallLog:HourRollupRetentionDays (hour) are deleted by the writer, as in
-- marketplace_usage_rollup.

CREATE TABLE marketplace_usage_service_rollup
(
    granularity     varchar(6)   NOT NULL,
    bucket_start    timestamptz  NOT NULL,
    service_id      varchar(64)  COLLATE "C" NOT NULL,
    version         varchar(32)  COLLATE "C" NOT NULL,
    outcome         varchar(32)  COLLATE "C" NOT NULL,
    currency        varchar(3)   COLLATE "C" NOT NULL,
    calls           bigint       NOT NULL,
    charged         bigint       NOT NULL,
    latency_buckets bigint[]     NOT NULL CHECK (cardinality(latency_buckets) = 15),
    PRIMARY KEY (granularity, bucket_start, service_id, version, outcome, currency)
) WITH (fillfactor = 80);

-- Provider reports name a few services within a time range.
CREATE INDEX ix_marketplace_usage_service_rollup_service ON marketplace_usage_service_rollup (service_id, granularity, bucket_start);

-- Fewer indexes to maintain on every insert: every report filtered by service now reads the table above, so the
-- per-account rollups need no service index; the call log's primary key (track_id, at) already serves lookups by TrackId;
-- and no query reads the call log by service (reports read rollups; admins look calls up by TrackId, reconciliation by
-- account).
DROP INDEX ix_marketplace_usage_rollup_service;
DROP INDEX ix_marketplace_call_log_track;
DROP INDEX ix_marketplace_call_log_service;

-- The calls rolled up so far, once, from the per-account rows (which equal a count of the log).
INSERT INTO marketplace_usage_service_rollup (granularity, bucket_start, service_id, version, outcome, currency, calls, charged, latency_buckets)
SELECT granularity, bucket_start, service_id, version, outcome, currency, sum(calls)::bigint, sum(charged)::bigint,
       ARRAY[sum(latency_buckets[1]), sum(latency_buckets[2]), sum(latency_buckets[3]), sum(latency_buckets[4]), sum(latency_buckets[5]),
             sum(latency_buckets[6]), sum(latency_buckets[7]), sum(latency_buckets[8]), sum(latency_buckets[9]), sum(latency_buckets[10]),
             sum(latency_buckets[11]), sum(latency_buckets[12]), sum(latency_buckets[13]), sum(latency_buckets[14]), sum(latency_buckets[15])]::bigint[]
FROM marketplace_usage_rollup
GROUP BY granularity, bucket_start, service_id, version, outcome, currency;
