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
        await CallLogWriter.InsertAsync(database,
            [new CallRecord("m-4", at, "acct-m", "key-m", "svc-m", "v1", CallOutcome.Succeeded, null, 200, 1, 0.7, 3, 3, "EUR", null)], CancellationToken.None);
        var after = await ReportsApi.QueryAsync(database, new ReportQuery(new ReportWindow(at.Date, at.Date.AddDays(1), "day"), "account"), CancellationToken.None);
        Assert.Equal([(string.Empty, 1L), ("acct-m", 2L)], after.Select(r => (r.Group, r.Calls)));
        Assert.Equal(3, after.Sum(r => r.LatencyBuckets[0]));
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
