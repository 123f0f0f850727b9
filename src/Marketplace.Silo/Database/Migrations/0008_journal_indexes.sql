-- The journal's indexes, made cheaper to keep up (issue 12: PostgreSQL CPU per logged call). Measured with the calllog
-- benchmark (2026-12-02, 5,000-row batches): all indexes 15.1 µs of PostgreSQL CPU per row, without the (account_id, at)
-- index 13.3, without the (track_id, at) B-tree 8.7, without any 4.7.
--
-- 1. Nothing reads the log by account any more: reconciliation reads marketplace_account_totals, which the same
--    transaction as the rows keeps (migration 0007), and reports read the rollups.
DROP INDEX IF EXISTS ix_marketplace_call_log_account;

-- 2. TrackId lookups are equality lookups of a few rows (/admin/calls/{trackId}, /v1/calls/{trackId}): a hash index keeps a
--    4-byte hash code per row where the B-tree kept the whole TrackId (up to 64 characters) and "at".
DROP INDEX IF EXISTS ix_marketplace_call_log_track;
CREATE INDEX ix_marketplace_call_log_track ON marketplace_call_log USING hash (track_id);
