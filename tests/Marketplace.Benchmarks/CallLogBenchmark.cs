using System.Diagnostics;
using System.Globalization;
using Marketplace.Grains;
using Marketplace.Silo.Database;
using Microsoft.Extensions.Logging.Abstractions;
using Npgsql;

namespace Marketplace.Benchmarks;

/// <summary>
/// <c>calllog [rounds=3] [accounts=1000] [batch=5000]</c>: the journal writer's batch (<see cref="JournalBatch.WriteAsync"/>:
/// the sender's batch number, binary COPY of the rows, rollups and totals aggregated in memory, one transaction) on an
/// embedded PostgreSQL with every migration applied. Each measurement is 20 batches of one sender, first with calls spread
/// over accounts × 3 keys × 20 services (nearly every call its own minute row), then over 10 accounts × 1 key × 2 services.
/// Prints rows/s, PostgreSQL CPU µs per row (postmaster and backends, from /proc) and database commits per 1,000 calls
/// (<c>pg_stat_database.xact_commit</c> of the database, read after the pool's connections closed so that every backend
/// has reported its counts). <c>CALLLOG_DROP_INDEXES</c> (comma-separated index names) measures without those indexes.
/// </summary>
public static class CallLogBenchmark
{
    private const int Batches = 20;

    /// <summary>Runs the benchmark and prints its figures.</summary>
    public static async Task RunAsync(string[] args)
    {
        var rounds = args.Length > 1 ? int.Parse(args[1], CultureInfo.InvariantCulture) : 3;
        var accounts = args.Length > 2 ? int.Parse(args[2], CultureInfo.InvariantCulture) : 1000;
        var batchSize = args.Length > 3 ? int.Parse(args[3], CultureInfo.InvariantCulture) : 5_000;
        var root = Path.Combine(Path.GetTempPath(), "marketplace-calllog-" + Guid.NewGuid().ToString("N")[..8]);
        await using (var postgres = new EmbeddedPostgres(new EmbeddedPostgresOptions { DataDirectory = root, Port = 0 }, NullLogger<EmbeddedPostgres>.Instance))
        {
            await postgres.StartAsync();
            await new MigrationRunner(postgres.ConnectionString, NullLogger<MigrationRunner>.Instance).ApplyAsync();
            await using var database = NpgsqlDataSource.Create(new NpgsqlConnectionStringBuilder(postgres.ConnectionString) { CommandTimeout = 0 }.ConnectionString);
            var today = DateOnly.FromDateTime(DateTime.UtcNow);
            await ExecuteAsync(database, $"CREATE TABLE IF NOT EXISTS {CallLogWriter.PartitionName(today)} PARTITION OF marketplace_call_log " +
                $"FOR VALUES FROM ('{today:yyyy-MM-dd}') TO ('{today.AddDays(1):yyyy-MM-dd}')");
            // CALLLOG_DROP_INDEXES=name,name: measure without those indexes (what an index costs the writer).
            foreach (var index in (Environment.GetEnvironmentVariable("CALLLOG_DROP_INDEXES") ?? string.Empty).Split(',', StringSplitOptions.RemoveEmptyEntries))
            {
                await ExecuteAsync(database, $"DROP INDEX {index.Trim()}");
                Console.WriteLine($"dropped index {index.Trim()}");
            }

            var random = new Random(42);
            var writer = new Sender(Guid.NewGuid());

            // Warm-up: one measurement of each workload, not printed.
            await MeasureAsync(database, root, random, writer, batchSize, accounts, 3, 20);
            await MeasureAsync(database, root, random, writer, batchSize, 10, 1, 2);

            Console.WriteLine($"calllog: {rounds} rounds, {Batches} batches of {batchSize:N0} per measurement, {Environment.ProcessorCount} cores, " +
                $"load average {LoadAverage()}");
            Console.WriteLine();
            Console.WriteLine("| round | calls | rows/s | PostgreSQL CPU µs/row | commits per 1,000 calls |");
            Console.WriteLine("|---:|---|---:|---:|---:|");
            var results = new List<(string Workload, double RowsPerSecond, double CpuPerRow, double CommitsPerThousand)>();
            for (var round = 1; round <= rounds; round++)
            {
                foreach (var (workload, a, k, s) in new[] { ($"spread over {accounts:N0} accounts x 3 keys x 20 services", accounts, 3, 20), ("10 accounts x 1 key x 2 services", 10, 1, 2) })
                {
                    var (rowsPerSecond, cpuPerRow, commits) = await MeasureAsync(database, root, random, writer, batchSize, a, k, s);
                    results.Add((workload, rowsPerSecond, cpuPerRow, commits));
                    Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"| {round} | {workload} | {rowsPerSecond:N0} | {cpuPerRow:F1} | {commits:F2} |"));
                }
            }

            Console.WriteLine();
            Console.WriteLine("| calls | median rows/s | median PostgreSQL CPU µs/row | median commits per 1,000 calls |");
            Console.WriteLine("|---|---:|---:|---:|");
            foreach (var group in results.GroupBy(r => r.Workload))
            {
                Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
                    $"| {group.Key} | {Median(group.Select(r => r.RowsPerSecond)):N0} | {Median(group.Select(r => r.CpuPerRow)):F1} | " +
                    $"{Median(group.Select(r => r.CommitsPerThousand)):F2} |"));
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

    private static async Task<(double RowsPerSecond, double CpuPerRow, double CommitsPerThousand)> MeasureAsync(
        NpgsqlDataSource database, string root, Random random, Sender sender, int batchSize, int accounts, int keys, int services)
    {
        var batches = Enumerable.Range(0, Batches).Select(_ => Batch(random, batchSize, accounts, keys, services)).ToList();
        var commitsBefore = await CommitsAsync(database);
        var cpuBefore = ReportsBenchmark.PostgresCpu(root);
        var watch = Stopwatch.StartNew();
        foreach (var batch in batches)
        {
            await JournalBatch.WriteAsync(database, sender.Id, ++sender.Sequence, batch, CancellationToken.None);
        }

        var elapsed = watch.Elapsed;
        var cpu = ReportsBenchmark.PostgresCpu(root) - cpuBefore;
        // Less the one transaction of the reading query itself.
        var commits = await CommitsAsync(database) - commitsBefore - 1;
        var rows = Batches * batchSize;
        return (rows / elapsed.TotalSeconds, cpu.TotalMicroseconds / rows, commits * 1000.0 / rows);
    }

    // Transactions committed in this database so far. Backends report their counts when idle for a while or when they
    // exit: closing the pool's connections first makes the figure exact.
    private static async Task<long> CommitsAsync(NpgsqlDataSource database)
    {
        database.Clear();
        await using var command = database.CreateCommand("SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()");
        var commits = (long)(await command.ExecuteScalarAsync())!;
        database.Clear();
        return commits;
    }

    private static CallRecord[] Batch(Random random, int batchSize, int accounts, int keys, int services)
    {
        var now = DateTimeOffset.UtcNow;
        return [.. Enumerable.Range(0, batchSize).Select(_ =>
        {
            var a = random.Next(1, accounts + 1);
            var s = random.Next(1, services + 1);
            var outcome = random.Next(100) switch { < 90 => CallOutcome.Succeeded, < 95 => CallOutcome.UpstreamFailed, _ => CallOutcome.UpstreamRejected };
            var charged = outcome == CallOutcome.Succeeded ? 1 + (s % 5) : 0;
            var at = now.AddMilliseconds(-random.Next(1000));
            return new CallRecord(Guid.CreateVersion7(at), Guid.NewGuid().ToString("N"), at, $"acct-{a:D5}", $"key-{a:D5}-{random.Next(1, keys + 1)}",
                $"svc-{s:D2}", "v1", outcome, null, outcome == CallOutcome.Succeeded ? 200 : 502, 3, 2 + (random.NextDouble() * 40), 1 + (s % 5), charged, "EUR", null);
        })];
    }

    private static double Median(IEnumerable<double> values)
    {
        var sorted = values.Order().ToArray();
        return sorted.Length % 2 == 1 ? sorted[sorted.Length / 2] : (sorted[(sorted.Length / 2) - 1] + sorted[sorted.Length / 2]) / 2;
    }

    private static string LoadAverage() => File.Exists("/proc/loadavg") ? string.Join(' ', File.ReadAllText("/proc/loadavg").Split(' ').Take(3)) : "?";

    private sealed class Sender(Guid id)
    {
        public Guid Id { get; } = id;

        public long Sequence { get; set; }
    }

    private static async Task ExecuteAsync(NpgsqlDataSource database, string sql)
    {
        await using var command = database.CreateCommand(sql);
        await command.ExecuteNonQueryAsync();
    }
}
