-- A small journal batch (strict mode's: the few calls that arrived while the previous batch committed) is written in one
-- round trip: its statements go to the server together and run in one implicit transaction (issue 12: strict mode measured
-- four round trips of ~0.7 ms each on this machine for 0.9 ms of server work per batch). The batch's first statement claims
-- its number for its sender, as marketplace_journal_senders' upsert does for large batches, and fails when the number is
-- already stored, so the rest of the batch is rolled back with it: an earlier attempt committed the batch and the
-- writer treats this error (SQLSTATE MJ001) as "already stored".
CREATE OR REPLACE FUNCTION marketplace_journal_claim(batch_sender uuid, batch_seq bigint) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO marketplace_journal_senders AS s (sender, last_seq, updated_at) VALUES (batch_sender, batch_seq, now())
    ON CONFLICT (sender) DO UPDATE SET last_seq = excluded.last_seq, updated_at = excluded.updated_at
    WHERE s.last_seq < excluded.last_seq;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'journal batch % of sender % is already stored', batch_seq, batch_sender USING ERRCODE = 'MJ001';
    END IF;
END
$$;
