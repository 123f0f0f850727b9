using Marketplace.Grains;
using Marketplace.Silo.Apis;
using Marketplace.Silo.Database;
using Marketplace.Silo.Tests.Infrastructure;
using Microsoft.Extensions.Logging.Abstractions;
using Npgsql;

namespace Marketplace.Silo.Tests.Reports;

/// <summary>Migration 0005 rolls up the calls logged before it; the latency percentiles read from a histogram.</summary>
[Collection(PostgresCollection.Name)]
public sealed class RollupMigrationTests(PostgresFixture postgres)
{
    [Fact]
    public async Task Migration0005_CallsLoggedBefore_AreRolledUpLikeTheWriterDoes()
    {
        var connectionString = await postgres.CreateDatabaseAsync("rollup_migration");
        var runner = new MigrationRunner(connectionString, NullLogger<MigrationRunner>.Instance);
        await runner.ApplyAsync([.. MigrationRunner.Embedded.Where(m => m.Version < 5)]);
        await using var database = NpgsqlDataSource.Create(connectionString);
        var at = new DateTimeOffset(2021, 6, 1, 23, 59, 30, TimeSpan.Zero);
        await using (var insert = database.CreateCommand(
            "INSERT INTO marketplace_call_log (track_id, at, account_id, key_id, service_id, version, outcome, status, total_ms, price, charged, currency) VALUES " +
            "('m-1', $1, 'acct-m', 'key-m', 'svc-m', 'v1', 'succeeded', 200, 0.5, 3, 3, 'EUR'), " +
            "('m-2', $1 + interval '40 seconds', 'acct-m', 'key-m', 'svc-m', 'v1', 'succeeded', 200, 120, 3, 3, 'EUR'), " +
            "('m-3', $1, NULL, 'key-m', 'svc-m', NULL, 'rejected', 401, 0.2, 3, 0, 'EUR')"))
        {
            insert.Parameters.AddWithValue(at);
            await insert.ExecuteNonQueryAsync();
        }

        var applied = await runner.ApplyAsync();
        var rows = await ReportsApi.QueryAsync(database, new ReportQuery(new ReportWindow(at.Date, at.Date.AddDays(2), "day"), "bucket"), CancellationToken.None);
        var accounts = await ReportsApi.QueryAsync(database, new ReportQuery(new ReportWindow(at.Date, at.Date.AddDays(2), "minute"), "account"), CancellationToken.None);

        Assert.Contains(applied, name => name.StartsWith("0005", StringComparison.Ordinal));
        // 23:59:30 is on 1 June, 00:00:10 on 2 June.
        Assert.Equal(["2021-06-01T00:00Z", "2021-06-02T00:00Z"], rows.Select(r => r.Group));
        Assert.Equal((2L, 3L, 1L), (rows[0].Calls, rows[0].Charged, rows[0].Failed));
        Assert.Equal((1L, 3L, 0L), (rows[1].Calls, rows[1].Charged, rows[1].Failed));
        Assert.Equal(2, rows[0].LatencyBuckets[0]);
        Assert.Equal(1, rows[1].LatencyBuckets[7]); // 120 ms is in [100, 200)
        Assert.Equal([(string.Empty, 1L), ("acct-m", 2L)], accounts.Select(r => (r.Group, r.Calls)));

        // The writer adds to the migrated rows rather than beside them.
        await JournalBatch.WriteAsync(database, Guid.NewGuid(), 1,
            [new CallRecord(Guid.CreateVersion7(at), "m-4", at, "acct-m", "key-m", "svc-m", "v1", CallOutcome.Succeeded, null, 200, 1, 0.7, 3, 3, "EUR", null)], CancellationToken.None);
        var after = await ReportsApi.QueryAsync(database, new ReportQuery(new ReportWindow(at.Date, at.Date.AddDays(1), "day"), "account"), CancellationToken.None);
        Assert.Equal([(string.Empty, 1L), ("acct-m", 2L)], after.Select(r => (r.Group, r.Calls)));
        Assert.Equal(3, after.Sum(r => r.LatencyBuckets[0]));
    }

    [Fact]
    public async Task Migration0006_RollupsBefore_AreSummedPerServiceAndTheWriterAddsToThem()
    {
        var connectionString = await postgres.CreateDatabaseAsync("rollup_migration6");
        var runner = new MigrationRunner(connectionString, NullLogger<MigrationRunner>.Instance);
        await runner.ApplyAsync([.. MigrationRunner.Embedded.Where(m => m.Version < 5)]);
        await using var database = NpgsqlDataSource.Create(connectionString);
        var at = new DateTimeOffset(2021, 6, 1, 10, 0, 0, TimeSpan.Zero);
        await using (var insert = database.CreateCommand(
            "INSERT INTO marketplace_call_log (track_id, at, account_id, key_id, service_id, version, outcome, status, total_ms, price, charged, currency) VALUES " +
            "('s-1', $1, 'acct-1', 'key-1', 'svc-s', 'v1', 'succeeded', 200, 3, 3, 3, 'EUR'), " +
            "('s-2', $1 + interval '5 minutes', 'acct-2', 'key-2', 'svc-s', 'v1', 'succeeded', 200, 30, 3, 3, 'EUR'), " +
            "('s-3', $1, NULL, 'key-3', 'svc-s', NULL, 'rejected', 401, 0.2, 3, 0, 'EUR')"))
        {
            insert.Parameters.AddWithValue(at);
            await insert.ExecuteNonQueryAsync();
        }

        await runner.ApplyAsync([.. MigrationRunner.Embedded.Where(m => m.Version < 6)]);
        var applied = await runner.ApplyAsync();
        await JournalBatch.WriteAsync(database, Guid.NewGuid(), 1,
            [new CallRecord(Guid.CreateVersion7(at), "s-4", at, "acct-3", "key-4", "svc-s", "v1", CallOutcome.Succeeded, null, 200, 1, 0.7, 3, 3, "EUR", null)], CancellationToken.None);

        Assert.Contains(applied, name => name.StartsWith("0006", StringComparison.Ordinal));
        foreach (var granularity in new[] { "minute", "hour", "day" })
        {
            var window = new ReportWindow(at.Date, at.Date.AddDays(1), granularity);
            var query = new ReportQuery(window, "version");
            Assert.True(query.ReadsServiceRows);
            var rows = await ReportsApi.QueryAsync(database, query, CancellationToken.None);
            var fromAccounts = await ReportsApi.QueryAsync(database, query with { PerAccountRows = true }, CancellationToken.None);
            Assert.Equal([("svc-s/", 1L, 0L, 1L), ("svc-s/v1", 3L, 9L, 0L)], rows.Select(r => (r.Group, r.Calls, r.Charged, r.Failed)));
            Assert.Equal(fromAccounts.Select(r => (r.Group, r.Calls, r.Charged, string.Join(',', r.LatencyBuckets))),
                rows.Select(r => (r.Group, r.Calls, r.Charged, string.Join(',', r.LatencyBuckets))));
        }
    }

    [Fact]
    public async Task RollupRetention_DeletesMinuteAndHourRowsPastTheirDays_KeepsDayRowsAndTheLog()
    {
        var connectionString = await postgres.CreateDatabaseAsync("rollup_retention");
        await new MigrationRunner(connectionString, NullLogger<MigrationRunner>.Instance).ApplyAsync();
        await using var database = NpgsqlDataSource.Create(connectionString);
        var now = new DateTimeOffset(2024, 3, 20, 12, 30, 0, TimeSpan.Zero);
        // Five calls 10 days ago (minute rows expire at 3 days, hour rows at 7), five 2 days ago, one 5 days ago.
        var records = Enumerable.Range(0, 5).Select(i => Record($"r-old-{i}", now.AddDays(-10).AddMinutes(i)))
            .Concat(Enumerable.Range(0, 5).Select(i => Record($"r-new-{i}", now.AddDays(-2).AddMinutes(i))))
            .Append(Record("r-mid", now.AddDays(-5)))
            .ToList();
        await JournalBatch.WriteAsync(database, Guid.NewGuid(), 1, records, CancellationToken.None);

        // Chunks of 2 rows: repeated until a chunk finds less than that.
        var rounds = 0;
        while (await CallLogWriter.DeleteExpiredRollupsAsync(database, now, minuteDays: 3, hourDays: 7, limit: 2, CancellationToken.None) >= 2)
        {
            rounds++;
            Assert.True(rounds < 20, "retention never finished");
        }

        var left = await CountsAsync(database);
        Assert.Equal(5L, left[("marketplace_usage_rollup", "minute")]); // the five of 2 days ago
        Assert.Equal(5L, left[("marketplace_usage_service_rollup", "minute")]);
        Assert.Equal(2L, left[("marketplace_usage_rollup", "hour")]); // 2 and 5 days ago
        Assert.Equal(2L, left[("marketplace_usage_service_rollup", "hour")]);
        Assert.Equal(3L, left[("marketplace_usage_rollup", "day")]); // every day kept
        Assert.Equal(3L, left[("marketplace_usage_service_rollup", "day")]);
        Assert.Equal(11L, left[("marketplace_call_log", "")]);
        Assert.True(rounds >= 2, $"{rounds} rounds: the chunk limit was not applied");

        // Hour retention 0 keeps hour rows.
        await JournalBatch.WriteAsync(database, Guid.NewGuid(), 1, [Record("r-older", now.AddDays(-400))], CancellationToken.None);
        Assert.Equal(0L, await CallLogWriter.DeleteExpiredRollupsAsync(database, now, minuteDays: 3000, hourDays: 0, limit: 100, CancellationToken.None));
        Assert.Equal(3L, (await CountsAsync(database))[("marketplace_usage_rollup", "hour")]);

        static CallRecord Record(string trackId, DateTimeOffset at) =>
            new(Guid.CreateVersion7(at), trackId, at, "acct-r", "key-r", "svc-r", "v1", CallOutcome.Succeeded, null, 200, 1, 2, 3, 3, "EUR", null);
    }

    private static async Task<Dictionary<(string Table, string Granularity), long>> CountsAsync(NpgsqlDataSource database)
    {
        await using var command = database.CreateCommand(
            "SELECT 'marketplace_usage_rollup', granularity, count(*) FROM marketplace_usage_rollup GROUP BY 2 UNION ALL " +
            "SELECT 'marketplace_usage_service_rollup', granularity, count(*) FROM marketplace_usage_service_rollup GROUP BY 2 UNION ALL " +
            "SELECT 'marketplace_call_log', '', count(*) FROM marketplace_call_log");
        var counts = new Dictionary<(string, string), long>();
        await using var reader = await command.ExecuteReaderAsync();
        while (await reader.ReadAsync())
        {
            counts[(reader.GetString(0), reader.GetString(1))] = reader.GetInt64(2);
        }

        return counts;
    }

    [Theory]
    [InlineData(new long[] { 0, 0, 0, 0, 10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0 }, 0.5, 15)]
    [InlineData(new long[] { 0, 0, 0, 0, 10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0 }, 0.99, 19.9)]
    [InlineData(new long[] { 50, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 50 }, 0.5, 1)]
    [InlineData(new long[] { 50, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 50 }, 0.95, 30000)]
    [InlineData(new long[] { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0 }, 0.5, 0)]
    [InlineData(new long[] { 0, 0, 0, 0, 0, 0, 0, 0, 1, 3, 0, 0, 0, 0, 0 }, 0.5, 666.67)]
    public void Percentile_FromHistogram_InterpolatesInsideTheBucket(long[] buckets, double q, double expected) =>
        Assert.Equal(expected, ReportsApi.Percentile(buckets, q));
}
