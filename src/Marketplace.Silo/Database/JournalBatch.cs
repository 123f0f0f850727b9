using Marketplace.Grains;
using Npgsql;
using NpgsqlTypes;

namespace Marketplace.Silo.Database;

/// <summary>
/// Writes one batch of the journal (the call log) in one transaction, exactly once per sender and batch number:
/// <list type="number">
/// <item>advances the sender's <c>last_seq</c> to the batch's number, only when that is higher; when it cannot, an earlier
/// attempt of this batch committed (its answer was lost) and nothing more is written;</item>
/// <item>copies the rows into <c>marketplace_call_log</c> (binary COPY);</item>
/// <item>upserts the batch, aggregated in memory, into the per-account and per-service rollups (minute, hour, day) and the
/// per-account, per-key × service and per-service totals (migration 0007 defines what they count), with the latest quota
/// windows of accounts and keys (migration 0009), and the batch's per key × service sums under its name (migration 0011:
/// what a grain fetches when the batch's settlements never reached it).</item>
/// </list>
/// All of it commits or none does, so the rollups always equal a count of the log and the totals its sums.
/// A batch of at most <see cref="InlineRows"/> rows (strict mode's usual batch) goes in one round trip instead: its rows
/// are inserted from arrays and every statement is sent at once, in one implicit transaction whose first statement
/// (<c>marketplace_journal_claim</c>, migration 0010) fails when the number is already stored.
/// </summary>
public static partial class JournalBatch
{
    private const string ClaimSql = """
        INSERT INTO marketplace_journal_senders AS s (sender, last_seq, updated_at) VALUES ($1, $2, now())
        ON CONFLICT (sender) DO UPDATE SET last_seq = excluded.last_seq, updated_at = excluded.updated_at
        WHERE s.last_seq < excluded.last_seq
        RETURNING s.last_seq
        """;

    private const string InlineClaimSql = "SELECT marketplace_journal_claim($1, $2)";

    // What marketplace_journal_claim raises when the batch's number is already stored.
    private const string AlreadyStoredState = "MJ001";

    private const string InlineRowsSql = """
        INSERT INTO marketplace_call_log (call_id, track_id, at, account_id, key_id, service_id, version, outcome, rejection, status,
                                          upstream_ms, total_ms, price, charged, currency, idempotency_key)
        SELECT * FROM unnest($1::uuid[], $2::varchar[], $3::timestamptz[], $4::varchar[], $5::varchar[], $6::varchar[], $7::varchar[],
                             $8::varchar[], $9::varchar[], $10::smallint[], $11::real[], $12::real[], $13::bigint[], $14::bigint[],
                             $15::bpchar[], $16::varchar[])
        """;

    /// <summary>
    /// Most rows a batch may have to be written in one round trip (arrays instead of COPY). Measured with
    /// <c>journal-latency</c> (2026-12-03): a batch of 8 rows took 2.9 ms over the four round trips of a COPY transaction.
    /// </summary>
    public const int InlineRows = 64;

    private const string CopySql =
        "COPY marketplace_call_log (call_id, track_id, at, account_id, key_id, service_id, version, outcome, rejection, status, " +
        "upstream_ms, total_ms, price, charged, currency, idempotency_key) FROM STDIN (FORMAT BINARY)";

    private static readonly int Buckets = CallLogWriter.LatencyBoundsMs.Count + 1;

    private static readonly string HistogramColumns = string.Join(", ", Enumerable.Range(0, Buckets).Select(b => $"h{b}"));

    private static readonly string HistogramSum =
        string.Join(", ", Enumerable.Range(1, Buckets).Select(b => $"r.latency_buckets[{b}] + excluded.latency_buckets[{b}]"));

    // Rows arrive sorted by their key (see Aggregate): concurrent writers (several silos) lock shared rows in the same order
    // and do not deadlock each other. The per-service tables, whose few rows nearly every writer's batch updates, come last,
    // so those rows stay locked only for the end of the transaction.
    private static readonly string AccountRollupSql = $$"""
        INSERT INTO marketplace_usage_rollup AS r (granularity, bucket_start, account_id, key_id, service_id, version, outcome, currency,
                                                   calls, charged, latency_buckets)
        SELECT g, b, a, k, s, v, o, c, n, ch, ARRAY[{{HistogramColumns}}]
        FROM unnest($1::varchar[], $2::timestamptz[], $3::varchar[], $4::varchar[], $5::varchar[], $6::varchar[], $7::varchar[],
                    $8::varchar[], $9::bigint[], $10::bigint[], {{Histograms(11)}})
             AS u (g, b, a, k, s, v, o, c, n, ch, {{HistogramColumns}})
        ON CONFLICT (granularity, bucket_start, account_id, key_id, service_id, version, outcome, currency) DO UPDATE
        SET calls = r.calls + excluded.calls,
            charged = r.charged + excluded.charged,
            latency_buckets = ARRAY[{{HistogramSum}}]
        """;

    private static readonly string ServiceRollupSql = $$"""
        INSERT INTO marketplace_usage_service_rollup AS r (granularity, bucket_start, service_id, version, outcome, currency, calls, charged,
                                                           latency_buckets)
        SELECT g, b, s, v, o, c, n, ch, ARRAY[{{HistogramColumns}}]
        FROM unnest($1::varchar[], $2::timestamptz[], $3::varchar[], $4::varchar[], $5::varchar[], $6::varchar[], $7::bigint[],
                    $8::bigint[], {{Histograms(9)}})
             AS u (g, b, s, v, o, c, n, ch, {{HistogramColumns}})
        ON CONFLICT (granularity, bucket_start, service_id, version, outcome, currency) DO UPDATE
        SET calls = r.calls + excluded.calls,
            charged = r.charged + excluded.charged,
            latency_buckets = ARRAY[{{HistogramSum}}]
        """;

    // The windows (migration 0009) each totals table keeps beside its counts: an account's UTC month, a key's quota day and month.
    private const string DayWindow = "day";
    private const string MonthWindow = "month";
    private static readonly string[] AccountWindows = [MonthWindow];
    private static readonly string[] KeyWindows = [DayWindow, MonthWindow];

    private const string KeyBatchesSql = """
        INSERT INTO marketplace_journal_key_batches (sender, seq, key_id, service_id, currency, account_id, calls, charged_calls, failed, charged)
        SELECT $1, $2, k, s, c, a, n, cc, f, ch
        FROM unnest($3::varchar[], $4::varchar[], $5::varchar[], $6::varchar[], $7::bigint[], $8::bigint[], $9::bigint[], $10::bigint[])
             AS u (k, s, c, a, n, cc, f, ch)
        """;

    private static readonly string AccountTotalsSql = TotalsSql("marketplace_account_totals", AccountWindows, "account_id", "currency");
    private static readonly string KeyTotalsSql = TotalsSql("marketplace_key_totals", KeyWindows, "key_id", "service_id", "currency");
    private static readonly string ServiceTotalsSql = TotalsSql("marketplace_service_totals", [], "service_id", "currency");

    /// <summary>
    /// Writes <paramref name="records"/> as batch <paramref name="sequence"/> of <paramref name="sender"/>. Returns true when
    /// this call committed it, false when an earlier attempt had (then nothing was written). Either way the batch is stored.
    /// </summary>
    public static async Task<bool> WriteAsync(NpgsqlDataSource database, Guid sender, long sequence, IReadOnlyList<CallRecord> records,
        CancellationToken cancellationToken)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(sequence, 1);
        var sums = Aggregate(records);
        if (records.Count <= InlineRows)
        {
            return await WriteInlineAsync(database, sender, sequence, records, sums, cancellationToken);
        }

        await using var connection = await database.OpenConnectionAsync(cancellationToken);
        await using var transaction = await connection.BeginTransactionAsync(cancellationToken);
        await using (var claim = new NpgsqlCommand(ClaimSql, connection, transaction))
        {
            claim.Parameters.Add(new NpgsqlParameter { Value = sender, NpgsqlDbType = NpgsqlDbType.Uuid });
            claim.Parameters.Add(new NpgsqlParameter { Value = sequence, NpgsqlDbType = NpgsqlDbType.Bigint });
            if (await claim.ExecuteScalarAsync(cancellationToken) is null)
            {
                await transaction.RollbackAsync(cancellationToken);
                return false;
            }
        }

        await CopyAsync(connection, records, cancellationToken);

        await using var batch = new NpgsqlBatch(connection, transaction);
        sums.AddCommands(batch, sender, sequence);
        await batch.ExecuteNonQueryAsync(cancellationToken);
        await transaction.CommitAsync(cancellationToken);
        return true;
    }

    // One round trip: no explicit transaction, so the server runs the statements sent together as one implicit transaction
    // (up to the batch's Sync): the claim's error, or any other, rolls all of them back.
    private static async Task<bool> WriteInlineAsync(NpgsqlDataSource database, Guid sender, long sequence, IReadOnlyList<CallRecord> records,
        JournalSums sums, CancellationToken cancellationToken)
    {
        await using var connection = await database.OpenConnectionAsync(cancellationToken);
        await using var batch = new NpgsqlBatch(connection);
        var claim = batch.CreateBatchCommand();
        claim.CommandText = InlineClaimSql;
        claim.Parameters.Add(new NpgsqlParameter { Value = sender, NpgsqlDbType = NpgsqlDbType.Uuid });
        claim.Parameters.Add(new NpgsqlParameter { Value = sequence, NpgsqlDbType = NpgsqlDbType.Bigint });
        batch.BatchCommands.Add(claim);
        batch.BatchCommands.Add(InlineRowsCommand(batch, records));
        sums.AddCommands(batch, sender, sequence);
        try
        {
            await batch.ExecuteNonQueryAsync(cancellationToken);
            return true;
        }
        catch (PostgresException exception) when (exception.SqlState == AlreadyStoredState)
        {
            return false;
        }
    }

    private static NpgsqlBatchCommand InlineRowsCommand(NpgsqlBatch batch, IReadOnlyList<CallRecord> records)
    {
        var command = batch.CreateBatchCommand();
        command.CommandText = InlineRowsSql;
        var n = records.Count;
        var (ids, tracks, ats, accounts, keys, services, versions, outcomes, rejections) =
            (new Guid[n], new string[n], new DateTime[n], new string?[n], new string?[n], new string[n], new string?[n], new string[n], new string?[n]);
        var (statuses, upstreams, totals, prices, charges, currencies, idempotencyKeys) =
            (new short[n], new float?[n], new float[n], new long[n], new long[n], new string?[n], new string?[n]);
        for (var i = 0; i < n; i++)
        {
            var r = records[i];
            (ids[i], tracks[i], ats[i], accounts[i], keys[i], services[i], versions[i]) =
                (r.CallId, r.TrackId, r.At.UtcDateTime, r.AccountId, r.KeyId, r.ServiceId, r.Version);
            (outcomes[i], rejections[i], statuses[i]) =
                (CallLogWriter.OutcomeName(r.Outcome), r.Rejection?.ToString(), (short)Math.Clamp(r.Status, short.MinValue, short.MaxValue));
            (upstreams[i], totals[i], prices[i], charges[i], currencies[i], idempotencyKeys[i]) =
                ((float?)r.UpstreamMs, (float)r.TotalMs, r.Price, r.Charged, r.Currency, r.IdempotencyKey);
        }

        Add(command, ids, NpgsqlDbType.Uuid);
        Add(command, tracks, NpgsqlDbType.Varchar);
        Add(command, ats, NpgsqlDbType.TimestampTz);
        foreach (var strings in new[] { accounts, keys, services, versions, outcomes, rejections })
        {
            Add(command, strings, NpgsqlDbType.Varchar);
        }

        Add(command, statuses, NpgsqlDbType.Smallint);
        Add(command, upstreams, NpgsqlDbType.Real);
        Add(command, totals, NpgsqlDbType.Real);
        Add(command, prices, NpgsqlDbType.Bigint);
        Add(command, charges, NpgsqlDbType.Bigint);
        Add(command, currencies, NpgsqlDbType.Char);
        Add(command, idempotencyKeys, NpgsqlDbType.Varchar);
        return command;

        static void Add(NpgsqlBatchCommand command, Array values, NpgsqlDbType type) =>
            command.Parameters.Add(new NpgsqlParameter { Value = values, NpgsqlDbType = NpgsqlDbType.Array | type });
    }

    /// <summary>The latency bucket of a call's total time, as PostgreSQL's <c>width_bucket(total_ms, bounds)</c> on the stored real.</summary>
    public static int LatencyBucket(double totalMs)
    {
        var stored = (float)totalMs;
        var bucket = 0;
        while (bucket < CallLogWriter.LatencyBoundsMs.Count && stored >= CallLogWriter.LatencyBoundsMs[bucket])
        {
            bucket++;
        }

        return bucket;
    }

    private static async Task CopyAsync(NpgsqlConnection connection, IReadOnlyList<CallRecord> records, CancellationToken cancellationToken)
    {
        await using var copy = await connection.BeginBinaryImportAsync(CopySql, cancellationToken);
        foreach (var r in records)
        {
            await copy.StartRowAsync(cancellationToken);
            await copy.WriteAsync(r.CallId, NpgsqlDbType.Uuid, cancellationToken);
            await copy.WriteAsync(r.TrackId, NpgsqlDbType.Varchar, cancellationToken);
            await copy.WriteAsync(r.At.UtcDateTime, NpgsqlDbType.TimestampTz, cancellationToken);
            await WriteNullableAsync(copy, r.AccountId, cancellationToken);
            await WriteNullableAsync(copy, r.KeyId, cancellationToken);
            await copy.WriteAsync(r.ServiceId, NpgsqlDbType.Varchar, cancellationToken);
            await WriteNullableAsync(copy, r.Version, cancellationToken);
            await copy.WriteAsync(CallLogWriter.OutcomeName(r.Outcome), NpgsqlDbType.Varchar, cancellationToken);
            await WriteNullableAsync(copy, r.Rejection?.ToString(), cancellationToken);
            await copy.WriteAsync((short)Math.Clamp(r.Status, short.MinValue, short.MaxValue), NpgsqlDbType.Smallint, cancellationToken);
            if (r.UpstreamMs is { } upstreamMs)
            {
                await copy.WriteAsync((float)upstreamMs, NpgsqlDbType.Real, cancellationToken);
            }
            else
            {
                await copy.WriteNullAsync(cancellationToken);
            }

            await copy.WriteAsync((float)r.TotalMs, NpgsqlDbType.Real, cancellationToken);
            await copy.WriteAsync(r.Price, NpgsqlDbType.Bigint, cancellationToken);
            await copy.WriteAsync(r.Charged, NpgsqlDbType.Bigint, cancellationToken);
            if (r.Currency is { } currency)
            {
                await copy.WriteAsync(currency, NpgsqlDbType.Char, cancellationToken);
            }
            else
            {
                await copy.WriteNullAsync(cancellationToken);
            }

            await WriteNullableAsync(copy, r.IdempotencyKey, cancellationToken);
        }

        await copy.CompleteAsync(cancellationToken);
    }

    private static async Task WriteNullableAsync(NpgsqlBinaryImporter copy, string? value, CancellationToken cancellationToken)
    {
        if (value is null)
        {
            await copy.WriteNullAsync(cancellationToken);
        }
        else
        {
            await copy.WriteAsync(value, NpgsqlDbType.Varchar, cancellationToken);
        }
    }

    // The batch's windows are upserted as ON CONFLICT sees them: every SET expression reads the stored row (t), so a newer
    // window replaces the stored one with its calls, the same window adds its calls, and an older one leaves the row's as is.
    private static string TotalsSql(string table, string[] windows, params string[] keyColumns)
    {
        var n = keyColumns.Length;
        var columns = string.Join(", ", keyColumns);
        var windowColumns = string.Concat(windows.Select(w => $", {w}, {w}_calls"));
        var arrays = string.Join(", ", keyColumns.Select((_, i) => $"${i + 1}::varchar[]"));
        var windowArrays = string.Concat(windows.Select((_, i) => $", ${n + 5 + (2 * i)}::date[], ${n + 6 + (2 * i)}::bigint[]"));
        var windowSets = string.Concat(windows.Select(w => $"""
            ,
                {w} = GREATEST(t.{w}, excluded.{w}),
                {w}_calls = CASE WHEN excluded.{w} > t.{w} THEN excluded.{w}_calls
                                 WHEN excluded.{w} = t.{w} THEN t.{w}_calls + excluded.{w}_calls
                                 ELSE t.{w}_calls END
            """));
        return $"""
            INSERT INTO {table} AS t ({columns}, calls, charged_calls, failed, charged{windowColumns})
            SELECT * FROM unnest({arrays}, ${n + 1}::bigint[], ${n + 2}::bigint[], ${n + 3}::bigint[], ${n + 4}::bigint[]{windowArrays})
            ON CONFLICT ({columns}) DO UPDATE
            SET calls = t.calls + excluded.calls,
                charged_calls = t.charged_calls + excluded.charged_calls,
                failed = t.failed + excluded.failed,
                charged = t.charged + excluded.charged{windowSets}
            """;
    }

    // One bigint[] parameter per latency bucket, numbered from $first.
    private static string Histograms(int first) =>
        string.Join(", ", Enumerable.Range(0, Buckets).Select(b => $"${first + b}::bigint[]"));
}
