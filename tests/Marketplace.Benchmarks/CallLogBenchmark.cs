using System.Diagnostics;
using System.Globalization;
using Marketplace.Grains;
using Marketplace.Silo.Database;
using Microsoft.Extensions.Logging.Abstractions;
using Npgsql;

namespace Marketplace.Benchmarks;

/// <summary>
/// <c>calllog [rounds=3] [accounts=1000]</c>: the call-log insert with its rollups (<see cref="CallLogWriter.InsertAsync"/>)
/// on an embedded PostgreSQL with every migration applied, alternating in each round between the indexes as shipped and
/// the three that migration 0006 dropped (the call log's on track_id and on service_id, the per-account rollups' on
/// service_id) put back, so both variants see the same machine load and table sizes. Each measurement is 20 batches of
/// 5,000 calls spread over accounts × 3 keys × 20 services (nearly every call its own minute row), then 20 of 10 accounts
/// × 1 key × 2 services. Prints rows/s and PostgreSQL CPU µs per row (postmaster and backends, from /proc).
/// </summary>
public static class CallLogBenchmark
{
    private const int BatchSize = 5_000;
    private const int Batches = 20;

    private static readonly string[] _droppedIndexes =
    [
        "CREATE INDEX ix_marketplace_call_log_track ON marketplace_call_log (track_id)",
        "CREATE INDEX ix_marketplace_call_log_service ON marketplace_call_log (service_id, at)",
        "CREATE INDEX ix_marketplace_usage_rollup_service ON marketplace_usage_rollup (service_id, bucket_start)",
    ];

    /// <summary>Runs the benchmark and prints its figures.</summary>
    public static async Task RunAsync(string[] args)
    {
        var rounds = args.Length > 1 ? int.Parse(args[1], CultureInfo.InvariantCulture) : 3;
        var accounts = args.Length > 2 ? int.Parse(args[2], CultureInfo.InvariantCulture) : 1000;
        var root = Path.Combine(Path.GetTempPath(), "marketplace-calllog-" + Guid.NewGuid().ToString("N")[..8]);
        await using (var postgres = new EmbeddedPostgres(new EmbeddedPostgresOptions { DataDirectory = root, Port = 0 }, NullLogger<EmbeddedPostgres>.Instance))
        {
            await postgres.StartAsync();
            await new MigrationRunner(postgres.ConnectionString, NullLogger<MigrationRunner>.Instance).ApplyAsync();
            await using var database = NpgsqlDataSource.Create(new NpgsqlConnectionStringBuilder(postgres.ConnectionString) { CommandTimeout = 0 }.ConnectionString);
            var today = DateOnly.FromDateTime(DateTime.UtcNow);
            await ExecuteAsync(database, $"CREATE TABLE IF NOT EXISTS {CallLogWriter.PartitionName(today)} PARTITION OF marketplace_call_log " +
                $"FOR VALUES FROM ('{today:yyyy-MM-dd}') TO ('{today.AddDays(1):yyyy-MM-dd}')");
            var random = new Random(42);

            // Warm-up: one measurement of each workload, not printed.
            await MeasureAsync(database, root, random, accounts, 3, 20);
            await MeasureAsync(database, root, random, 10, 1, 2);

            Console.WriteLine($"calllog: {rounds} rounds, batches of {BatchSize:N0}, {Environment.ProcessorCount} cores, load average {LoadAverage()}");
            Console.WriteLine();
            Console.WriteLine("| round | indexes | calls | rows/s | PostgreSQL CPU µs/row |");
            Console.WriteLine("|---:|---|---|---:|---:|");
            var results = new List<(string Variant, string Workload, double RowsPerSecond, double CpuPerRow)>();
            for (var round = 1; round <= rounds; round++)
            {
                foreach (var shipped in round % 2 == 1 ? new[] { true, false } : [false, true])
                {
                    var variant = shipped ? "as shipped (0006)" : "with the 3 dropped indexes";
                    foreach (var statement in _droppedIndexes)
                    {
                        await ExecuteAsync(database, shipped ? $"DROP INDEX IF EXISTS {statement.Split(' ')[2]}" : statement.Replace("CREATE INDEX", "CREATE INDEX IF NOT EXISTS", StringComparison.Ordinal));
                    }

                    foreach (var (workload, a, k, s) in new[] { ($"spread over {accounts:N0} accounts x 3 keys x 20 services", accounts, 3, 20), ("10 accounts x 1 key x 2 services", 10, 1, 2) })
                    {
                        var (rowsPerSecond, cpuPerRow) = await MeasureAsync(database, root, random, a, k, s);
                        results.Add((variant, workload, rowsPerSecond, cpuPerRow));
                        Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"| {round} | {variant} | {workload} | {rowsPerSecond:N0} | {cpuPerRow:F1} |"));
                    }
                }
            }

            Console.WriteLine();
            Console.WriteLine("| indexes | calls | median rows/s | median PostgreSQL CPU µs/row |");
            Console.WriteLine("|---|---|---:|---:|");
            foreach (var group in results.GroupBy(r => (r.Variant, r.Workload)))
            {
                Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
                    $"| {group.Key.Variant} | {group.Key.Workload} | {Median(group.Select(r => r.RowsPerSecond)):N0} | {Median(group.Select(r => r.CpuPerRow)):F1} |"));
            }
        }

        try
        {
            Directory.Delete(root, recursive: true);
        }
        catch (Exception exception) when (exception is IOException or UnauthorizedAccessException)
        {
        }
    }

    private static async Task<(double RowsPerSecond, double CpuPerRow)> MeasureAsync(
        NpgsqlDataSource database, string root, Random random, int accounts, int keys, int services)
    {
        var batches = Enumerable.Range(0, Batches).Select(_ => Batch(random, accounts, keys, services)).ToList();
        var cpuBefore = ReportsBenchmark.PostgresCpu(root);
        var watch = Stopwatch.StartNew();
        foreach (var batch in batches)
        {
            await CallLogWriter.InsertAsync(database, batch, CancellationToken.None);
        }

        var elapsed = watch.Elapsed;
        var rows = Batches * BatchSize;
        return (rows / elapsed.TotalSeconds, (ReportsBenchmark.PostgresCpu(root) - cpuBefore).TotalMicroseconds / rows);
    }

    private static CallRecord[] Batch(Random random, int accounts, int keys, int services)
    {
        var now = DateTimeOffset.UtcNow;
        return [.. Enumerable.Range(0, BatchSize).Select(_ =>
        {
            var a = random.Next(1, accounts + 1);
            var s = random.Next(1, services + 1);
            var outcome = random.Next(100) switch { < 90 => CallOutcome.Succeeded, < 95 => CallOutcome.UpstreamFailed, _ => CallOutcome.UpstreamRejected };
            var charged = outcome == CallOutcome.Succeeded ? 1 + (s % 5) : 0;
            return new CallRecord(Guid.NewGuid().ToString("N"), now.AddMilliseconds(-random.Next(1000)), $"acct-{a:D5}", $"key-{a:D5}-{random.Next(1, keys + 1)}",
                $"svc-{s:D2}", "v1", outcome, null, outcome == CallOutcome.Succeeded ? 200 : 502, 3, 2 + (random.NextDouble() * 40), 1 + (s % 5), charged, "EUR", null);
        })];
    }

    private static double Median(IEnumerable<double> values)
    {
        var sorted = values.Order().ToArray();
        return sorted.Length % 2 == 1 ? sorted[sorted.Length / 2] : (sorted[(sorted.Length / 2) - 1] + sorted[sorted.Length / 2]) / 2;
    }

    private static string LoadAverage() => File.Exists("/proc/loadavg") ? string.Join(' ', File.ReadAllText("/proc/loadavg").Split(' ').Take(3)) : "?";

    private static async Task ExecuteAsync(NpgsqlDataSource database, string sql)
    {
        await using var command = database.CreateCommand(sql);
        await command.ExecuteNonQueryAsync();
    }
}
