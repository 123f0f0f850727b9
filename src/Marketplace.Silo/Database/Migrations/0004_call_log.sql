-- The call log: one row per call, keyed by its TrackId and start time, partitioned by UTC day so that retention drops
-- whole partitions. The writer creates each day's partition ahead of time; rows of a day without one land in the default
-- partition rather than failing. Retried batches insert with ON CONFLICT DO NOTHING, so a retry never duplicates a row.

CREATE TABLE marketplace_call_log
(
    track_id        varchar(64)  NOT NULL,
    at              timestamptz  NOT NULL,
    account_id      varchar(64)  NULL,
    key_id          varchar(64)  NULL,
    service_id      varchar(64)  NOT NULL,
    version         varchar(32)  NULL,
    outcome         varchar(32)  NOT NULL,
    rejection       varchar(32)  NULL,
    status          smallint     NOT NULL,
    upstream_ms     real         NULL,
    total_ms        real         NOT NULL,
    price           bigint       NOT NULL,
    charged         bigint       NOT NULL,
    currency        char(3)      NULL,
    idempotency_key varchar(128) NULL,
    PRIMARY KEY (track_id, at)
) PARTITION BY RANGE (at);

CREATE TABLE marketplace_call_log_default PARTITION OF marketplace_call_log DEFAULT;

CREATE INDEX ix_marketplace_call_log_track ON marketplace_call_log (track_id);
CREATE INDEX ix_marketplace_call_log_account ON marketplace_call_log (account_id, at);
CREATE INDEX ix_marketplace_call_log_service ON marketplace_call_log (service_id, at);
