using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Text.Json;
using Marketplace.Silo.Tests.Infrastructure;
using Npgsql;

namespace Marketplace.Silo.Tests.Faults;

/// <summary>
/// The call log's stated loss window, measured on the real host process: with <c>CallLog:Durability=periodic</c> a silo
/// killed with SIGKILL loses at most the rows of the calls answered in the last <c>CallLog:FlushInterval</c>; with
/// <c>strict</c> it loses none of the calls it answered.
/// </summary>
/// <remarks>
/// Paced loops call a service over HTTP, each call with its own X-Track-Id, and note when every 200 arrived. The silo is
/// SIGKILLed with calls in flight, a new silo process starts on the same database, cluster and ports, and the call log is
/// asked which answered TrackIds it holds.
/// <para>The kill is aimed late in a flush cycle, where the most is unwritten: the test watches the table's row count and
/// kills 90% of a flush interval after it saw a batch land. The bound is <c>FlushInterval + </c><see cref="Slack"/>:
/// the slack covers the insert itself, the records a loop busy with a batch collects meanwhile, and a host starved of CPU
/// on a loaded machine. A writer that never flushed (or flushed only on shutdown) would lose calls answered seconds before
/// the kill and fails the bound: <see cref="CallLog_SigKillUnderLoad_WithLongFlushInterval_LosesEveryAnsweredCall_SoTheBoundCanFail"/>
/// runs the same measurement with a one-minute flush interval and checks that the bound is violated.</para>
/// </remarks>
[Collection(PostgresCollection.Name)]
public sealed class CallLogKillTests(PostgresFixture postgres)
{
    private const int Loops = 8;
    private const double CallsPerSecond = 320;
    private static readonly TimeSpan FlushInterval = TimeSpan.FromMilliseconds(200);
    private static readonly TimeSpan Slack = TimeSpan.FromMilliseconds(500);
    private static readonly TimeSpan WarmUp = TimeSpan.FromSeconds(1.5);

    [Fact]
    public async Task CallLog_SigKillUnderLoad_Periodic_LosesAtMostTheFlushWindow()
    {
        var run = await RunAsync("periodic", FlushInterval);

        var tooOld = run.MissingOlderThan(FlushInterval + Slack);
        Assert.True(tooOld.Count == 0,
            $"{tooOld.Count} answered calls have no call-log row although they were answered more than {(FlushInterval + Slack).TotalMilliseconds:F0} ms " +
            $"before the kill (oldest {run.OldestMissingAge.TotalMilliseconds:F0} ms, e.g. {tooOld.FirstOrDefault()?.TrackId})");
        Assert.Empty(run.Duplicates);
    }

    [Fact]
    public async Task CallLog_SigKillUnderLoad_WithLongFlushInterval_LosesEveryAnsweredCall_SoTheBoundCanFail()
    {
        // No batch is written during the run: what the kill loses is what a writer that only flushed on shutdown would
        // lose. The bound above must be violated, or the measurement proves nothing.
        var run = await RunAsync("periodic", TimeSpan.FromMinutes(1));

        Assert.Equal(run.Answered, run.Missing.Count);
        Assert.NotEmpty(run.MissingOlderThan(FlushInterval + Slack));
    }

    [Fact]
    public async Task CallLog_SigKillUnderLoad_Strict_LosesNoAnsweredCall()
    {
        var run = await RunAsync("strict", FlushInterval);

        Assert.True(run.Missing.Count == 0,
            $"{run.Missing.Count} calls answered 200 before the kill have no call-log row (oldest answered {run.OldestMissingAge.TotalMilliseconds:F0} ms " +
            $"before the kill, e.g. {(run.Missing.Count > 0 ? run.Missing[0].TrackId : "")})");
        Assert.Empty(run.Duplicates);
    }

    private async Task<KillRun> RunAsync(string durability, TimeSpan flushInterval)
    {
        await using var provider = await TestHosts.StartProviderAsync();
        var connectionString = await postgres.CreateDatabaseAsync("calllog_kill");
        var cluster = "calllog-kill-" + Guid.NewGuid().ToString("N")[..8];
        var settings = new Dictionary<string, string>
        {
            ["CallLog:Durability"] = durability,
            ["CallLog:FlushInterval"] = flushInterval.ToString("c", CultureInfo.InvariantCulture),
            ["Serilog:MinimumLevel:Default"] = "Warning",
        };

        await using var first = new SiloProcess(connectionString, cluster, settings: settings);
        await first.StartAsync(TestContext.Current.CancellationToken);

        Consumer consumer;
        using (var admin = AdminClient(first))
        {
            consumer = await new AdminApi(admin, provider.Urls.First()).CreateConsumerAsync(balance: 1_000_000, price: 1);
        }

        var callPath = $"/v1/call/{consumer.ServiceId}/verify?number=%2B4915112345678";
        var clock = Stopwatch.StartNew();
        using var load = new CallLoad(first.BaseAddress, consumer.ApiKey, callPath, Loops, CallsPerSecond, clock);
        load.Start();

        // Aim the kill: wait for a batch to land after the warm-up, then kill 90% of an interval later. (With an interval
        // longer than the run no batch lands; the kill then simply comes after the warm-up.)
        await Task.Delay(WarmUp);
        if (flushInterval < WarmUp)
        {
            await using var watch = new NpgsqlConnection(connectionString);
            await watch.OpenAsync();
            var batchSeen = await WaitForBatchAsync(watch, clock, TimeSpan.FromSeconds(3));
            var wait = batchSeen + (flushInterval * 0.9) - clock.Elapsed;
            if (wait > TimeSpan.Zero)
            {
                await Task.Delay(wait);
            }
        }

        load.Stop();
        var killedAt = clock.Elapsed;
        first.Kill();
        var killTook = clock.Elapsed - killedAt;
        var calls = await load.StopAsync();
        Assert.True(first.HasExited, "the killed silo is still running");

        var restart = Stopwatch.StartNew();
        await using var second = new SiloProcess(connectionString, cluster, null, first.SiloPort, first.GatewayPort, first.HttpPort, settings);
        await second.StartAsync(TestContext.Current.CancellationToken);
        var restartTook = restart.Elapsed;

        var answered = calls.Where(call => call.AnsweredOk).OrderBy(call => call.AnsweredAt).ToList();
        var otherStatuses = calls.Where(call => call.Status is { } status && status != HttpStatusCode.OK).Select(call => (int)call.Status!).ToList();
        var unanswered = calls.Count(call => call.Status is null);
        var rows = await CallLogRows.CountAsync(connectionString, calls.Select(call => call.TrackId));
        var missing = answered.Where(call => !rows.ContainsKey(call.TrackId)).ToList();
        var duplicates = await CallLogRows.DuplicatesAsync(connectionString);
        var storedUnanswered = calls.Count(call => call.Status is null && rows.ContainsKey(call.TrackId));

        // What an admin sees on the restarted host: the newest stored call is there once, a lost one is not found.
        using (var admin = AdminClient(second))
        {
            if (answered.LastOrDefault(call => rows.ContainsKey(call.TrackId)) is { } newestStored)
            {
                using var found = await admin.GetAsync($"/admin/calls/{newestStored.TrackId}");
                Assert.Equal(HttpStatusCode.OK, found.StatusCode);
                Assert.Single(JsonDocument.Parse(await found.Content.ReadAsStringAsync()).RootElement.EnumerateArray());
            }

            if (missing.Count > 0)
            {
                using var lost = await admin.GetAsync($"/admin/calls/{missing[0].TrackId}");
                Assert.Equal(HttpStatusCode.NotFound, lost.StatusCode);
            }

            // The restarted grains count exactly what the journal holds: every account, key, quota window and rollup.
            var reconciliation = JsonDocument.Parse(await admin.GetStringAsync("/admin/reconciliation")).RootElement;
            Assert.True(reconciliation.GetProperty("consistent").GetBoolean(), $"reconciliation after the restart: {reconciliation}");
        }

        await second.StopAsync();
        Assert.True(answered.Count > 0, $"no call was answered 200 before the kill; {calls.Count} calls, e.g. {calls.FirstOrDefault()}");

        var run = new KillRun(killedAt, answered.Count, missing, duplicates);
        var loadSeconds = (killedAt - load.StartedAt).TotalSeconds;
        var window = FlushInterval + Slack;
        TestContext.Current.TestOutputHelper?.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"CallLog:Durability={durability}, FlushInterval {flushInterval.TotalMilliseconds:F0} ms; {Loops} loops for {loadSeconds:F2} s: " +
            $"{answered.Count} calls answered 200 ({answered.Count / loadSeconds:F0} calls/s), {unanswered} cut off by the kill " +
            $"({storedUnanswered} of them stored anyway), {otherStatuses.Count} other answers; " +
            $"last answer {(killedAt - answered[^1].AnsweredAt!.Value).TotalMilliseconds:F0} ms before the kill (Kill() took {killTook.TotalMilliseconds:F0} ms). " +
            $"After restart ({restartTook.TotalMilliseconds:F0} ms to ready): {missing.Count} answered calls without a row " +
            $"(oldest answered {run.OldestMissingAge.TotalMilliseconds:F0} ms before the kill; " +
            $"{answered.Count(call => killedAt - call.AnsweredAt!.Value <= window)} calls were answered in the last {window.TotalMilliseconds:F0} ms); " +
            $"{duplicates.Count} TrackIds with two rows."));

        Assert.True(otherStatuses.Count == 0, $"calls answered {string.Join(", ", otherStatuses.Distinct())} during the load");
        Assert.True(unanswered <= Loops, $"{unanswered} calls got no answer; at most one per loop can be in flight at the kill");
        return run;
    }

    /// <summary>Polls the row count until it grows (a batch committed); returns when that was seen.</summary>
    private static async Task<TimeSpan> WaitForBatchAsync(NpgsqlConnection connection, Stopwatch clock, TimeSpan limit)
    {
        var before = await CallLogRows.TotalAsync(connection);
        var deadline = clock.Elapsed + limit;
        while (clock.Elapsed < deadline)
        {
            await Task.Delay(2);
            if (await CallLogRows.TotalAsync(connection) != before)
            {
                return clock.Elapsed;
            }
        }

        Assert.Fail($"no call-log batch was written within {limit.TotalMilliseconds:F0} ms of load");
        return default;
    }

    private static HttpClient AdminClient(SiloProcess silo)
    {
        var client = new HttpClient { BaseAddress = silo.BaseAddress, Timeout = TimeSpan.FromSeconds(10) };
        client.DefaultRequestHeaders.Add("X-Admin-Key", TestHosts.AdminKey);
        return client;
    }

    private sealed record KillRun(TimeSpan KilledAt, int Answered, List<CallAttempt> Missing, List<string> Duplicates)
    {
        /// <summary>Answered calls without a row that were answered longer than <paramref name="age"/> before the kill.</summary>
        public List<CallAttempt> MissingOlderThan(TimeSpan age) => [.. Missing.Where(call => KilledAt - call.AnsweredAt!.Value > age)];

        /// <summary>How long before the kill the oldest answered call without a row was answered.</summary>
        public TimeSpan OldestMissingAge => Missing.Count == 0 ? TimeSpan.Zero : KilledAt - Missing.Min(call => call.AnsweredAt!.Value);
    }
}
