using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Text.Json;
using Marketplace.Silo.Tests.Infrastructure;
using Microsoft.AspNetCore.Builder;

namespace Marketplace.Silo.Tests.Faults;

/// <summary>
/// Three silos (<c>Host:Role=silo</c>) and two separate front doors (<c>Host:Role=frontdoor</c>, Orleans clients of the
/// silos) on one database, before the sample provider; every process with a 2 s hot-path grain-call timeout. Shared by
/// the tests of <see cref="SeparateFrontDoorFaultTests"/>, each of which starts from three active silos.
/// </summary>
public sealed class SeparateFrontDoorClusterFixture(PostgresFixture postgres) : IAsyncLifetime
{
    internal SiloCluster Cluster { get; private set; } = null!;

    internal WebApplication Provider { get; private set; } = null!;

    public async ValueTask InitializeAsync()
    {
        Provider = await TestHosts.StartProviderAsync();
        Cluster = await SiloCluster.StartAsync(postgres, "frontdoors", 3, SeparateFrontDoorFaultTests.WriteBehindInterval,
            new Dictionary<string, string>
            {
                ["HotPath:GrainCallTimeout"] = SeparateFrontDoorFaultTests.GrainCallTimeout.ToString("c", CultureInfo.InvariantCulture),
            },
            frontDoors: 2);
    }

    public async ValueTask DisposeAsync()
    {
        await Cluster.DisposeAsync();
        await Provider.DisposeAsync();
    }
}

/// <summary>
/// "A hung or killed silo costs only the calls in flight on it" (DESIGN §3, promise 7), on real processes: a silo is
/// SIGSTOPped or SIGKILLed while paced calls spread over six keys of one account and three data services arrive
/// through both front doors, then restarted on its ports while the calls go on.
/// </summary>
/// <remarks>
/// Every call carries its own X-Track-Id; the test keeps its status, how long the caller waited and its X-Charged, and
/// afterwards reads the call log and the account. What each test asserts:
/// <list type="bullet">
/// <item>no caller waited longer than the hot-path grain-call timeout (<see cref="GrainCallTimeout"/>) plus
/// <see cref="WaitMargin"/>: a call that needs the failed silo fails in seconds (503), it does not wait for Orleans'
/// 30 s response timeout;</item>
/// <item>every answered call, 200 and 503 alike, has exactly one call-log row (so no TrackId has two), and a call the
/// front door answered with a failure was not charged;</item>
/// <item>the account was charged what the 200s said they charged (X-Charged). After SIGSTOP exactly: the victim holds a
/// service's grain, not the account's, and a settlement that meets the hung silo (as gateway or as host of a key or
/// service grain) is resent, not lost. After SIGKILL exactly too: the victim is the silo with the most key grains, never
/// the account's, and a settlement delivery that met the kill (its gateway connection dropped, its silo went away) is
/// sent again with the same delivery id until answered, and applied once. (What a killed account silo loses, its
/// unwritten state, is <see cref="SiloFailoverTests"/>' subject; the loss window that would bound it is printed.) Charged
/// more than the 200s is a double charge either way.</item>
/// </list>
/// The callers are independent (each call is sent at its time whatever the earlier ones are doing), so a call that hangs
/// holds up nobody else, as with a gateway's many clients. They give up only after <see cref="CallerTimeout"/>, longer
/// than Orleans' default response timeout, so a call that waits for it shows how long it waited.
/// </remarks>
[Collection(PostgresCollection.Name)]
public sealed class SeparateFrontDoorFaultTests(SeparateFrontDoorClusterFixture fixture) : IClassFixture<SeparateFrontDoorClusterFixture>
{
    internal static readonly TimeSpan WriteBehindInterval = TimeSpan.FromSeconds(1);
    internal static readonly TimeSpan GrainCallTimeout = TimeSpan.FromSeconds(2);
    private static readonly TimeSpan WaitMargin = TimeSpan.FromSeconds(1.5);
    private static readonly TimeSpan SettleMargin = TimeSpan.FromMilliseconds(500);
    private static readonly TimeSpan CallerTimeout = TimeSpan.FromSeconds(40);
    private static readonly TimeSpan LoadBeforeFault = TimeSpan.FromSeconds(3);
    private static readonly TimeSpan Hang = TimeSpan.FromSeconds(12);
    private static readonly TimeSpan LoadAfterRestart = TimeSpan.FromSeconds(3);
    private static readonly TimeSpan SuccessWindow = TimeSpan.FromSeconds(2);
    private static readonly TimeSpan CallLogWait = TimeSpan.FromSeconds(20);
    private static readonly TimeSpan SettleWait = TimeSpan.FromSeconds(20);
    private const int Services = 3;
    private const int Keys = 6;
    private const int MaxExtraServices = 8;
    private const long Balance = 100_000_000;
    private const int MaxInFlightPerFrontDoor = 1000;
    private const double CallsPerSecondPerFrontDoor = 40;
    private const string CallSuffix = "/verify?number=%2B4915112345678";

    [Fact]
    public async Task SigStop_OfTheSiloHoldingABusyServicesGrain_OtherCallsKeepSucceeding_NoWaitBeyondTheHotPathTimeout_NothingLost()
    {
        var cluster = await ReadyClusterAsync();

        // The victim holds a service's grain and not the account's (whose loss window is SiloFailoverTests' subject):
        // with the account hung, no key could refill its lease and every call would stop, whatever the front door does.
        var catalog = await CreateCatalogAsync(cluster, serviceAwayFromTheAccount: true);

        var clock = Stopwatch.StartNew();
        var loads = StartLoads(cluster, catalog, clock);
        try
        {
            var hosts = await HostsAsync(cluster, catalog, loads, clock);
            var busy = Enumerable.Range(0, Services).First(service => hosts.Services[service] >= 0 && hosts.Services[service] != hosts.Account);
            var victimSlot = hosts.Services[busy];
            var victim = cluster.Silos[victimSlot];

            // The busy service's route is in both front doors' caches: each has answered a call of it.
            await WaitUntilAsync(clock, LoadBeforeFault, () => loads.All(load =>
                load.Finished().Any(call => call.AnsweredOk && call.Target!.ServiceId == catalog.ServiceIds[busy])));

            var faultAt = clock.Elapsed;
            await victim.PauseAsync();
            var declaredDead = cluster.WaitForStatusAsync(victim.SiloPort, SiloCluster.Dead, clock, Hang + TimeSpan.FromSeconds(10));
            await Task.Delay(Hang);

            // Woken up, it reads that it was declared dead and stops itself (Orleans fails fast: exit code 134).
            var resumedAt = clock.Elapsed;
            await victim.ResumeAsync();
            var exited = await victim.WaitForExitAsync(TimeSpan.FromSeconds(15));
            if (!exited)
            {
                victim.Kill();
            }

            var deadAt = await declaredDead;
            var restart = Stopwatch.StartNew();
            await cluster.ReplaceAsync(victimSlot);
            var restartTook = restart.Elapsed;
            await cluster.WaitForActiveAsync(3, TimeSpan.FromSeconds(30));
            await Task.Delay(LoadAfterRestart);
            var calls = await StopLoadsAsync(loads);

            var run = await MeasureAsync(cluster, catalog, calls, faultAt);
            var windows = SuccessWindows(catalog, calls, faultAt, resumedAt);
            var output = TestContext.Current.TestOutputHelper;
            output?.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"SIGSTOP of silo {victimSlot} for {Hang.TotalSeconds:F0} s: it holds the grain of service {busy} ({catalog.ServiceIds[busy]}); " +
                $"{Placement(hosts, victimSlot)}. Declared dead after {Seconds(deadAt - faultAt)}; after SIGCONT it " +
                $"{(exited ? $"exited with code {victim.ExitCode}" : "was still running after 15 s and was killed")}; the restart took {restartTook.TotalSeconds:F1} s."));
            output?.WriteLine(run.Describe(faultAt));
            output?.WriteLine("200s per service in each 2 s window of the stop: " + string.Join("; ", windows.Select(w =>
                $"{w.ServiceId}: {string.Join(" ", w.OkPerWindow)}")));
            output?.WriteLine($"Problems the processes logged:{Environment.NewLine}{cluster.Problems(20)}");
            output?.WriteLine(run.Summary($"SIGSTOP {Hang.TotalSeconds:F0} s of the silo holding a busy service's grain (3 silos, 2 front doors)"));

            Assert.All(windows, w => Assert.True(w.OkPerWindow.All(ok => ok > 0),
                $"service {w.ServiceId} had no 200 in some 2 s window of the stop: {string.Join(" ", w.OkPerWindow)}"));
            run.AssertNoLongWait();
            run.AssertEveryAnsweredCallHasOneRowAndFailuresAreNotCharged();
            Assert.True(run.Charged == run.OkCharged,
                $"the account was charged {run.Charged}, the 200s say {run.OkCharged}: {run.LostCharges} lost, {run.ChargedTwice} charged twice " +
                $"(settlements reported undelivered: {cluster.UndeliveredSettlements(catalog.AccountId)} calls)");
            var reconciled = await cluster.ReconcileEveryAccountAsync(TimeSpan.FromSeconds(20));
            Assert.True(reconciled.GetProperty("consistent").GetBoolean(), $"accounts differ from the journal: {reconciled}");
        }
        finally
        {
            loads.ForEach(load => load.Dispose());
        }
    }

    [Fact]
    public async Task SigKill_OfASilo_UnderLoadThroughTwoFrontDoors_NoWaitBeyondTheHotPathTimeout_EveryAnsweredCallHasOneRow()
    {
        var cluster = await ReadyClusterAsync();
        var catalog = await CreateCatalogAsync(cluster, serviceAwayFromTheAccount: false);

        var clock = Stopwatch.StartNew();
        var loads = StartLoads(cluster, catalog, clock);
        try
        {
            // Every silo is a gateway of both front doors (a client spreads grains over all gateways). The victim is the
            // one holding the most key grains, the account's silo last.
            var hosts = await HostsAsync(cluster, catalog, loads, clock);
            var victimSlot = Enumerable.Range(0, cluster.Silos.Length)
                .OrderByDescending(slot => slot != hosts.Account)
                .ThenByDescending(slot => hosts.Keys.Count(host => host == slot))
                .First();
            var victim = cluster.Silos[victimSlot];
            await WaitUntilAsync(clock, LoadBeforeFault, () => loads.All(load => load.Finished().Any(call => call.AnsweredOk)));

            var faultAt = clock.Elapsed;
            victim.Kill();
            var deadAt = await cluster.WaitForStatusAsync(victim.SiloPort, SiloCluster.Dead, clock, TimeSpan.FromSeconds(15));
            var restart = Stopwatch.StartNew();
            await cluster.ReplaceAsync(victimSlot);
            var restartTook = restart.Elapsed;
            await cluster.WaitForActiveAsync(3, TimeSpan.FromSeconds(30));
            await Task.Delay(LoadAfterRestart);
            var calls = await StopLoadsAsync(loads);

            var run = await MeasureAsync(cluster, catalog, calls, faultAt);
            var lossWindow = calls.Where(call => call.AnsweredOk
                    && call.AnsweredAt!.Value > faultAt - WriteBehindInterval - SettleMargin && call.AnsweredAt.Value <= faultAt + SettleMargin)
                .Sum(call => call.Charged ?? 0);
            var output = TestContext.Current.TestOutputHelper;
            output?.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"SIGKILL of silo {victimSlot}: {Placement(hosts, victimSlot)}. Declared dead after {Seconds(deadAt - faultAt)}; " +
                $"the restart took {restartTook.TotalSeconds:F1} s."));
            output?.WriteLine(run.Describe(faultAt));
            output?.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"Loss window: {lossWindow} charged by 200s answered from {(WriteBehindInterval + SettleMargin).TotalMilliseconds:F0} ms before the kill " +
                $"to {SettleMargin.TotalMilliseconds:F0} ms after it; settlements reported undelivered: {cluster.UndeliveredSettlements(catalog.AccountId)} calls."));
            output?.WriteLine($"Problems the processes logged:{Environment.NewLine}{cluster.Problems(20)}");
            output?.WriteLine(run.Summary("SIGKILL of a silo holding key grains (3 silos, 2 front doors)"));

            run.AssertNoLongWait();
            run.AssertEveryAnsweredCallHasOneRowAndFailuresAreNotCharged();
            Assert.True(run.ChargedTwice == 0, $"the account was charged {run.Charged}, more than the {run.OkCharged} the 200s say");

            // The account's silo stays up, so no charge may be lost with the killed silo: a settlement delivery that met
            // the kill (its gateway connection dropped, or its silo went away) is sent again until answered, and applied
            // once. The loss window printed above is what a killed account silo could lose (its write-behind interval).
            Assert.True(run.LostCharges == 0,
                $"the account was charged {run.Charged} of the {run.OkCharged} the 200s say: {run.LostCharges} lost (loss window {lossWindow})");
            var reconciled = await cluster.ReconcileEveryAccountAsync(TimeSpan.FromSeconds(20));
            Assert.True(reconciled.GetProperty("consistent").GetBoolean(), $"accounts differ from the journal: {reconciled}");
        }
        finally
        {
            loads.ForEach(load => load.Dispose());
        }
    }

    private async Task<SiloCluster> ReadyClusterAsync()
    {
        var cluster = fixture.Cluster;
        Assert.All(cluster.FrontDoors, door => Assert.False(door.HasExited, "a front door exited"));
        for (var slot = 0; slot < cluster.Silos.Length; slot++)
        {
            if (cluster.Silos[slot].HasExited)
            {
                await cluster.ReplaceAsync(slot);
            }
        }

        await cluster.WaitForActiveAsync(3, TimeSpan.FromSeconds(30));
        return cluster;
    }

    /// <summary>
    /// A provider, <see cref="Services"/> published services on the sample provider (prices 1, 2, 3, ...), one account with a
    /// large balance and <see cref="Keys"/> keys without limits, each entitled to every service.
    /// </summary>
    /// <param name="serviceAwayFromTheAccount">
    /// Make sure some service's grain is on another silo than the account's: while none is, one more service replaces
    /// the first (grains are placed when the admin API creates them).
    /// </param>
    private async Task<Catalog> CreateCatalogAsync(SiloCluster cluster, bool serviceAwayFromTheAccount)
    {
        using var admin = SiloCluster.Admin(cluster.FrontDoors[0]);
        var api = new AdminApi(admin, fixture.Provider.Urls.First());
        var suffix = Guid.NewGuid().ToString("N")[..10];
        var providerId = "prov-" + suffix;
        var accountId = "acct-" + suffix;
        await api.PostOk("/admin/providers", new { id = providerId, name = "Provider " + suffix });
        await api.PostOk("/admin/accounts", new { id = accountId, name = "Consumer " + suffix, currency = "EUR" });
        await api.PostOk($"/admin/accounts/{accountId}/top-ups", new { amount = Balance, reason = "fault test" });

        var services = new List<string>();
        var created = 0;
        async Task AddServiceAsync()
        {
            var serviceId = string.Create(CultureInfo.InvariantCulture, $"svc-{suffix}-{created}");
            created++;
            await api.PostOk("/admin/services", new
            {
                id = serviceId, name = "Service " + serviceId, providerId, upstreamBaseUrl = fixture.Provider.Urls.First().TrimEnd('/') + "/phone",
                pricePerCall = created, currency = "EUR", timeoutMs = 5000, status = "published",
            });
            services.Add(serviceId);
        }

        while (services.Count < Services)
        {
            await AddServiceAsync();
        }

        while (serviceAwayFromTheAccount)
        {
            var hosts = await cluster.HostsAsync(grains =>
                [grains.GetGrain<IAccountGrain>(accountId), .. services.Select(id => grains.GetGrain<IDataServiceGrain>(id))]);
            if (hosts.Skip(1).Any(host => host >= 0 && host != hosts[0]))
            {
                break;
            }

            Assert.True(created < Services + MaxExtraServices,
                $"every one of {created} service grains was placed on the account's silo ({hosts[0]}) or is not active: {string.Join(", ", hosts)}");
            services.RemoveAt(0);
            await AddServiceAsync();
        }

        var keys = new List<(string KeyId, string ApiKey)>();
        for (var i = 0; i < Keys; i++)
        {
            var key = await api.PostOk($"/admin/accounts/{accountId}/keys", new { name = "load-" + i, services });
            keys.Add((key.GetProperty("key").GetProperty("keyId").GetString()!, key.GetProperty("apiKey").GetString()!));
        }

        return new Catalog(accountId, [.. services], [.. keys.Select(key => key.KeyId)], [.. keys.Select(key => key.ApiKey)]);
    }

    // Both front doors call every (key, service) pair in turn.
    private static List<CallLoad> StartLoads(SiloCluster cluster, Catalog catalog, Stopwatch clock)
    {
        var targets = catalog.ServiceIds
            .SelectMany(serviceId => catalog.KeyIds.Select((keyId, k) =>
                new CallTarget(catalog.ApiKeys[k], $"/v1/call/{serviceId}{CallSuffix}", serviceId, keyId)))
            .ToList();
        var loads = cluster.FrontDoors
            .Select(door => new CallLoad(door.BaseAddress, targets, MaxInFlightPerFrontDoor, CallsPerSecondPerFrontDoor, clock, CallerTimeout,
                independentCallers: true))
            .ToList();
        loads.ForEach(load => load.Start());
        return loads;
    }

    private static async Task<List<CallAttempt>> StopLoadsAsync(List<CallLoad> loads) =>
        [.. (await Task.WhenAll(loads.Select(load => load.StopAsync()))).SelectMany(calls => calls)];

    private static async Task<Hosts> HostsAsync(SiloCluster cluster, Catalog catalog, List<CallLoad> loads, Stopwatch clock)
    {
        // Key grains are activated by the first call with the key: wait until every key has been answered once.
        await WaitUntilAsync(clock, TimeSpan.Zero, () => catalog.KeyIds.All(keyId =>
            loads.Any(load => load.Finished().Any(call => call.AnsweredOk && call.Target!.KeyId == keyId))));
        var slots = await cluster.HostsAsync(grains =>
        [
            grains.GetGrain<IAccountGrain>(catalog.AccountId),
            .. catalog.ServiceIds.Select(id => grains.GetGrain<IDataServiceGrain>(id)),
            .. catalog.KeyIds.Select(id => grains.GetGrain<IApiKeyGrain>(id)),
        ]);
        return new Hosts(slots[0], slots[1..(1 + Services)], slots[(1 + Services)..]);
    }

    // Waits until `notBefore` on the clock (the load runs meanwhile), then until the condition holds, for at most 20 s more.
    private static async Task WaitUntilAsync(Stopwatch clock, TimeSpan notBefore, Func<bool> condition)
    {
        if (notBefore > clock.Elapsed)
        {
            await Task.Delay(notBefore - clock.Elapsed);
        }

        var deadline = clock.Elapsed + TimeSpan.FromSeconds(20);
        while (!condition())
        {
            Assert.True(clock.Elapsed < deadline, "the load did not get the answers it needed within 20 s");
            await Task.Delay(50);
        }
    }

    private static List<ServiceWindows> SuccessWindows(Catalog catalog, List<CallAttempt> calls, TimeSpan from, TimeSpan to)
    {
        var windows = (int)Math.Floor((to - from) / SuccessWindow);
        return [.. catalog.ServiceIds.Select(serviceId => new ServiceWindows(serviceId, [.. Enumerable.Range(0, windows).Select(w =>
            calls.Count(call => call.AnsweredOk && call.Target!.ServiceId == serviceId
                && call.AnsweredAt!.Value >= from + (SuccessWindow * w) && call.AnsweredAt.Value < from + (SuccessWindow * (w + 1))))]))];
    }

    private async Task<FaultRun> MeasureAsync(SiloCluster cluster, Catalog catalog, List<CallAttempt> calls, TimeSpan faultAt)
    {
        // The front doors write their call-log rows in batches: wait (bounded) until every answered call has one.
        var answered = calls.Where(call => call.Status is not null).ToList();
        var clock = Stopwatch.StartNew();
        List<CallLogFaultRow> rows;
        while (true)
        {
            rows = await CallLogRows.ReadAsync(cluster.ConnectionString, calls.Select(call => call.TrackId));
            var logged = rows.Select(row => row.TrackId).ToHashSet(StringComparer.Ordinal);
            if (answered.All(call => logged.Contains(call.TrackId)) || clock.Elapsed > CallLogWait)
            {
                break;
            }

            await Task.Delay(100);
        }

        // Settlement is asynchronous and batched: wait (bounded) until the account holds what the 200s say they charged.
        var okCharged = calls.Where(call => call.AnsweredOk).Sum(call => call.Charged ?? 0);
        clock.Restart();
        JsonElement account;
        while (true)
        {
            account = await SiloCluster.GetJsonAsync(cluster.FrontDoors[0], $"/admin/accounts/{catalog.AccountId}");
            if (Balance - account.GetProperty("balance").GetInt64() == okCharged || clock.Elapsed > SettleWait)
            {
                break;
            }

            await Task.Delay(100);
        }

        var charged = Balance - account.GetProperty("balance").GetInt64();
        Assert.Equal(charged, account.GetProperty("totalCharged").GetInt64());
        return new FaultRun(calls, rows, charged, okCharged);
    }

    private static string Placement(Hosts hosts, int victim) => string.Create(CultureInfo.InvariantCulture,
        $"account grain on silo {hosts.Account}, service grains on {string.Join("/", hosts.Services)}, key grains on {string.Join("/", hosts.Keys)} " +
        $"({hosts.Keys.Count(host => host == victim)} of {Keys} keys on the victim)");

    private static string Seconds(TimeSpan? time) =>
        time is { } t ? t.TotalSeconds.ToString("F2", CultureInfo.InvariantCulture) + " s" : "never (within the bound)";

    private sealed record Catalog(string AccountId, string[] ServiceIds, string[] KeyIds, string[] ApiKeys);

    /// <summary>The silo slot of each grain (-1: not active).</summary>
    private sealed record Hosts(int Account, int[] Services, int[] Keys);

    private sealed record ServiceWindows(string ServiceId, int[] OkPerWindow);

    /// <summary>What a run's calls, their call-log rows and the account say.</summary>
    private sealed class FaultRun(List<CallAttempt> calls, List<CallLogFaultRow> rows, long charged, long okCharged)
    {
        private readonly Dictionary<string, List<CallLogFaultRow>> _rowsByTrackId = rows
            .GroupBy(row => row.TrackId, StringComparer.Ordinal)
            .ToDictionary(group => group.Key, group => group.ToList(), StringComparer.Ordinal);

        public List<CallAttempt> Calls { get; } = calls;

        /// <summary>What the account was charged during the run (balance before minus after).</summary>
        public long Charged { get; } = charged;

        /// <summary>What the 200s said they charged (X-Charged).</summary>
        public long OkCharged { get; } = okCharged;

        public long LostCharges => Math.Max(0, OkCharged - Charged);

        public long ChargedTwice => Math.Max(0, Charged - OkCharged);

        public List<CallAttempt> Failed => [.. Calls.Where(call => !call.AnsweredOk)];

        public List<CallAttempt> Answered => [.. Calls.Where(call => call.Status is not null)];

        public CallAttempt Longest => Calls.MaxBy(call => call.Waited)!;

        public List<CallAttempt> AnsweredWithoutRow => [.. Answered.Where(call => !_rowsByTrackId.ContainsKey(call.TrackId))];

        public List<string> TrackIdsWithTwoRows => [.. _rowsByTrackId.Where(pair => pair.Value.Count > 1).Select(pair => $"{pair.Key} x{pair.Value.Count}")];

        /// <summary>Answered failures that say they charged, or whose row does.</summary>
        public List<CallAttempt> FailuresCharged => [.. Answered.Where(call => !call.AnsweredOk
            && ((call.Charged ?? 0) != 0 || (_rowsByTrackId.TryGetValue(call.TrackId, out var r) && r.Any(row => row.Charged != 0))))];

        /// <summary>200s whose row does not hold the charge the answer's X-Charged said.</summary>
        public List<CallAttempt> RowsDisagreeingWithTheAnswer => [.. Calls.Where(call => call.AnsweredOk
            && _rowsByTrackId.TryGetValue(call.TrackId, out var r) && r.Any(row => row.Charged != (call.Charged ?? -1)))];

        /// <summary>Answered failures without Retry-After (a 503) or whose X-Track-Id is not the one sent.</summary>
        public List<CallAttempt> FailuresWithoutHeaders => [.. Answered.Where(call => !call.AnsweredOk
            && ((call.Status == HttpStatusCode.ServiceUnavailable && call.RetryAfter is null) || call.EchoedTrackId != call.TrackId))];

        public void AssertNoLongWait()
        {
            var bound = GrainCallTimeout + WaitMargin;
            Assert.True(Longest.Waited <= bound, string.Create(CultureInfo.InvariantCulture,
                $"a caller waited {Longest.Waited.TotalSeconds:F2} s (bound {bound.TotalSeconds:F1} s): {Show(Longest)}; " +
                $"{Calls.Count(call => call.Waited > bound)} calls waited longer than the bound"));
        }

        public void AssertEveryAnsweredCallHasOneRowAndFailuresAreNotCharged()
        {
            Assert.True(AnsweredWithoutRow.Count == 0,
                $"{AnsweredWithoutRow.Count} answered calls have no call-log row, e.g. {string.Join("; ", AnsweredWithoutRow.Take(3).Select(Show))}");
            Assert.True(TrackIdsWithTwoRows.Count == 0, $"TrackIds with more than one row: {string.Join(", ", TrackIdsWithTwoRows.Take(10))}");
            Assert.True(RowsDisagreeingWithTheAnswer.Count == 0, $"{RowsDisagreeingWithTheAnswer.Count} 200s have a row with another charge than their X-Charged, " +
                $"e.g. {string.Join("; ", RowsDisagreeingWithTheAnswer.Take(3).Select(Show))}");
            Assert.True(FailuresCharged.Count == 0, $"{FailuresCharged.Count} failed calls were charged, e.g. {string.Join("; ", FailuresCharged.Take(3).Select(Show))}");
            Assert.True(FailuresWithoutHeaders.Count == 0,
                $"{FailuresWithoutHeaders.Count} failed answers lack Retry-After or their X-Track-Id, e.g. {string.Join("; ", FailuresWithoutHeaders.Take(3).Select(Show))}");
        }

        public string Describe(TimeSpan faultAt)
        {
            var failed = Failed;
            var rowsOfFailures = failed.SelectMany(call => _rowsByTrackId.GetValueOrDefault(call.TrackId) ?? []).ToList();
            var lastFailure = failed.Count == 0 ? (TimeSpan?)null : failed.Max(call => call.EndedAt) - faultAt;
            return string.Create(CultureInfo.InvariantCulture,
                $"{Calls.Count} calls ({Calls.Count(call => call.SentAt >= faultAt)} sent after the fault): {Calls.Count(call => call.AnsweredOk)} answered 200, " +
                $"{failed.Count} failed ({Statuses(failed)}); last failure ended {(lastFailure is { } l ? $"{l.TotalSeconds:F2} s" : "-")} after the fault. " +
                $"Longest wait {Longest.Waited.TotalSeconds:F2} s ({Show(Longest)}); waits over {(GrainCallTimeout + WaitMargin).TotalSeconds:F1} s: " +
                $"{Calls.Count(call => call.Waited > GrainCallTimeout + WaitMargin)}, over 10 s: {Calls.Count(call => call.Waited > TimeSpan.FromSeconds(10))}. " +
                $"Call log: {AnsweredWithoutRow.Count} of {Answered.Count} answered calls without a row ({Statuses(AnsweredWithoutRow)}), " +
                $"{TrackIdsWithTwoRows.Count} TrackIds with two rows, {RowsDisagreeingWithTheAnswer.Count} rows of 200s with another charge; rows of failures by outcome: " +
                $"{string.Join(", ", rowsOfFailures.GroupBy(row => row.Outcome + (row.Rejection is null ? string.Empty : "/" + row.Rejection)).Select(g => $"{g.Key} x{g.Count()}"))}. " +
                $"Charges: 200s say {OkCharged}, the account holds {Charged}: lost {LostCharges}, charged twice {ChargedTwice}; failures charged {FailuresCharged.Count}. " +
                $"Failure answers: {string.Join(" | ", failed.GroupBy(Reason).OrderByDescending(g => g.Count()).Take(4).Select(g => $"x{g.Count()} {g.Key}"))}");
        }

        /// <summary>One line for the README's fault table.</summary>
        public string Summary(string fault) => string.Create(CultureInfo.InvariantCulture,
            $"| {fault} | {Failed.Count:N0} of {Calls.Count:N0} calls failed ({Statuses(Failed)}) | max wait {Longest.Waited.TotalSeconds:F2} s | " +
            $"charges lost {LostCharges} | charged twice {ChargedTwice} (TrackIds with two rows {TrackIdsWithTwoRows.Count}) |");

        // A problem+json's title (its detail and ids differ from call to call), else what the caller saw.
        private static string Reason(CallAttempt call)
        {
            if (call.Problem is { } problem)
            {
                try
                {
                    using var json = JsonDocument.Parse(problem);
                    return json.RootElement.TryGetProperty("title", out var title) ? $"{(int)call.Status!} {title.GetString()}" : problem;
                }
                catch (JsonException)
                {
                    return problem;
                }
            }

            return call.Error ?? string.Empty;
        }

        private static string Statuses(IEnumerable<CallAttempt> calls)
        {
            var groups = calls.GroupBy(call => call.Status is { } s ? ((int)s).ToString(CultureInfo.InvariantCulture) : "no answer")
                .Select(g => $"{g.Key} x{g.Count()}").ToList();
            return groups.Count == 0 ? "none" : string.Join(", ", groups);
        }

        private static string Show(CallAttempt call) => string.Create(CultureInfo.InvariantCulture,
            $"{call.TrackId} {call.Target?.ServiceId}/{call.Target?.KeyId} via {call.FrontDoor?.Port} sent at {call.SentAt.TotalSeconds:F2} s, " +
            $"{(call.Status is { } s ? ((int)s).ToString(CultureInfo.InvariantCulture) : call.Error)} after {call.Waited.TotalSeconds:F2} s");
    }
}
