using System.Diagnostics;
using System.Globalization;
using Marketplace.Grains;
using Marketplace.Silo.Database;
using Marketplace.Silo.Hosting;
using Microsoft.Extensions.Logging.Abstractions;
using Npgsql;

namespace Marketplace.Benchmarks;

/// <summary>
/// <c>journal-latency [rows=8] [batches=2000] [writers=1]</c>: what strict mode waits for. Each writer (its own sender)
/// commits batches of a few rows one after another, as the call-log writer does under strict callers, on an embedded
/// PostgreSQL (fsync on) with every migration applied and the data source the marketplace builds (statements prepared).
/// Prints the commit latency (p50, p99), batches/s and rows/s, and PostgreSQL's CPU per batch and per row.
/// </summary>
public static class JournalLatencyBenchmark
{
    /// <summary>Runs the benchmark and prints its figures.</summary>
    public static async Task RunAsync(string[] args)
    {
        var rows = args.Length > 1 ? int.Parse(args[1], CultureInfo.InvariantCulture) : 8;
        var count = args.Length > 2 ? int.Parse(args[2], CultureInfo.InvariantCulture) : 2000;
        var writers = args.Length > 3 ? int.Parse(args[3], CultureInfo.InvariantCulture) : 1;
        var root = Path.Combine(Path.GetTempPath(), "marketplace-journal-latency-" + Guid.NewGuid().ToString("N")[..8]);
        await using (var postgres = new EmbeddedPostgres(new EmbeddedPostgresOptions { DataDirectory = root, Port = 0 }, NullLogger<EmbeddedPostgres>.Instance))
        {
            var connectionString = Environment.GetEnvironmentVariable("JOURNAL_CONNECTION");
            if (connectionString is null)
            {
                await postgres.StartAsync();
                connectionString = postgres.ConnectionString;
            }

            await new MigrationRunner(connectionString, NullLogger<MigrationRunner>.Instance).ApplyAsync();
            await using var database = MarketplaceHost.BuildDataSource(connectionString);
            var today = DateOnly.FromDateTime(DateTime.UtcNow);
            await using (var partition = database.CreateCommand($"CREATE TABLE IF NOT EXISTS {CallLogWriter.PartitionName(today)} PARTITION OF marketplace_call_log " +
                $"FOR VALUES FROM ('{today:yyyy-MM-dd}') TO ('{today.AddDays(1):yyyy-MM-dd}')"))
            {
                await partition.ExecuteNonQueryAsync();
            }

            // Warm-up (statements prepared on every pooled connection), then the measurement.
            await MeasureAsync(database, root, rows, Math.Min(count, 200), writers);
            var (latencies, elapsed, cpu) = await MeasureAsync(database, root, rows, count, writers);
            latencies.Sort();
            var batches = latencies.Count;
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"journal-latency: {writers} writer(s), {batches:N0} batches of {rows} rows, {Environment.ProcessorCount} cores, load average {LoadAverage()}"));
            Console.WriteLine("| commit p50 | commit p99 | batches/s | rows/s | PostgreSQL CPU µs per batch | per row |");
            Console.WriteLine("|---:|---:|---:|---:|---:|---:|");
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"| {latencies[batches / 2].TotalMicroseconds:N0} µs | {latencies[(int)(batches * 0.99)].TotalMicroseconds:N0} µs | " +
                $"{batches / elapsed.TotalSeconds:N0} | {batches * rows / elapsed.TotalSeconds:N0} | {cpu.TotalMicroseconds / batches:N0} | " +
                $"{cpu.TotalMicroseconds / (batches * rows):N0} |"));
        }

        try
        {
            Directory.Delete(root, recursive: true);
        }
        catch (Exception exception) when (exception is IOException or UnauthorizedAccessException)
        {
        }
    }

    private static async Task<(List<TimeSpan> Latencies, TimeSpan Elapsed, TimeSpan Cpu)> MeasureAsync(
        NpgsqlDataSource database, string root, int rows, int count, int writers)
    {
        var latencies = new List<TimeSpan>(count * writers);
        var cpuBefore = File.Exists(Path.Combine(root, "postmaster.pid")) ? ReportsBenchmark.PostgresCpu(root) : TimeSpan.Zero;
        var watch = Stopwatch.StartNew();
        await Task.WhenAll(Enumerable.Range(0, writers).Select(async _ =>
        {
            var sender = Guid.NewGuid();
            for (var sequence = 1L; sequence <= count; sequence++)
            {
                var batch = Batch(rows);
                var started = Stopwatch.GetTimestamp();
                await JournalBatch.WriteAsync(database, sender, sequence, batch, CancellationToken.None);
                var latency = Stopwatch.GetElapsedTime(started);
                lock (latencies)
                {
                    latencies.Add(latency);
                }
            }
        }));
        return (latencies, watch.Elapsed, (File.Exists(Path.Combine(root, "postmaster.pid")) ? ReportsBenchmark.PostgresCpu(root) : TimeSpan.Zero) - cpuBefore);
    }

    // The strict HTTP benchmark's calls: one account, key, service and version, all succeeded and charged.
    private static CallRecord[] Batch(int rows)
    {
        var now = DateTimeOffset.UtcNow;
        return [.. Enumerable.Range(0, rows).Select(_ => new CallRecord(Guid.CreateVersion7(now), Guid.NewGuid().ToString("N"), now, "acct-1", "key-1",
            "svc-1", "v1", CallOutcome.Succeeded, null, 200, 1, 2.5, 3, 3, "EUR", null))];
    }

    private static string LoadAverage() => File.Exists("/proc/loadavg") ? string.Join(' ', File.ReadAllText("/proc/loadavg").Split(' ').Take(3)) : "?";
}
