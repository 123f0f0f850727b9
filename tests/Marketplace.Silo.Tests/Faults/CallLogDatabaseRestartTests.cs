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

namespace Marketplace.Silo.Tests.Faults;

/// <summary>
/// PostgreSQL stops for a few seconds under load and comes back: calls keep being served (admission and settlement live
/// in grain memory), the call log holds the records in its queue and retries the failed batch until it is stored, so in
/// the end every answered call has exactly one row; readiness reports the outage while it lasts.
/// </summary>
/// <remarks>
/// The database is a PostgreSQL server of the test's own (stopping the shared one would break every other test), on a
/// fixed port so that it comes back where the host's connection strings point. Grain-state writes (write-behind) fail
/// during the outage too and are retried; this test is about the call log.
/// </remarks>
[Collection(PostgresCollection.Name)]
public sealed class CallLogDatabaseRestartTests
{
    private const int Loops = 6;
    private const double CallsPerSecond = 240;
    private static readonly TimeSpan FlushInterval = TimeSpan.FromMilliseconds(200);
    private static readonly TimeSpan LoadBefore = TimeSpan.FromSeconds(1.5);
    private static readonly TimeSpan Outage = TimeSpan.FromSeconds(5);
    private static readonly TimeSpan LoadAfter = TimeSpan.FromSeconds(2.5);
    private static readonly TimeSpan RecoveryDeadline = TimeSpan.FromSeconds(12);
    private static readonly TimeSpan TailDeadline = TimeSpan.FromSeconds(5);
    private static readonly TimeSpan HealthPollInterval = TimeSpan.FromMilliseconds(250);

    [Fact]
    public async Task CallLog_DatabaseRestartUnderLoad_LosesNoRowAndDuplicatesNone()
    {
        var root = Path.Combine(Path.GetTempPath(), "marketplace-dbrestart-" + Guid.NewGuid().ToString("N")[..12]);
        var database = new EmbeddedPostgres(
            new EmbeddedPostgresOptions { DataDirectory = Path.Combine(root, "data"), Port = Ports.Free() },
            NullLogger<EmbeddedPostgres>.Instance);
        try
        {
            await database.StartAsync(TestContext.Current.CancellationToken);
            await RunAsync(database);
        }
        finally
        {
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

    private static async Task RunAsync(EmbeddedPostgres database)
    {
        var connectionString = database.ConnectionString;
        await using var provider = await TestHosts.StartProviderAsync();
        await using var host = await TestHosts.StartMarketplaceAsync(connectionString, "dbrestart-" + Guid.NewGuid().ToString("N")[..8],
            new Dictionary<string, string?> { ["CallLog:FlushInterval"] = FlushInterval.ToString("c", CultureInfo.InvariantCulture) });
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

        // The outage: from the moment the server is down until it accepts connections again.
        await database.StopAsync();
        var downAt = clock.Elapsed;
        var outage = await WatchOutageAsync(admin, writer, loops, clock, downAt + Outage);
        await database.StartAsync();
        var upAt = clock.Elapsed;

        // Recovery, under continued load: when the rows of every call answered so far are stored (the writer retries the
        // failed batch with a back-off of up to 5 s) and when the host reports ready again.
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

        // The last calls' rows land within a flush interval or so.
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
        var reconciliation = await admin.GetFromJsonAsync<JsonElement>($"/admin/reconciliation/accounts/{consumer.AccountId}");

        var missing = answered.Where(call => !rows.ContainsKey(call.TrackId)).ToList();
        var twice = answered.Where(call => rows.GetValueOrDefault(call.TrackId) > 1).ToList();
        var other = calls.Where(call => !call.AnsweredOk).ToList();
        var duringOutage = answered.Count(call => call.AnsweredAt >= downAt && call.AnsweredAt < upAt);
        var beforeOutage = answered.Count(call => call.AnsweredAt < downAt);
        var outageSeconds = (upAt - downAt).TotalSeconds;
        TestContext.Current.TestOutputHelper?.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"{Loops} loops, {answered.Count} calls answered 200 in {(loadStoppedAt - load.StartedAt).TotalSeconds:F1} s, {other.Count} other outcomes" +
            $"{(other.Count > 0 ? " (" + string.Join(", ", other.Select(call => call.Status?.ToString() ?? call.Error).Distinct().Take(3)) + ")" : "")}. " +
            $"PostgreSQL down for {outageSeconds:F1} s (stop to accepting connections again): {duringOutage} calls answered meanwhile " +
            $"({duringOutage / outageSeconds:F0} calls/s, {beforeOutage / (downAt - load.StartedAt).TotalSeconds:F0} calls/s before); " +
            $"call-log queue up to {outage.MaxQueue} records; /health/ready during the outage: {outage.Describe()}. " +
            $"The backlog of {backlog.Count} answered calls was stored {Since(drainedAt, upAt)} after PostgreSQL was back; ready again {Since(readyAt, upAt)} after. " +
            $"{missing.Count} answered calls without a row, {twice.Count} with two, {duplicates.Count} TrackIds with two rows in the table; " +
            $"reconciliation: {reconciliation}"));

        Assert.True(missing.Count == 0, $"{missing.Count} answered calls have no call-log row after recovery, e.g. {missing.FirstOrDefault()?.TrackId}");
        Assert.True(drainedAt is not null, $"the backlog was not stored within {RecoveryDeadline.TotalSeconds:F0} s after PostgreSQL was back");
        Assert.Empty(twice);
        Assert.Empty(duplicates);
        Assert.True(other.Count == 0, $"{other.Count} calls were not answered 200, e.g. {other.FirstOrDefault()}");
        Assert.True(duringOutage > 0, "no call was answered while PostgreSQL was down: admission should not need the database");
        Assert.True(outage.NotReady > 0, $"/health/ready never reported the outage: {outage.Describe()}");
        Assert.True(outage.CallLogProblem is not null, "the call-log loop never reported a failed cycle during the outage");
        Assert.True(readyAt is not null, $"/health/ready did not report ready again within {RecoveryDeadline.TotalSeconds:F0} s after PostgreSQL was back");
        Assert.True(reconciliation.GetProperty("consistent").GetBoolean(), $"call log and account disagree after the outage: {reconciliation}");
    }

    /// <summary>Polls readiness, the call-log loop's status and the queue until <paramref name="until"/>.</summary>
    private static async Task<OutageWatch> WatchOutageAsync(HttpClient admin, CallLogWriter writer, BackgroundLoops loops, Stopwatch clock, TimeSpan until)
    {
        var watch = new OutageWatch();
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

            watch.CallLogProblem ??= loops.Snapshot().FirstOrDefault(loop => loop.Name == "call-log")?.Problem;
            watch.MaxQueue = Math.Max(watch.MaxQueue, writer.QueueLength);
            var wait = TimeSpan.FromTicks(Math.Min(HealthPollInterval.Ticks, (until - clock.Elapsed).Ticks));
            if (wait > TimeSpan.Zero)
            {
                await Task.Delay(wait);
            }
        }

        return watch;
    }

    private static async Task<HttpStatusCode> ReadyAsync(HttpClient client)
    {
        using var response = await client.GetAsync("/health/ready");
        return response.StatusCode;
    }

    private static string Since(TimeSpan? at, TimeSpan since) =>
        at is { } value ? ((value - since).TotalSeconds.ToString("F1", CultureInfo.InvariantCulture) + " s") : "never (within the deadline)";

    private sealed class OutageWatch
    {
        public int Ready { get; set; }

        public int NotReady { get; set; }

        public string? CallLogProblem { get; set; }

        public int MaxQueue { get; set; }

        public string Describe() => string.Create(CultureInfo.InvariantCulture,
            $"{NotReady} polls not ready, {Ready} ready; call-log loop: {CallLogProblem ?? "no problem reported"}");
    }
}
