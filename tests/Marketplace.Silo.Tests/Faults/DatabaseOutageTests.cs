using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Net.Http.Json;
using System.Text.Json;
using Marketplace.Grains;
using Marketplace.Silo.Database;
using Marketplace.Silo.Tests.Infrastructure;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging.Abstractions;
using Npgsql;

namespace Marketplace.Silo.Tests.Faults;

/// <summary>
/// PostgreSQL goes away for 10 s under HTTP load, twice over: stopped (connections refused), and hung (the postmaster and
/// every backend SIGSTOPped, then SIGCONTinued: connections and statements get no answer at all). In both, calls keep being
/// answered from grain memory until the call log's bounded queue is full, then they wait for room (back-pressure: the
/// queue never holds more than its capacity); <c>/health/ready</c> answers 503 while it lasts and 200 after; and once the
/// database is back every answered call has exactly one row, the rollups equal a count of the log, and the account
/// reconciles with the log. The hang also needs the call log's command timeout: without it a batch written into the hung
/// server waits on Npgsql's 30 s default, and the loop would report nothing during the hang.
/// </summary>
/// <remarks>
/// Each test runs a PostgreSQL server of its own on a fixed port (so that a restart comes back where the host points).
/// The figures (calls served during the outage, the largest queue, rows missing and duplicated, time to drain) are printed
/// for the README's guarantee table.
/// </remarks>
[Collection(PostgresCollection.Name)]
public sealed class DatabaseOutageTests
{
    private const int Loops = 6;
    private const double CallsPerSecond = 200;
    private const int QueueCapacity = 1000;
    private static readonly TimeSpan FlushInterval = TimeSpan.FromMilliseconds(200);
    private static readonly TimeSpan CommandTimeout = TimeSpan.FromSeconds(2);
    private static readonly TimeSpan LoadBefore = TimeSpan.FromSeconds(1.5);
    private static readonly TimeSpan Outage = TimeSpan.FromSeconds(10);
    private static readonly TimeSpan LoadAfter = TimeSpan.FromSeconds(2);
    private static readonly TimeSpan RecoveryDeadline = TimeSpan.FromSeconds(15);
    private static readonly TimeSpan TailDeadline = TimeSpan.FromSeconds(5);
    private static readonly TimeSpan HealthPollInterval = TimeSpan.FromMilliseconds(250);

    [Fact]
    public Task DatabaseStopped_TenSecondsUnderLoad_CallsServedQueueBoundedEveryRowWrittenOnce() =>
        RunAsync("stopped", database => database.StopAsync(), database => database.StartAsync());

    [Fact]
    public Task DatabaseHung_TenSecondsUnderLoad_StallBoundedByTheCommandTimeoutEveryRowWrittenOnce()
    {
        var stopped = new List<int>();
        return RunAsync("hung",
            database =>
            {
                stopped.AddRange(PostgresProcesses.Signal(database.DataDirectory, PostgresProcesses.SigStop));
                return Task.CompletedTask;
            },
            _ =>
            {
                PostgresProcesses.Continue(stopped);
                stopped.Clear();
                return Task.CompletedTask;
            },
            cleanup: () => PostgresProcesses.Continue(stopped));
    }

    private static async Task RunAsync(string fault, Func<EmbeddedPostgres, Task> begin, Func<EmbeddedPostgres, Task> end, Action? cleanup = null)
    {
        var root = Path.Combine(Path.GetTempPath(), "marketplace-outage-" + Guid.NewGuid().ToString("N")[..12]);
        var database = new EmbeddedPostgres(
            new EmbeddedPostgresOptions { DataDirectory = Path.Combine(root, "data"), Port = Ports.Free() },
            NullLogger<EmbeddedPostgres>.Instance);
        try
        {
            await database.StartAsync(TestContext.Current.CancellationToken);
            await RunAsync(fault, database, begin, end);
        }
        finally
        {
            cleanup?.Invoke();
            await database.DisposeAsync();
            try
            {
                Directory.Delete(root, recursive: true);
            }
            catch (Exception exception) when (exception is IOException or UnauthorizedAccessException)
            {
                // A leftover temporary directory is not worth failing the test for.
            }
        }
    }

    private static async Task RunAsync(string fault, EmbeddedPostgres database, Func<EmbeddedPostgres, Task> begin, Func<EmbeddedPostgres, Task> end)
    {
        var connectionString = database.ConnectionString;
        await using var provider = await TestHosts.StartProviderAsync();
        await using var host = await TestHosts.StartMarketplaceAsync(connectionString, "outage-" + Guid.NewGuid().ToString("N")[..8],
            new Dictionary<string, string?>
            {
                ["CallLog:FlushInterval"] = FlushInterval.ToString("c", CultureInfo.InvariantCulture),
                ["CallLog:QueueCapacity"] = QueueCapacity.ToString(CultureInfo.InvariantCulture),
                ["CallLog:CommandTimeout"] = CommandTimeout.ToString("c", CultureInfo.InvariantCulture),
            });
        using var admin = new HttpClient { BaseAddress = host.BaseAddress, Timeout = TimeSpan.FromSeconds(10) };
        admin.DefaultRequestHeaders.Add("X-Admin-Key", TestHosts.AdminKey);
        var consumer = await new AdminApi(admin, provider.Urls.First()).CreateConsumerAsync(balance: 1_000_000, price: 1);
        var writer = host.App.Services.GetRequiredService<CallLogWriter>();
        var loops = host.App.Services.GetRequiredService<BackgroundLoops>();

        var clock = Stopwatch.StartNew();
        using var load = new CallLoad(host.BaseAddress, consumer.ApiKey, $"/v1/call/{consumer.ServiceId}/verify?number=%2B4915112345678",
            Loops, CallsPerSecond, clock);
        load.Start();
        await Task.Delay(LoadBefore);
        Assert.Equal(HttpStatusCode.OK, await ReadyAsync(admin));

        await begin(database);
        var downAt = clock.Elapsed;
        OutageWatch outage;
        try
        {
            outage = await WatchOutageAsync(admin, writer, loops, clock, downAt);
        }
        finally
        {
            // Also when the watch fails: the host must not shut down against a stopped or hung server.
            await end(database);
        }

        var upAt = clock.Elapsed;

        // Recovery under continued load: when the rows of every call answered so far are stored, and when ready again.
        var backlog = load.Finished().Where(call => call.AnsweredOk).Select(call => call.TrackId).ToList();
        TimeSpan? drainedAt = null;
        TimeSpan? readyAt = null;
        while ((drainedAt is null || readyAt is null || clock.Elapsed < upAt + LoadAfter) && clock.Elapsed < upAt + RecoveryDeadline)
        {
            if (drainedAt is null && (await CallLogRows.CountAsync(connectionString, backlog)).Count == backlog.Count)
            {
                drainedAt = clock.Elapsed;
            }

            if (drainedAt is not null && readyAt is null && await ReadyAsync(admin) == HttpStatusCode.OK)
            {
                readyAt = clock.Elapsed;
            }

            await Task.Delay(50);
        }

        var calls = await load.StopAsync();
        var loadStoppedAt = clock.Elapsed;
        var answered = calls.Where(call => call.AnsweredOk).ToList();
        Dictionary<string, long> rows;
        while (true)
        {
            rows = await CallLogRows.CountAsync(connectionString, answered.Select(call => call.TrackId));
            if (rows.Count == answered.Count || clock.Elapsed - loadStoppedAt > TailDeadline)
            {
                break;
            }

            await Task.Delay(50);
        }

        var duplicates = await CallLogRows.DuplicatesAsync(connectionString);
        var rollups = await RollupTotalsAsync(connectionString);
        var reconciliation = await admin.GetFromJsonAsync<JsonElement>($"/admin/reconciliation/accounts/{consumer.AccountId}");

        var missing = answered.Where(call => !rows.ContainsKey(call.TrackId)).ToList();
        var twice = answered.Where(call => rows.GetValueOrDefault(call.TrackId) > 1).ToList();
        var other = calls.Where(call => !call.AnsweredOk).ToList();
        var duringOutage = answered.Count(call => call.AnsweredAt >= downAt && call.AnsweredAt < upAt);
        var waited = answered.Count(call => call.SentAt < upAt && call.AnsweredAt >= upAt && call.AnsweredAt - call.SentAt > TimeSpan.FromSeconds(1));
        var outageSeconds = (upAt - downAt).TotalSeconds;
        TestContext.Current.TestOutputHelper?.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"PostgreSQL {fault} for {outageSeconds:F1} s under {Loops} loops at {CallsPerSecond} calls/s: {duringOutage} calls answered during it " +
            $"({answered.Count(call => call.AnsweredAt >= downAt && call.AnsweredAt < downAt + TimeSpan.FromSeconds(3))} in its first 3 s); " +
            $"call-log queue up to {outage.MaxQueue} of {QueueCapacity} records, then {waited} calls waited for room (back-pressure) and were answered after it; " +
            $"/health/ready: {outage.Describe()}; call-log loop first reported the failure {Since(outage.ProblemAt, downAt)} into it. " +
            $"Backlog of {backlog.Count} answered calls stored {Since(drainedAt, upAt)} after PostgreSQL was back; ready again {Since(readyAt, upAt)} after. " +
            $"{answered.Count} calls answered 200 in all, {other.Count} other outcomes" +
            $"{(other.Count > 0 ? " (" + string.Join(", ", other.Select(call => call.Status?.ToString() ?? call.Error).Distinct().Take(3)) + ")" : "")}; " +
            $"{missing.Count} answered calls without a row, {twice.Count} with two, {duplicates.Count} TrackIds twice in the table; " +
            $"rollups: {rollups}; reconciliation: {reconciliation}"));

        Assert.True(missing.Count == 0, $"{missing.Count} answered calls have no call-log row after recovery, e.g. {missing.FirstOrDefault()?.TrackId}");
        Assert.True(drainedAt is not null, $"the backlog was not stored within {RecoveryDeadline.TotalSeconds:F0} s after PostgreSQL was back");
        Assert.Empty(twice);
        Assert.Empty(duplicates);
        Assert.True(rollups.Exact, $"the rollups do not equal a count of the call log: {rollups}");
        Assert.True(other.Count == 0, $"{other.Count} calls were not answered 200, e.g. {other.FirstOrDefault()}");
        Assert.True(duringOutage > 0, "no call was answered while PostgreSQL was away: admission should not need the database");
        Assert.True(outage.MaxQueue <= QueueCapacity, $"the call-log queue held {outage.MaxQueue} records, over its capacity of {QueueCapacity}");
        Assert.True(outage.MaxQueue >= QueueCapacity - Loops,
            $"the queue never filled ({outage.MaxQueue} of {QueueCapacity}) although the outage outlasted it: the test did not exercise back-pressure");
        // Records in memory: the queue plus the one batch being retried; every answered call's record was in one of them.
        Assert.True(duringOutage <= QueueCapacity + 200, $"{duringOutage} calls answered during the outage: more than the queue and one batch can hold");
        Assert.True(outage.NotReady > 0, $"/health/ready never reported the outage: {outage.Describe()}");
        Assert.True(outage.ProblemAt is not null, $"the call-log loop never reported a failed cycle during the {outageSeconds:F0} s outage");
        Assert.True(readyAt is not null, $"/health/ready did not report ready again within {RecoveryDeadline.TotalSeconds:F0} s after PostgreSQL was back");
        Assert.True(reconciliation.GetProperty("consistent").GetBoolean(), $"call log and account disagree after the outage: {reconciliation}");
        var everyAccount = await admin.GetFromJsonAsync<JsonElement>("/admin/reconciliation");
        Assert.True(everyAccount.GetProperty("consistent").GetBoolean(), $"accounts differ from the journal after the outage: {everyAccount}");
    }

    /// <summary>Polls readiness, the call-log loop's status and the queue for the outage.</summary>
    private static async Task<OutageWatch> WatchOutageAsync(HttpClient admin, CallLogWriter writer, BackgroundLoops loops, Stopwatch clock, TimeSpan downAt)
    {
        var watch = new OutageWatch();
        var until = downAt + Outage;
        using var sampling = new CancellationTokenSource();

        // The queue is sampled on its own, often: a readiness poll may take its 2 s database timeout.
        var sampler = Task.Run(async () =>
        {
            while (!sampling.IsCancellationRequested)
            {
                watch.MaxQueue = Math.Max(watch.MaxQueue, writer.QueueLength);
                if (watch.ProblemAt is null && loops.Snapshot().FirstOrDefault(loop => loop.Name == "call-log")?.Problem is not null)
                {
                    watch.ProblemAt = clock.Elapsed;
                }

                await Task.Delay(20);
            }
        });

        while (clock.Elapsed < until)
        {
            if (await ReadyAsync(admin) == HttpStatusCode.OK)
            {
                watch.Ready++;
            }
            else
            {
                watch.NotReady++;
            }

            var wait = TimeSpan.FromTicks(Math.Min(HealthPollInterval.Ticks, (until - clock.Elapsed).Ticks));
            if (wait > TimeSpan.Zero)
            {
                await Task.Delay(wait);
            }
        }

        await sampling.CancelAsync();
        await sampler;
        return watch;
    }

    private static async Task<HttpStatusCode> ReadyAsync(HttpClient client)
    {
        using var response = await client.GetAsync("/health/ready");
        return response.StatusCode;
    }

    // Log rows against the sum of calls at every granularity of both rollups (the test's database holds only its calls).
    private static async Task<RollupTotals> RollupTotalsAsync(string connectionString)
    {
        await using var connection = new NpgsqlConnection(connectionString);
        await connection.OpenAsync();
        await using var command = new NpgsqlCommand(
            "SELECT (SELECT count(*) FROM marketplace_call_log), " +
            "ARRAY(SELECT coalesce(sum(calls), 0)::bigint FROM marketplace_usage_rollup r RIGHT JOIN unnest(ARRAY['minute', 'hour', 'day']) g ON r.granularity = g GROUP BY g ORDER BY g), " +
            "ARRAY(SELECT coalesce(sum(calls), 0)::bigint FROM marketplace_usage_service_rollup r RIGHT JOIN unnest(ARRAY['minute', 'hour', 'day']) g ON r.granularity = g GROUP BY g ORDER BY g)",
            connection);
        await using var reader = await command.ExecuteReaderAsync();
        await reader.ReadAsync();
        return new RollupTotals(reader.GetInt64(0), reader.GetFieldValue<long[]>(1), reader.GetFieldValue<long[]>(2));
    }

    private static string Since(TimeSpan? at, TimeSpan since) =>
        at is { } value ? ((value - since).TotalSeconds.ToString("F1", CultureInfo.InvariantCulture) + " s") : "never (within the deadline)";

    private sealed record RollupTotals(long LogRows, long[] PerAccount, long[] PerService)
    {
        public bool Exact => PerAccount.Length == 3 && PerService.Length == 3 && PerAccount.Concat(PerService).All(calls => calls == LogRows);

        public override string ToString() =>
            $"{LogRows} log rows; calls per account (day, hour, minute) {string.Join("/", PerAccount)}, per service {string.Join("/", PerService)}";
    }

    private sealed class OutageWatch
    {
        public int Ready { get; set; }

        public int NotReady { get; set; }

        public TimeSpan? ProblemAt { get; set; }

        public int MaxQueue { get; set; }

        public string Describe() => string.Create(CultureInfo.InvariantCulture, $"{NotReady} polls answered 503, {Ready} answered 200");
    }
}

/// <summary>Stops and continues a PostgreSQL server's processes (the postmaster of a data directory and its children).</summary>
internal static class PostgresProcesses
{
    public const string SigStop = "STOP";
    public const string SigCont = "CONT";

    /// <summary>Sends <paramref name="signal"/> to the postmaster first (so it forks no more), then to every child; returns their ids.</summary>
    public static IReadOnlyList<int> Signal(string dataDirectory, string signal)
    {
        var postmaster = int.Parse(File.ReadLines(Path.Combine(dataDirectory, "postmaster.pid")).First().Trim(), CultureInfo.InvariantCulture);
        var signalled = new List<int>();
        Send(postmaster, signal);
        signalled.Add(postmaster);
        foreach (var child in Children(postmaster))
        {
            Send(child, signal);
            signalled.Add(child);
        }

        return signalled;
    }

    /// <summary>Continues the given processes (children first, then the postmaster); ignores those gone.</summary>
    public static void Continue(IReadOnlyList<int> processes)
    {
        foreach (var pid in processes.Reverse())
        {
            Kill(pid, SigCont);
        }
    }

    private static void Send(int pid, string signal)
    {
        if (Kill(pid, signal) != 0)
        {
            throw new InvalidOperationException($"kill -{signal} {pid} failed");
        }
    }

    private static int Kill(int pid, string signal)
    {
        using var kill = Process.Start(new ProcessStartInfo("kill", ["-s", signal, pid.ToString(CultureInfo.InvariantCulture)])
        {
            RedirectStandardError = true,
        })!;
        kill.WaitForExit();
        return kill.ExitCode;
    }

    private static List<int> Children(int parent)
    {
        var children = new List<int>();
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
                if (int.Parse(fields[1], CultureInfo.InvariantCulture) == parent)
                {
                    children.Add(pid);
                }
            }
            catch (IOException)
            {
                // The process ended meanwhile.
            }
        }

        return children;
    }
}
