using System.Diagnostics;
using System.Globalization;
using Marketplace.Grains;
using Marketplace.Silo.Apis;
using Marketplace.Silo.Database;
using Microsoft.Extensions.Logging.Abstractions;
using Npgsql;

namespace Marketplace.Benchmarks;

/// <summary>
/// <c>reports [accounts=1000] [data-directory]</c>: starts an embedded PostgreSQL, applies the migrations, fills the usage
/// rollups with one day of rows as the call-log writer makes them (accounts × 3 keys × 20 services × 4 outcomes, 70 calls
/// per combination and hour: 100.8 million calls for 1,000 accounts), then times each report query (the API's own
/// <see cref="ReportsApi.QueryAsync"/>) and the call-log insert with rollups (<see cref="JournalBatch.WriteAsync"/>).
/// With a data directory the database is kept and reused by the next run; without one it lives in a temp directory.
/// </summary>
public static class ReportsBenchmark
{
    private const int Keys = 3;
    private const int Services = 20;
    private const int Providers = 5;
    private const int Warmup = 3;
    private const int Runs = 20;
    private const int BatchSize = 5_000;
    private const string ServiceRollup = "marketplace_usage_service_rollup";
    private static readonly DateTimeOffset _day = new(2026, 1, 15, 0, 0, 0, TimeSpan.Zero);

    // Calls per combination and hour; rejected calls have no account (one row per key and service).
    private static readonly (string Outcome, int Calls)[] _outcomes = [("succeeded", 63), ("upstreamFailed", 3), ("upstreamRejected", 3), ("rejected", 1)];

    /// <summary>Runs the benchmark and prints its figures.</summary>
    public static async Task RunAsync(string[] args)
    {
        var accounts = args.Length > 1 ? int.Parse(args[1], CultureInfo.InvariantCulture) : 1000;
        var keep = args.Length > 2;
        var root = keep ? Path.GetFullPath(args[2]) : Path.Combine(Path.GetTempPath(), "marketplace-reports-" + Guid.NewGuid().ToString("N")[..8]);
        await using (var postgres = new EmbeddedPostgres(new EmbeddedPostgresOptions { DataDirectory = root, Port = 0 }, NullLogger<EmbeddedPostgres>.Instance))
        {
            await postgres.StartAsync();
            await new MigrationRunner(postgres.ConnectionString, NullLogger<MigrationRunner>.Instance).ApplyAsync();
            await using var database = NpgsqlDataSource.Create(new NpgsqlConnectionStringBuilder(postgres.ConnectionString) { CommandTimeout = 0 }.ConnectionString);
            Console.WriteLine($"reports: PostgreSQL {await ScalarAsync<string>(database, "SHOW server_version")}, shared_buffers " +
                $"{await ScalarAsync<string>(database, "SHOW shared_buffers")}, {Environment.ProcessorCount} cores, data in {root}");

            await GenerateAsync(database, accounts);
            await TimeReportsAsync(database, accounts);
            await TimeCallLogAsync(database, accounts, root);
        }

        if (!keep)
        {
            try
            {
                Directory.Delete(root, recursive: true);
            }
            catch (IOException)
            {
            }
            catch (UnauthorizedAccessException)
            {
            }
        }
    }

    private static async Task GenerateAsync(NpgsqlDataSource database, int accounts)
    {
        var existing = await ScalarAsync<long>(database, $"SELECT count(*) FROM marketplace_usage_rollup WHERE granularity = 'day' AND bucket_start = '{_day:yyyy-MM-dd}'");
        var expected = (long)accounts * Keys * Services * _outcomes.Length;
        if (existing == expected)
        {
            Console.WriteLine($"reports: reusing {existing:N0} day rows of {_day:yyyy-MM-dd}");
            return;
        }

        if (existing != 0)
        {
            throw new InvalidOperationException($"The database holds {existing} day rows for {_day:yyyy-MM-dd}, not {expected}; use another data directory.");
        }

        var watch = Stopwatch.StartNew();

        // Hour rows: every combination in every hour. Minute rows: only the first hour (a full day of minute rows at this
        // cardinality would be ~100 million rows, one per call), the succeeded calls spread one per minute with the rest
        // in minute 0. Day rows: the hours summed. All with the writer's histogram shape.
        for (var hour = 0; hour < 24; hour++)
        {
            await ExecuteAsync(database, RowsSql("hour", $"'{_day:yyyy-MM-dd}'::timestamptz + interval '{hour} hours'", "o.calls"));
        }

        await ExecuteAsync(database, RowsSql("day", $"'{_day:yyyy-MM-dd}'::timestamptz", "o.calls * 24"));
        await ExecuteAsync(database,
            RowsSql("minute", $"'{_day:yyyy-MM-dd}'::timestamptz + make_interval(mins => m)", "CASE WHEN m = 0 THEN o.calls - 59 ELSE 1 END",
                ", generate_series(0, 59) AS m", " AND o.outcome = 'succeeded'"));
        if (await ScalarAsync<bool>(database, $"SELECT to_regclass('{ServiceRollup}') IS NOT NULL"))
        {
            // The per-service rows (migration 0006) are the per-account rows summed over account and key, as the writer makes them.
            await ExecuteAsync(database, $"""
                INSERT INTO {ServiceRollup} (granularity, bucket_start, service_id, version, outcome, currency, calls, charged, latency_buckets)
                SELECT granularity, bucket_start, service_id, version, outcome, currency, sum(calls)::bigint, sum(charged)::bigint,
                       ARRAY[{string.Join(", ", Enumerable.Range(1, 15).Select(b => $"sum(latency_buckets[{b}])::bigint"))}]
                FROM marketplace_usage_rollup GROUP BY 1, 2, 3, 4, 5, 6
                """);
            await ExecuteAsync(database, $"VACUUM ANALYZE {ServiceRollup}");
        }

        await ExecuteAsync(database, "VACUUM ANALYZE marketplace_usage_rollup");
        var counts = await ScalarAsync<string>(database,
            "SELECT string_agg(granularity || ' ' || n, ', ') FROM (SELECT granularity, count(*) AS n FROM marketplace_usage_rollup GROUP BY 1 ORDER BY 1) c");
        Console.WriteLine($"reports: generated rollup rows ({counts}) in {watch.Elapsed.TotalSeconds:F0} s; " +
            $"{await ScalarAsync<string>(database, "SELECT pg_size_pretty(sum(pg_total_relation_size(inhrelid))) FROM pg_inherits WHERE inhparent = 'marketplace_usage_rollup'::regclass")} with indexes");

        string RowsSql(string granularity, string bucket, string calls, string extraFrom = "", string extraWhere = "") => $"""
            INSERT INTO marketplace_usage_rollup (granularity, bucket_start, account_id, key_id, service_id, version, outcome, currency,
                                                  calls, charged, latency_buckets)
            SELECT '{granularity}', {bucket}, CASE WHEN o.outcome = 'rejected' THEN '' ELSE 'acct-' || lpad(a::text, 5, '0') END,
                   'key-' || lpad(a::text, 5, '0') || '-' || k, 'svc-' || lpad(s::text, 2, '0'), 'v1', o.outcome, 'EUR', c.calls,
                   CASE WHEN o.outcome = 'succeeded' THEN c.calls * (1 + s % 5) ELSE 0 END,
                   ARRAY[0, 0, c.calls / 20, c.calls / 10, c.calls / 5,
                         c.calls - c.calls / 20 - c.calls / 10 - c.calls / 5 - c.calls / 10 - c.calls / 20 - c.calls / 50,
                         c.calls / 10, c.calls / 20, c.calls / 50, 0, 0, 0, 0, 0, 0]::bigint[]
            FROM generate_series(1, {accounts}) AS a, generate_series(1, {Keys}) AS k, generate_series(1, {Services}) AS s,
                 (VALUES {string.Join(", ", _outcomes.Select(o => $"('{o.Outcome}', {o.Calls})"))}) AS o (outcome, calls){extraFrom},
                 LATERAL (SELECT ({calls})::bigint AS calls) AS c
            WHERE true{extraWhere}
            """;
    }

    private static async Task TimeReportsAsync(NpgsqlDataSource database, int accounts)
    {
        var day = new ReportWindow(_day, _day.AddDays(1), "day");
        var hours = day with { Granularity = "hour" };
        var firstHour = new ReportWindow(_day, _day.AddHours(1), "minute");
        var daytime = new ReportWindow(_day.AddHours(6), _day.AddHours(18), "hour");
        var account = $"acct-{accounts / 2:D5}";
        IReadOnlyList<string> provider = [.. Enumerable.Range(1, Services).Where(s => s % Providers == 1).Select(s => $"svc-{s:D2}")];
        var reports = new (string Name, ReportQuery Query)[]
        {
            ("consumer usage, day by service", new ReportQuery(day, "service", AccountId: account)),
            ("consumer usage, day by key", new ReportQuery(day, "key", AccountId: account)),
            ("consumer usage, day by hour", new ReportQuery(hours, "bucket", AccountId: account)),
            ("consumer usage, hour by minute", new ReportQuery(firstHour, "bucket", AccountId: account)),
            ($"provider revenue, day by service ({provider.Count} services)", new ReportQuery(day, "service", ServiceIds: provider, Latency: false)),
            ("provider revenue, day by version", new ReportQuery(day, "version", ServiceIds: provider, Latency: false)),
            ("provider revenue, day by hour", new ReportQuery(hours, "bucket", ServiceIds: provider, Latency: false)),
            ("admin summary, day", new ReportQuery(day, "total")),
            ("admin top 10 consumers, day", new ReportQuery(day, "account", Top: 10, WithAccountOnly: true, Latency: false)),
            ("admin top 10 services, day", new ReportQuery(day, "service", Top: 10, Latency: false)),
            ("admin summary, day from hour rows", new ReportQuery(hours, "total")),
            ("admin summary, 06:00-18:00 (hour rows)", new ReportQuery(daytime, "total")),
            ("admin top 10 services, 06:00-18:00 (hour rows)", new ReportQuery(daytime, "service", Top: 10, Latency: false)),
            ("provider revenue, day by version from hour rows", new ReportQuery(hours, "version", ServiceIds: provider, Latency: false)),
            ("admin summary, day by hour", new ReportQuery(hours, "bucket")),
        };

        Console.WriteLine();
        Console.WriteLine($"| report ({Runs} runs after {Warmup} warm-up) | rows out | calls covered | median ms | p95 ms |");
        Console.WriteLine("|---|---:|---:|---:|---:|");
        foreach (var (name, query) in reports)
        {
            IReadOnlyList<ReportRow> rows = [];
            for (var i = 0; i < Warmup; i++)
            {
                rows = await ReportsApi.QueryAsync(database, query, CancellationToken.None);
            }

            var times = new double[Runs];
            for (var i = 0; i < Runs; i++)
            {
                var watch = Stopwatch.StartNew();
                rows = await ReportsApi.QueryAsync(database, query, CancellationToken.None);
                times[i] = watch.Elapsed.TotalMilliseconds;
            }

            Array.Sort(times);
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"| {name} | {rows.Count:N0} | {rows.Sum(r => r.Calls):N0} | {times[Runs / 2]:F1} | {times[(int)Math.Ceiling(Runs * 0.95) - 1]:F1} |"));
        }
    }

    private static async Task TimeCallLogAsync(NpgsqlDataSource database, int accounts, string root)
    {
        // Today's partition, as the writer's loop would have created it; the rows are stamped within the last second.
        var today = DateOnly.FromDateTime(DateTime.UtcNow);
        await ExecuteAsync(database, $"CREATE TABLE IF NOT EXISTS {CallLogWriter.PartitionName(today)} PARTITION OF marketplace_call_log " +
            $"FOR VALUES FROM ('{today:yyyy-MM-dd}') TO ('{today.AddDays(1):yyyy-MM-dd}')");
        var random = new Random(42);
        CallRecord[] Batch(int accountCount, int keyCount, int serviceCount)
        {
            var now = DateTimeOffset.UtcNow;
            return [.. Enumerable.Range(0, BatchSize).Select(_ =>
            {
                var a = random.Next(1, accountCount + 1);
                var s = random.Next(1, serviceCount + 1);
                var outcome = random.Next(100) switch { < 90 => CallOutcome.Succeeded, < 95 => CallOutcome.UpstreamFailed, _ => CallOutcome.UpstreamRejected };
                var charged = outcome == CallOutcome.Succeeded ? 1 + (s % 5) : 0;
                var at = now.AddMilliseconds(-random.Next(1000));
                return new CallRecord(Guid.CreateVersion7(at), Guid.NewGuid().ToString("N"), at, $"acct-{a:D5}", $"key-{a:D5}-{random.Next(1, keyCount + 1)}",
                    $"svc-{s:D2}", "v1", outcome, null, outcome == CallOutcome.Succeeded ? 200 : 502, 3, 2 + (random.NextDouble() * 40), 1 + (s % 5), charged, "EUR", null);
            })];
        }

        Console.WriteLine();
        Console.WriteLine($"| call-log insert with rollups, batches of {BatchSize:N0} | writers | batches | rows/s | PostgreSQL CPU µs/row |");
        Console.WriteLine("|---|---:|---:|---:|---:|");
        foreach (var (name, accountCount, keyCount, serviceCount) in new[]
        {
            ($"calls spread over {accounts:N0} accounts x {Keys} keys x {Services} services", accounts, Keys, Services),
            ("calls of 10 accounts x 1 key x 2 services", 10, 1, 2),
        })
        {
            foreach (var writers in new[] { 1, 2 })
            {
                const int BatchesPerWriter = 20;
                await JournalBatch.WriteAsync(database, Guid.NewGuid(), 1, Batch(accountCount, keyCount, serviceCount), CancellationToken.None);
                var batches = Enumerable.Range(0, writers)
                    .Select(_ => Enumerable.Range(0, BatchesPerWriter).Select(_ => Batch(accountCount, keyCount, serviceCount)).ToList()).ToList();
                var cpuBefore = PostgresCpu(root);
                var watch = Stopwatch.StartNew();
                await Task.WhenAll(batches.Select(async own =>
                {
                    var sender = Guid.NewGuid();
                    var sequence = 0L;
                    foreach (var batch in own)
                    {
                        await JournalBatch.WriteAsync(database, sender, ++sequence, batch, CancellationToken.None);
                    }
                }));
                var elapsed = watch.Elapsed;
                var cpu = PostgresCpu(root) - cpuBefore;
                var rows = writers * BatchesPerWriter * BatchSize;
                Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
                    $"| {name} | {writers} | {writers * BatchesPerWriter} | {rows / elapsed.TotalSeconds:N0} | {cpu.TotalMicroseconds / rows:F1} |"));
            }
        }
    }

    // CPU time (user + system) of the PostgreSQL server: the postmaster of the data directory and every process it forked
    // (backends, writers), from /proc. Clock ticks are 1/100 s on Linux.
    internal static TimeSpan PostgresCpu(string root)
    {
        if (!OperatingSystem.IsLinux())
        {
            return TimeSpan.Zero;
        }

        var postmaster = int.Parse(File.ReadLines(Path.Combine(root, "postmaster.pid")).First().Trim(), CultureInfo.InvariantCulture);
        long ticks = 0;
        foreach (var directory in Directory.EnumerateDirectories("/proc"))
        {
            if (!int.TryParse(Path.GetFileName(directory), NumberStyles.None, CultureInfo.InvariantCulture, out var pid))
            {
                continue;
            }

            try
            {
                var stat = File.ReadAllText(Path.Combine(directory, "stat"));
                var fields = stat[(stat.LastIndexOf(')') + 2)..].Split(' ');
                var parent = int.Parse(fields[1], CultureInfo.InvariantCulture);
                if (pid == postmaster || parent == postmaster)
                {
                    ticks += long.Parse(fields[11], CultureInfo.InvariantCulture) + long.Parse(fields[12], CultureInfo.InvariantCulture);
                }
            }
            catch (IOException)
            {
                // The process ended meanwhile.
            }
        }

        return TimeSpan.FromMilliseconds(ticks * 10);
    }

    private static async Task ExecuteAsync(NpgsqlDataSource database, string sql)
    {
        await using var command = database.CreateCommand(sql);
        await command.ExecuteNonQueryAsync();
    }

    private static async Task<T> ScalarAsync<T>(NpgsqlDataSource database, string sql)
    {
        await using var command = database.CreateCommand(sql);
        return (T)(await command.ExecuteScalarAsync())!;
    }
}
