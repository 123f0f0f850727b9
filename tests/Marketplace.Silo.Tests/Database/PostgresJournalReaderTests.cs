using Marketplace.Grains;
using Marketplace.Silo.Database;
using Marketplace.Silo.Tests.Infrastructure;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Options;
using Npgsql;

namespace Marketplace.Silo.Tests.Database;

/// <summary>
/// The journal's totals and windows as <see cref="JournalBatch"/> writes them and <see cref="PostgresJournalReader"/> reads
/// them back for grains that activate. Each test has its own database, so the senders it reads are its own.
/// </summary>
[Collection(PostgresCollection.Name)]
public sealed class PostgresJournalReaderTests(PostgresFixture postgres)
{
    private static readonly DateTimeOffset March10 = new(2026, 3, 10, 12, 0, 0, TimeSpan.Zero);

    // A batch of two rows is written in one round trip (rows from arrays); one past JournalBatch.InlineRows with binary COPY.
    [Theory]
    [InlineData(0)]
    [InlineData(JournalBatch.InlineRows - 1)]
    public async Task WriteAsync_RetriedBatch_ChangesNoTotalsAndNoWindows(int otherRows)
    {
        await using var database = await CreateDatabaseAsync("journal_retry_" + otherRows);
        var sender = Guid.NewGuid();
        List<CallRecord> batch =
        [
            Record("acct-r", "key-r", "svc-r", March10, charged: 4),
            Record("acct-r", "key-r", "svc-r", March10.AddDays(1), outcome: CallOutcome.UpstreamFailed),
            .. Enumerable.Range(0, otherRows).Select(i => Record("acct-o", "key-o" + (i % 7), "svc-o", March10.AddMinutes(i), charged: 1)),
        ];
        var reader = Reader(database);

        Assert.True(await JournalBatch.WriteAsync(database, sender, 1, batch, CancellationToken.None));
        var before = await TotalsAsync(database);
        var keyBefore = await reader.ReadKeyAsync("key-r");
        var retried = await JournalBatch.WriteAsync(database, sender, 1, batch, CancellationToken.None);
        var later = await JournalBatch.WriteAsync(database, sender, 1, [Record("acct-r", "key-r", "svc-r", March10.AddDays(2))], CancellationToken.None);

        Assert.False(retried);
        Assert.False(later);
        Assert.Equal(before, await TotalsAsync(database));
        Assert.Equal(batch.Count, await CountAsync(database, "SELECT count(*) FROM marketplace_call_log"));
        Assert.Contains("marketplace_key_totals key-r svc-r EUR 2 1 1 4 2026-03-11 1 2026-03-01 2", before);
        var key = Assert.Single((await reader.ReadKeyAsync("key-r")).Services);
        Assert.Equal(Assert.Single(keyBefore.Services), key);
        Assert.Equal((new DateOnly(2026, 3, 11), 1L, new DateOnly(2026, 3, 1), 2L), (key.Day, key.DayCalls, key.Month, key.MonthCalls));
        Assert.Equal(2L, (await reader.ReadAccountAsync("acct-r", ["key-r"], March10)).CallsThisMonth);
        Assert.Equal(new Dictionary<Guid, long> { [sender] = 1 }, (await reader.ReadServiceAsync("svc-r")).Senders);
    }

    // What a grain fetches when a sender died between committing a batch and sending its settlements (migration 0011).
    [Theory]
    [InlineData(0)]
    [InlineData(JournalBatch.InlineRows)]
    public async Task ReadBatches_OfOneSenderAboveAMark_PerKeyOrAccount_EachBatchOnce(int otherRows)
    {
        await using var database = await CreateDatabaseAsync("journal_batches_" + otherRows);
        var (sender, other) = (Guid.NewGuid(), Guid.NewGuid());
        List<CallRecord> second =
        [
            Record("acct-f", "key-f", "svc-a", March10, charged: 3),
            Record("acct-f", "key-f", "svc-a", March10, charged: 3),
            Record("acct-f", "key-g", "svc-b", March10, outcome: CallOutcome.UpstreamTimeout),
            Record(null, "key-f", "svc-a", March10),
            .. Enumerable.Range(0, otherRows).Select(i => Record("acct-o", "key-o", "svc-a", March10, charged: 1)),
        ];
        await JournalBatch.WriteAsync(database, sender, 1, [Record("acct-f", "key-f", "svc-a", March10, charged: 3)], CancellationToken.None);
        await JournalBatch.WriteAsync(database, sender, 2, second, CancellationToken.None);
        await JournalBatch.WriteAsync(database, sender, 2, second, CancellationToken.None);
        await JournalBatch.WriteAsync(database, other, 3, [Record("acct-f", "key-f", "svc-a", March10, charged: 3)], CancellationToken.None);
        var reader = Reader(database);

        var keyAboveOne = await reader.ReadBatchesAsync(sender, 1, "key-f", null);
        var keyAll = await reader.ReadBatchesAsync(sender, 0, "key-f", null);
        var account = await reader.ReadBatchesAsync(sender, 1, null, "acct-f");
        var none = await reader.ReadBatchesAsync(sender, 2, "key-f", null);

        Assert.Equal([new JournalBatchUsage(sender, 2, "key-f", "acct-f", new ServiceUsageDelta("svc-a", 2, 2, 0, 6))], keyAboveOne);
        Assert.Equal([1L, 2L], keyAll.Select(b => b.Sequence));
        Assert.Equal(
            [
                new JournalBatchUsage(sender, 2, "key-f", "acct-f", new ServiceUsageDelta("svc-a", 2, 2, 0, 6)),
                new JournalBatchUsage(sender, 2, "key-g", "acct-f", new ServiceUsageDelta("svc-b", 1, 0, 1, 0)),
            ],
            account);
        Assert.Empty(none);
    }

    [Fact]
    public async Task Read_AfterBatches_ReturnsExactlyWhatTheyWrote()
    {
        await using var database = await CreateDatabaseAsync("journal_read");
        var first = Guid.NewGuid();
        var second = Guid.NewGuid();
        await JournalBatch.WriteAsync(database, first, 1,
        [
            Record("acct-1", "key-1", "svc-a", March10, charged: 3),
            Record("acct-1", "key-1", "svc-b", March10, outcome: CallOutcome.UpstreamTimeout),
            Record("acct-1", "key-2", "svc-a", March10.AddMinutes(1), charged: 5, currency: "USD"),
            Record("acct-2", "key-3", "svc-a", March10, charged: 7),
            // Not settled (no account): in no total.
            Record(null, "key-1", "svc-a", March10, charged: 0),
        ], CancellationToken.None);
        await JournalBatch.WriteAsync(database, second, 1, [Record("acct-1", "key-1", "svc-a", March10.AddDays(1), charged: 2)], CancellationToken.None);
        await JournalBatch.WriteAsync(database, second, 2,
        [
            // key-1 × svc-a in a second currency, on a later day: the service's windows are that day's and month's.
            Record("acct-1", "key-1", "svc-a", March10.AddDays(2), charged: 1, currency: "USD"),
            // Last month: in the totals, not in this month's calls.
            Record("acct-1", "key-1", "svc-b", March10.AddMonths(-1)),
        ], CancellationToken.None);
        var reader = Reader(database);

        var account = await reader.ReadAccountAsync("acct-1", ["key-1", "key-2"], March10.AddDays(5));
        var keyOne = await reader.ReadKeyAsync("key-1");
        var keyTwo = await reader.ReadKeyAsync("key-2");
        var service = await reader.ReadServiceAsync("svc-a");
        var onlyKeyTwo = await reader.ReadAccountAsync("acct-1", ["key-2"], March10);

        var senders = new Dictionary<Guid, long> { [first] = 1, [second] = 2 };
        Assert.Equal(new JournalCounts(6, 4, 1, 11), account.Totals);
        Assert.Equal(5L, account.CallsThisMonth);
        Assert.Equal(new Dictionary<string, long> { ["svc-a"] = 4, ["svc-b"] = 2 }, account.CallsByService);
        Assert.Equal(senders, account.Senders);
        Assert.Equal(new Dictionary<string, long> { ["svc-a"] = 1 }, onlyKeyTwo.CallsByService);
        Assert.Equal(5L, onlyKeyTwo.CallsThisMonth);
        Assert.Equal(0L, (await reader.ReadAccountAsync("acct-1", [], March10.AddMonths(1))).CallsThisMonth);
        // February's call came after March's: that month was over, so no row counts it.
        Assert.Equal(0L, (await reader.ReadAccountAsync("acct-1", [], March10.AddMonths(-1))).CallsThisMonth);

        Assert.Equal(
        [
            new KeyServiceJournal("svc-a", new JournalCounts(3, 3, 0, 6), new DateOnly(2026, 3, 12), 1, new DateOnly(2026, 3, 1), 3),
            new KeyServiceJournal("svc-b", new JournalCounts(2, 0, 1, 0), new DateOnly(2026, 3, 10), 1, new DateOnly(2026, 3, 1), 1),
        ], keyOne.Services);
        Assert.Equal(senders, keyOne.Senders);
        Assert.Equal([new KeyServiceJournal("svc-a", new JournalCounts(1, 1, 0, 5), new DateOnly(2026, 3, 10), 1, new DateOnly(2026, 3, 1), 1)],
            keyTwo.Services);

        Assert.Equal(new JournalCounts(5, 5, 0, 18), service.Totals);
        Assert.Equal(senders, service.Senders);

        // A sender that committed nothing for longer than the retention is no longer named.
        await ExecuteAsync(database, $"UPDATE marketplace_journal_senders SET updated_at = now() - interval '16 minutes' WHERE sender = '{first}'");
        Assert.Equal(new Dictionary<Guid, long> { [second] = 2 }, (await reader.ReadServiceAsync("svc-a")).Senders);
    }

    [Fact]
    public async Task WriteAsync_WindowsRoll_NewerReplacesSameAddsOlderLeaves()
    {
        await using var database = await CreateDatabaseAsync("journal_roll");
        var sender = Guid.NewGuid();
        var reader = Reader(database);
        var sequence = 0L;
        var day10 = new DateOnly(2026, 3, 10);
        var march = new DateOnly(2026, 3, 1);
        var april = new DateOnly(2026, 4, 1);

        async Task<KeyServiceJournal> WriteAsync(params DateTimeOffset[] calls)
        {
            await JournalBatch.WriteAsync(database, sender, ++sequence, [.. calls.Select(at => Record("acct-w", "key-w", "svc-w", at))], CancellationToken.None);
            return Assert.Single((await reader.ReadKeyAsync("key-w")).Services);
        }

        async Task<long> MonthCallsAsync(DateTimeOffset now) => (await reader.ReadAccountAsync("acct-w", [], now)).CallsThisMonth;

        var start = await WriteAsync(March10, March10.AddHours(1));
        // The batch's calls of an older day count nothing: that day is over.
        var newer = await WriteAsync(March10.AddDays(1), March10.AddDays(-1));
        var older = await WriteAsync(March10);
        var same = await WriteAsync(March10.AddDays(1), March10.AddDays(1).AddHours(2));
        Assert.Equal((day10, 2L, march, 2L), (start.Day, start.DayCalls, start.Month, start.MonthCalls));
        Assert.Equal((day10.AddDays(1), 1L, march, 4L), (newer.Day, newer.DayCalls, newer.Month, newer.MonthCalls));
        Assert.Equal((day10.AddDays(1), 1L, march, 5L), (older.Day, older.DayCalls, older.Month, older.MonthCalls));
        Assert.Equal((day10.AddDays(1), 3L, march, 7L), (same.Day, same.DayCalls, same.Month, same.MonthCalls));
        Assert.Equal(7L, await MonthCallsAsync(March10));

        var nextMonth = await WriteAsync(March10.AddMonths(1), March10.AddDays(2));
        Assert.Equal((day10.AddMonths(1), 1L, april, 1L), (nextMonth.Day, nextMonth.DayCalls, nextMonth.Month, nextMonth.MonthCalls));
        Assert.Equal(1L, await MonthCallsAsync(March10.AddMonths(1)));
        Assert.Equal(0L, await MonthCallsAsync(March10));

        var lateMarch = await WriteAsync(March10.AddDays(3));
        Assert.Equal((day10.AddMonths(1), 1L, april, 1L), (lateMarch.Day, lateMarch.DayCalls, lateMarch.Month, lateMarch.MonthCalls));
        Assert.Equal(1L, await MonthCallsAsync(March10.AddMonths(1)));

        var sameApril = await WriteAsync(March10.AddMonths(1).AddDays(5));
        Assert.Equal((day10.AddMonths(1).AddDays(5), 1L, april, 2L), (sameApril.Day, sameApril.DayCalls, sameApril.Month, sameApril.MonthCalls));
        Assert.Equal(2L, await MonthCallsAsync(March10.AddMonths(1)));
        Assert.Equal(new JournalCounts(11, 0, 0, 0), sameApril.Totals);
    }

    [Fact]
    public async Task WriteAsync_KeyOffset_CountsTheCallInTheKeysLocalDayAndMonth()
    {
        await using var database = await CreateDatabaseAsync("journal_offset");
        var reader = Reader(database);
        var offset = (int)new TimeSpan(5, 30, 0).TotalMinutes;
        var evening = new DateTimeOffset(2026, 3, 31, 20, 0, 0, TimeSpan.Zero); // 1 April 01:30 at +05:30
        var earlier = new DateTimeOffset(2026, 3, 31, 18, 0, 0, TimeSpan.Zero); // 31 March 23:30 at +05:30

        await JournalBatch.WriteAsync(database, Guid.NewGuid(), 1,
            [Record("acct-o", "key-o", "svc-o", evening, offset: offset), Record("acct-o", "key-o", "svc-o", earlier, offset: offset)], CancellationToken.None);

        var key = Assert.Single((await reader.ReadKeyAsync("key-o")).Services);
        Assert.Equal((new DateOnly(2026, 4, 1), 1L, new DateOnly(2026, 4, 1), 1L), (key.Day, key.DayCalls, key.Month, key.MonthCalls));
        // The account's monthly cap counts UTC months: both calls are in March.
        Assert.Equal(2L, (await reader.ReadAccountAsync("acct-o", ["key-o"], evening)).CallsThisMonth);
    }

    [Fact]
    public async Task Read_OwnerWithoutRows_ReadsZerosWithTheSenders()
    {
        await using var database = await CreateDatabaseAsync("journal_empty");
        var sender = Guid.NewGuid();
        await JournalBatch.WriteAsync(database, sender, 3, [Record("acct-x", "key-x", "svc-x", March10, charged: 9)], CancellationToken.None);
        var reader = Reader(database);
        var senders = new Dictionary<Guid, long> { [sender] = 3 };

        var account = await reader.ReadAccountAsync("acct-none", ["key-none"], March10);
        var key = await reader.ReadKeyAsync("key-none");
        var service = await reader.ReadServiceAsync("svc-none");

        Assert.Equal(JournalCounts.Zero, account.Totals);
        Assert.Equal(0L, account.CallsThisMonth);
        Assert.Empty(account.CallsByService);
        Assert.Equal(senders, account.Senders);
        Assert.Empty(key.Services);
        Assert.Equal(senders, key.Senders);
        Assert.Equal(JournalCounts.Zero, service.Totals);
        Assert.Equal(senders, service.Senders);
    }

    [Fact]
    public async Task Migration0009_CallsLoggedBefore_FillTheCurrentUtcDayAndMonth()
    {
        var connectionString = await postgres.CreateDatabaseAsync("journal_migration");
        var runner = new MigrationRunner(connectionString, NullLogger<MigrationRunner>.Instance);
        await runner.ApplyAsync([.. MigrationRunner.Embedded.Where(m => m.Version < 7)], TestContext.Current.CancellationToken);
        await using var database = NpgsqlDataSource.Create(connectionString);
        // Two settled calls now, one 40 days ago (an earlier month, in the totals only), one not settled.
        await ExecuteAsync(database, """
            INSERT INTO marketplace_call_log (track_id, at, account_id, key_id, service_id, version, outcome, status, total_ms, price, charged, currency) VALUES
            ('m-1', now(), 'acct-m', 'key-m', 'svc-m', 'v1', 'succeeded', 200, 1, 3, 3, 'EUR'),
            ('m-2', now(), 'acct-m', 'key-m', 'svc-m', 'v1', 'succeeded', 200, 1, 3, 3, 'EUR'),
            ('m-3', now() - interval '40 days', 'acct-m', 'key-m', 'svc-m', 'v1', 'succeeded', 200, 1, 3, 3, 'EUR'),
            ('m-4', now(), NULL, 'key-m', 'svc-m', NULL, 'rejected', 401, 1, 3, 0, 'EUR')
            """);
        await using (var clock = database.CreateCommand("SELECT now()"))
        {
            var now = (DateTime)(await clock.ExecuteScalarAsync())!;
            await runner.ApplyAsync(TestContext.Current.CancellationToken);
            var reader = Reader(database);

            var account = await reader.ReadAccountAsync("acct-m", ["key-m"], now);
            var key = Assert.Single((await reader.ReadKeyAsync("key-m")).Services);

            var today = DateOnly.FromDateTime(now);
            Assert.Equal(new JournalCounts(3, 3, 0, 9), account.Totals);
            Assert.Equal(2L, account.CallsThisMonth);
            Assert.Equal((today, 2L, new DateOnly(today.Year, today.Month, 1), 2L), (key.Day, key.DayCalls, key.Month, key.MonthCalls));
        }

        // The writer adds to the migrated windows.
        var later = DateTimeOffset.UtcNow;
        await JournalBatch.WriteAsync(database, Guid.NewGuid(), 1, [Record("acct-m", "key-m", "svc-m", later)], CancellationToken.None);
        Assert.Equal(3L, (await Reader(database).ReadAccountAsync("acct-m", [], later)).CallsThisMonth);
    }

    private async Task<NpgsqlDataSource> CreateDatabaseAsync(string prefix)
    {
        var connectionString = await postgres.CreateDatabaseAsync(prefix);
        await new MigrationRunner(connectionString, NullLogger<MigrationRunner>.Instance).ApplyAsync(TestContext.Current.CancellationToken);
        return NpgsqlDataSource.Create(connectionString);
    }

    private static PostgresJournalReader Reader(NpgsqlDataSource database) => new(database, Options.Create(new CallLogOptions()));

    [Fact]
    public async Task WriteAsync_OneRoundTripAndCopy_StoreEveryColumnAlike()
    {
        await using var database = await CreateDatabaseAsync("journal_columns");
        CallRecord[] Calls(string prefix) =>
        [
            new(Guid.CreateVersion7(March10), prefix + "-full", March10, "acct-c", "key-c", "svc-c", "v2", CallOutcome.UpstreamFailed, null, 502,
                12.5, 14.25, 7, 0, "USD", "idem-1"),
            new(Guid.CreateVersion7(March10), prefix + "-bare", March10.AddSeconds(1), null, null, "svc-c", null, CallOutcome.Rejected,
                AdmitOutcome.QuotaExhausted, 429, null, 0.5, 0, 0, null, null),
        ];

        var inline = Calls("inline");
        var copied = Calls("copy");
        Assert.True(await JournalBatch.WriteAsync(database, Guid.NewGuid(), 1, inline, CancellationToken.None));
        Assert.True(await JournalBatch.WriteAsync(database, Guid.NewGuid(), 1,
            [.. copied, .. Enumerable.Range(0, JournalBatch.InlineRows).Select(i => Record("acct-o", "key-o", "svc-o", March10.AddMinutes(i)))],
            CancellationToken.None));

        async Task<List<string>> RowsAsync(string prefix)
        {
            await using var command = database.CreateCommand(
                "SELECT concat_ws('|', replace(track_id, $1, ''), at, coalesce(account_id, '-'), coalesce(key_id, '-'), service_id, " +
                "coalesce(version, '-'), outcome, coalesce(rejection, '-'), status, coalesce(upstream_ms::text, '-'), total_ms, price, charged, " +
                "coalesce(currency, '-'), coalesce(idempotency_key, '-')) FROM marketplace_call_log WHERE track_id LIKE $1 || '-%' ORDER BY at");
            command.Parameters.Add(new NpgsqlParameter { Value = prefix });
            var rows = new List<string>();
            await using var reader = await command.ExecuteReaderAsync();
            while (await reader.ReadAsync())
            {
                rows.Add(reader.GetString(0));
            }

            return rows;
        }

        var copiedRows = await RowsAsync("copy");
        Assert.Equal(2, copiedRows.Count);
        Assert.Equal(copiedRows, await RowsAsync("inline"));
        Assert.Contains("-full|2026-03-10 12:00:00+00|acct-c|key-c|svc-c|v2|upstreamFailed|-|502|12.5|14.25|7|0|USD|idem-1", copiedRows);
        Assert.Contains("-bare|2026-03-10 12:00:01+00|-|-|svc-c|-|rejected|QuotaExhausted|429|-|0.5|0|0|-|-", copiedRows);
        var ids = inline.Concat(copied).Select(c => c.CallId).ToArray();
        await using var byId = database.CreateCommand("SELECT count(*) FROM marketplace_call_log WHERE call_id = ANY($1)");
        byId.Parameters.Add(new NpgsqlParameter { Value = ids });
        Assert.Equal(4L, (long)(await byId.ExecuteScalarAsync())!);
    }

    private static async Task<long> CountAsync(NpgsqlDataSource database, string sql)
    {
        await using var command = database.CreateCommand(sql);
        return (long)(await command.ExecuteScalarAsync())!;
    }

    private static CallRecord Record(string? account, string key, string service, DateTimeOffset at, long charged = 0,
        CallOutcome outcome = CallOutcome.Succeeded, string currency = "EUR", int offset = 0) =>
        new(Guid.CreateVersion7(at), "t-" + Guid.NewGuid().ToString("N")[..8], at, account, key, service, "v1", outcome, null, 200, 1, 2,
            charged, charged, currency, null, WindowOffsetMinutes: offset);

    // Every row of the three totals tables, with their windows.
    private static async Task<List<string>> TotalsAsync(NpgsqlDataSource database)
    {
        await using var command = database.CreateCommand("""
            SELECT concat_ws(' ', 'marketplace_account_totals', account_id, currency, calls, charged_calls, failed, charged, month, month_calls)
            FROM marketplace_account_totals
            UNION ALL
            SELECT concat_ws(' ', 'marketplace_key_totals', key_id, service_id, currency, calls, charged_calls, failed, charged, day, day_calls,
                             month, month_calls)
            FROM marketplace_key_totals
            UNION ALL
            SELECT concat_ws(' ', 'marketplace_service_totals', service_id, currency, calls, charged_calls, failed, charged)
            FROM marketplace_service_totals
            ORDER BY 1
            """);
        var rows = new List<string>();
        await using var reader = await command.ExecuteReaderAsync();
        while (await reader.ReadAsync())
        {
            rows.Add(reader.GetString(0));
        }

        return rows;
    }

    private static async Task ExecuteAsync(NpgsqlDataSource database, string sql)
    {
        await using var command = database.CreateCommand(sql);
        await command.ExecuteNonQueryAsync();
    }
}
