-- Each batch's settled calls per key and service, named by the batch (issue 14: money stays exact through faults).
--
-- A front door commits a batch, then sends its settlements to the keys and accounts (SettlementBatcher). Killed in between,
-- its batch is in the journal but its grains never hear of it: their counters lag until they next activate and read the
-- totals, and a key that takes back the dead front door's lease would give back calls the front door had spent. These rows
-- let a grain fetch the batches of a sender that it has not applied (seq above its delivery mark for that sender) and apply
-- them itself, once: the same delivery marks make a batch count once, whether it came as a delivery or was fetched.
--
-- Written by the same transaction as the batch's rows and totals (one more statement in the batch's round trip), one row per
-- key × service × currency of the batch. Kept for an hour (the writer's hourly upkeep deletes older ones): a grain fetches a
-- silent sender's batches within seconds (a key reclaiming its lease) or when a hold expires (Metering:ReservationTimeout,
-- 15 min by default). The primary key leads with the sender: fetches name one sender and its batches above a mark.
CREATE TABLE marketplace_journal_key_batches
(
    sender        uuid        NOT NULL,
    seq           bigint      NOT NULL,
    key_id        varchar(64) COLLATE "C" NOT NULL,
    service_id    varchar(64) COLLATE "C" NOT NULL,
    currency      varchar(3)  COLLATE "C" NOT NULL,
    account_id    varchar(64) COLLATE "C" NOT NULL,
    calls         bigint      NOT NULL,
    charged_calls bigint      NOT NULL,
    failed        bigint      NOT NULL,
    charged       bigint      NOT NULL,
    committed_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (sender, seq, key_id, service_id, currency)
);
