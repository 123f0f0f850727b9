-- The call log becomes the journal (issue 12): every call is one row with its own id, batches are written exactly once
-- by batch id, and each batch's transaction also adds its calls to per-account, per-key × service and per-service totals.
--
-- 1. Call identity. call_id is assigned by the marketplace when the call starts: a UUIDv7 of the call's start time, so
--    the id itself names the row's day partition and millisecond (a lookup by id reads one partition, a 1 ms range of
--    the BRIN index on "at"). The caller's TrackId is kept and indexed for lookups but is no key: two calls with one TrackId
--    are two rows. Calls logged before this migration get a UUIDv7 of their "at" (random bits from gen_random_uuid()).
--
-- 2. No per-row uniqueness. The primary key (track_id, at) dropped the second of two calls that reused a TrackId in the
--    same instant. Exactly-once is now per batch (marketplace_journal_senders below), so the log has no unique index at
--    all: a unique index on a partitioned table must contain the partition key, and would only cost a lookup per row.

ALTER TABLE marketplace_call_log ADD COLUMN call_id uuid;

UPDATE marketplace_call_log
SET call_id = encode(set_bit(set_bit(overlay(uuid_send(gen_random_uuid())
                                             PLACING substring(int8send(floor(extract(epoch FROM at) * 1000)::bigint) FROM 3)
                                             FROM 1 FOR 6), 52, 1), 53, 1), 'hex')::uuid;

ALTER TABLE marketplace_call_log ALTER COLUMN call_id SET NOT NULL;
ALTER TABLE marketplace_call_log DROP CONSTRAINT marketplace_call_log_pkey;

-- TrackId lookups (/admin/calls/{trackId}, /v1/calls/{trackId}); "at" orders a TrackId's rows.
CREATE INDEX ix_marketplace_call_log_track ON marketplace_call_log (track_id, at);
-- Call id lookups narrow to the id's millisecond: rows arrive in time order (within a flush interval), so a block range
-- index finds them for a few bytes per 128 pages, where a B-tree on call_id would cost an entry per row.
CREATE INDEX ix_marketplace_call_log_at ON marketplace_call_log USING brin (at);

-- 3. Batches exactly once. Each call-log writer (one per process) has a sender id, new at every process start, and
--    numbers its batches 1, 2, 3... in commit order, one batch in flight at a time. A batch's transaction first advances
--    last_seq to the batch's number, only when that is higher; when it cannot, the batch was already committed (an
--    earlier attempt whose answer was lost) and the transaction writes nothing. A retried batch therefore changes nothing,
--    whichever attempt committed. The writer deletes rows not updated for 7 days (a retry never comes that late).

CREATE TABLE marketplace_journal_senders
(
    sender     uuid        NOT NULL PRIMARY KEY,
    last_seq   bigint      NOT NULL,
    updated_at timestamptz NOT NULL
);

-- 4. Totals, added by the same transaction as the batch's rows, from the batch aggregated in memory. They count settled
--    calls exactly as the grains' counters do, so that grain counters can be rebuilt from them:
--
--    - a settled call is a row with account_id set. The pipeline sets the account only once ApiKeyGrain admitted the call,
--      and every admitted call is settled once (SettlementBatcher.Record: served, shed after admission, failed in
--      forwarding, or cancelled by its caller); rejected, refused, shed-before-admission and replayed (Idempotency-Key)
--      calls have no account and are in no total (they are in the rollups);
--    - calls         = settled calls                           (AccountGrain/ApiKeyGrain Usage.Calls, DataServiceGrain.Calls)
--    - charged_calls = settled calls with charged > 0          (Usage.Charged: SettlementBatcher.ServiceSums "charge > 0")
--    - failed        = settled calls whose outcome is not 'succeeded'
--                                                              (Usage.Failed, DataServiceGrain.Failed: "!succeeded", where
--                                                               succeeded is CallOutcome.Succeeded, an upstream 2xx)
--    - charged       = sum of charged, in minor units of currency
--                                                              (AccountGrain.TotalCharged, DataServiceGrain.Revenue)
--
--    currency is the row's currency (the service's price currency, which a charge requires the account to have), '' when
--    missing: amounts of two currencies are never added. Key totals are per key × service (ApiKeyGrain counts per service).
--    Rows are upserted in key order by every writer, so concurrent writers do not deadlock.

CREATE TABLE marketplace_account_totals
(
    account_id    varchar(64) COLLATE "C" NOT NULL,
    currency      varchar(3)  COLLATE "C" NOT NULL,
    calls         bigint      NOT NULL,
    charged_calls bigint      NOT NULL,
    failed        bigint      NOT NULL,
    charged       bigint      NOT NULL,
    PRIMARY KEY (account_id, currency)
) WITH (fillfactor = 80);

CREATE TABLE marketplace_key_totals
(
    key_id        varchar(64) COLLATE "C" NOT NULL,
    service_id    varchar(64) COLLATE "C" NOT NULL,
    currency      varchar(3)  COLLATE "C" NOT NULL,
    calls         bigint      NOT NULL,
    charged_calls bigint      NOT NULL,
    failed        bigint      NOT NULL,
    charged       bigint      NOT NULL,
    PRIMARY KEY (key_id, service_id, currency)
) WITH (fillfactor = 80);

CREATE TABLE marketplace_service_totals
(
    service_id    varchar(64) COLLATE "C" NOT NULL,
    currency      varchar(3)  COLLATE "C" NOT NULL,
    calls         bigint      NOT NULL,
    charged_calls bigint      NOT NULL,
    failed        bigint      NOT NULL,
    charged       bigint      NOT NULL,
    PRIMARY KEY (service_id, currency)
) WITH (fillfactor = 80);

-- The calls logged so far, once (the migration runs before the writer starts).
INSERT INTO marketplace_account_totals (account_id, currency, calls, charged_calls, failed, charged)
SELECT account_id, coalesce(rtrim(currency), ''), count(*), count(*) FILTER (WHERE charged > 0),
       count(*) FILTER (WHERE outcome <> 'succeeded'), sum(charged)::bigint
FROM marketplace_call_log WHERE account_id IS NOT NULL
GROUP BY 1, 2;

INSERT INTO marketplace_key_totals (key_id, service_id, currency, calls, charged_calls, failed, charged)
SELECT key_id, service_id, coalesce(rtrim(currency), ''), count(*), count(*) FILTER (WHERE charged > 0),
       count(*) FILTER (WHERE outcome <> 'succeeded'), sum(charged)::bigint
FROM marketplace_call_log WHERE account_id IS NOT NULL AND key_id IS NOT NULL
GROUP BY 1, 2, 3;

INSERT INTO marketplace_service_totals (service_id, currency, calls, charged_calls, failed, charged)
SELECT service_id, coalesce(rtrim(currency), ''), count(*), count(*) FILTER (WHERE charged > 0),
       count(*) FILTER (WHERE outcome <> 'succeeded'), sum(charged)::bigint
FROM marketplace_call_log WHERE account_id IS NOT NULL
GROUP BY 1, 2;
