using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Text.Json;
using Marketplace.Silo.Tests.Infrastructure;

namespace Marketplace.Silo.Tests.Faults;

/// <summary>
/// A rolling upgrade of three real host processes under load: one at a time, its front door is taken out of the load,
/// it gets SIGTERM, exits, and starts again on the same ports; the load then comes back to it.
/// </summary>
/// <remarks>
/// The write-behind interval and the call log's flush interval are one minute, longer than the test: no timer writes
/// anything while it runs, so every grain state and call-log row that is in the database at the end was written by a
/// graceful shutdown. At the end all three get SIGTERM together, a fresh process starts, and the account, key and
/// service must hold exactly what the live cluster held before, and the call log one row for each call answered.
/// <para>The rolling restart itself may fail the calls in flight to the stopping silo's grains (an admission sent
/// to a key grain there fails with SiloUnavailableException, answered 503), at most one per loop still in the load per
/// restart; it must count none twice and lose none. Two causes of loss were found and fixed while this was written: a
/// stopping silo dropped the one-way settlement batches other front doors sent to its grains (batches are now answered,
/// and resent when refused), and Orleans' grain directory, only eventually consistent while silos leave and join, ran a
/// second activation of an account whose write then failed its version check (writes now merge). What remains: a batch
/// whose silo went away with it (SiloUnavailableException) may or may not have been applied, so it is reported and not
/// resent; losses are allowed only up to what the processes reported that way.</para>
/// </remarks>
[Collection(PostgresCollection.Name)]
public sealed class RollingUpgradeTests(PostgresFixture postgres)
{
    private const long Balance = 1_000_000;
    private const int LoopsPerFrontDoor = 3;
    private const double CallsPerSecondPerFrontDoor = 40;
    private static readonly TimeSpan LongInterval = TimeSpan.FromMinutes(1);
    private static readonly TimeSpan LoadBetweenRestarts = TimeSpan.FromSeconds(1.5);

    [Fact]
    public async Task RollingRestart_BySigTerm_UnderLoad_OnlyInFlightCallsFail_NoneLostOrChargedTwice_AndShutdownWritesEveryGrainAndTheCallLog()
    {
        await using var provider = await TestHosts.StartProviderAsync();
        var settings = new Dictionary<string, string>
        {
            ["CallLog:FlushInterval"] = LongInterval.ToString("c", CultureInfo.InvariantCulture),
        };
        await using var cluster = await SiloCluster.StartAsync(postgres, "rolling", 3, LongInterval, settings);

        Consumer consumer;
        using (var admin = cluster.Admin(0))
        {
            consumer = await new AdminApi(admin, provider.Urls.First()).CreateConsumerAsync(balance: Balance, price: 1);
        }

        var callPath = $"/v1/call/{consumer.ServiceId}/verify?number=%2B4915112345678";
        var clock = Stopwatch.StartNew();
        var calls = new List<CallAttempt>();
        var loads = new CallLoad?[3];
        var restarts = new List<string>();
        try
        {
            for (var slot = 0; slot < 3; slot++)
            {
                loads[slot] = StartLoad(cluster, slot, consumer, callPath, clock);
            }

            await Task.Delay(LoadBetweenRestarts);
            for (var slot = 0; slot < 3; slot++)
            {
                // Out of the load first (a load balancer's drain): its callers stop and their calls in flight finish.
                calls.AddRange(await loads[slot]!.StopAsync());
                loads[slot]!.Dispose();
                loads[slot] = null;

                var silo = cluster.Silos[slot];
                var stop = Stopwatch.StartNew();
                await silo.StopAsync(TimeSpan.FromSeconds(60));
                var stopTook = stop.Elapsed;
                Assert.True(silo.ExitCode == 0, $"silo {slot} exited with code {silo.ExitCode} after SIGTERM:\n{silo.Output}");

                var start = Stopwatch.StartNew();
                await cluster.ReplaceAsync(slot);
                var readyTook = start.Elapsed;
                await cluster.WaitForActiveAsync(3, TimeSpan.FromSeconds(30));
                restarts.Add(string.Create(CultureInfo.InvariantCulture,
                    $"silo {slot}: exit {stopTook.TotalSeconds:F1} s, ready {readyTook.TotalSeconds:F1} s, active {start.Elapsed.TotalSeconds:F1} s"));

                loads[slot] = StartLoad(cluster, slot, consumer, callPath, clock);
                await Task.Delay(LoadBetweenRestarts);
            }

            for (var slot = 0; slot < 3; slot++)
            {
                calls.AddRange(await loads[slot]!.StopAsync());
            }
        }
        finally
        {
            foreach (var load in loads)
            {
                load?.Dispose();
            }
        }

        var ok = calls.Where(call => call.AnsweredOk).ToList();
        var failed = calls.Where(call => !call.AnsweredOk).ToList();

        // Settled everywhere: the batchers have sent every outcome and no reservation is open.
        var liveAccount = await WaitForSettledAsync(cluster, consumer.AccountId, ok.Count);
        var liveKeyCalls = (await cluster.GetJsonAsync(0, $"/admin/keys/{consumer.KeyId}")).GetProperty("usage").GetProperty("calls").GetInt64();
        var liveServiceCalls = (await cluster.GetJsonAsync(0, $"/admin/services/{consumer.ServiceId}")).GetProperty("counters").GetProperty("calls").GetInt64();
        var liveCharged = liveAccount.GetProperty("totalCharged").GetInt64();

        // Everything down by SIGTERM at once, then a fresh process reads what the shutdowns wrote.
        var shutdown = Stopwatch.StartNew();
        await Task.WhenAll(cluster.Silos.Select(silo => silo.StopAsync(TimeSpan.FromSeconds(60))));
        var shutdownTook = shutdown.Elapsed;
        Assert.All(cluster.Silos, silo => Assert.Equal(0, silo.ExitCode));
        await cluster.ReplaceAsync(0);

        var account = await cluster.GetJsonAsync(0, $"/admin/accounts/{consumer.AccountId}");
        var key = await cluster.GetJsonAsync(0, $"/admin/keys/{consumer.KeyId}");
        var service = await cluster.GetJsonAsync(0, $"/admin/services/{consumer.ServiceId}");
        var rows = await CallLogRows.CountAsync(cluster.ConnectionString, calls.Select(call => call.TrackId));
        var duplicates = await CallLogRows.DuplicatesAsync(cluster.ConnectionString);
        var okWithoutRow = ok.Count(call => !rows.ContainsKey(call.TrackId));
        var charged = account.GetProperty("totalCharged").GetInt64();

        TestContext.Current.TestOutputHelper?.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"Rolling restart by SIGTERM under {3 * CallsPerSecondPerFrontDoor} calls/s ({string.Join("; ", restarts)}); final SIGTERM of all three took {shutdownTook.TotalSeconds:F1} s. " +
            $"{calls.Count} calls: {ok.Count} answered 200, {failed.Count} failed " +
            $"({string.Join(", ", failed.GroupBy(call => call.Status is { } s ? ((int)s).ToString(CultureInfo.InvariantCulture) : call.Error ?? "none").Select(g => $"{g.Key} x{g.Count()}"))}). " +
            $"Live before the final shutdown: account charged {liveCharged}, key calls {liveKeyCalls}, service calls {liveServiceCalls}. " +
            $"After restart from the database (write-behind and call-log flush 1 min): account charged {charged}, balance {account.GetProperty("balance").GetInt64()}, " +
            $"key calls {key.GetProperty("usage").GetProperty("calls").GetInt64()}, service calls {service.GetProperty("counters").GetProperty("calls").GetInt64()}; call-log rows {rows.Count} ({okWithoutRow} answered calls without one, {duplicates.Count} duplicated)."));

        TestContext.Current.TestOutputHelper?.WriteLine("Warnings and errors of the processes:\n" + cluster.Problems());
        // What the database holds after the final shutdown is the truth: every figure was written by a graceful shutdown
        // (the intervals are longer than the test), merged with a duplicate activation's when there was one. The values
        // read live before the final shutdown are printed only: while two activations of a grain run, a read sees one.
        var storedCharged = charged;
        var storedKeyCalls = key.GetProperty("usage").GetProperty("calls").GetInt64();
        var storedServiceCalls = service.GetProperty("counters").GetProperty("calls").GetInt64();

        // 1. Graceful shutdown writes everything: the account is consistent, and the call log (flushed only by the
        //    shutdowns) has one row for every call answered.
        Assert.Equal(Balance - storedCharged, account.GetProperty("balance").GetInt64());
        Assert.Equal(storedCharged, account.GetProperty("usage").GetProperty("calls").GetInt64());
        Assert.Equal(0, okWithoutRow);
        Assert.Empty(duplicates);

        // 2. Failures only among the calls in flight to the stopping silo's grains when it went: at most one per loop of
        //    the doors still in the load, per restart (the stopped silo's own door was drained before SIGTERM).
        var inFlightBound = 3 * 2 * LoopsPerFrontDoor;
        Assert.True(failed.Count <= inFlightBound, $"{failed.Count} calls failed during the rolling restart (bound {inFlightBound}), e.g. {failed.FirstOrDefault()}");

        // 3. Nothing charged or counted twice by the rolling restart (a call whose answer failed may have been charged).
        Assert.True(storedCharged <= ok.Count + failed.Count, $"the account holds {storedCharged} charges for {ok.Count} answered calls (+{failed.Count} failed)");
        Assert.True(storedKeyCalls <= ok.Count + failed.Count, $"the key counted {storedKeyCalls} calls for {ok.Count} answered (+{failed.Count} failed)");
        Assert.True(storedServiceCalls <= ok.Count + failed.Count, $"the service counted {storedServiceCalls} calls for {ok.Count} answered (+{failed.Count} failed)");

        // 4. Nothing lost by the rolling restart, except calls whose settlement a front door reported as not delivered:
        //    the silo holding the grain went away with the batch (SiloUnavailableException), which it may have applied,
        //    so it is not resent (that could charge twice). Batches a stopping silo refused are resent; a duplicate
        //    activation's write is merged. Each loss must lie within what was reported undelivered.
        var lostCharges = ok.Count - storedCharged;
        var lostKeyCalls = ok.Count - storedKeyCalls;
        var lostServiceCalls = ok.Count - storedServiceCalls;
        var undeliveredAccount = cluster.UndeliveredSettlements(consumer.AccountId);
        var undeliveredKey = cluster.UndeliveredSettlements(consumer.KeyId);
        var undeliveredService = cluster.UndeliveredSettlements(consumer.ServiceId);
        TestContext.Current.TestOutputHelper?.WriteLine(FormattableString.Invariant(
            $"Lost by the rolling restart: {lostCharges} charges, {lostKeyCalls} key and {lostServiceCalls} service counts of {ok.Count} answered calls; reported undelivered: {undeliveredAccount} account, {undeliveredKey} key, {undeliveredService} service."));
        Assert.True(lostCharges <= undeliveredAccount, $"{lostCharges} charges lost, {undeliveredAccount} reported undelivered");
        Assert.True(lostKeyCalls <= undeliveredKey, $"{lostKeyCalls} key counts lost, {undeliveredKey} reported undelivered");
        Assert.True(lostServiceCalls <= undeliveredService, $"{lostServiceCalls} service counts lost, {undeliveredService} reported undelivered");

        // 5. Every account agrees with the journal once the restarted grains have read their totals back.
        var reconciled = await cluster.ReconcileEveryAccountAsync(TimeSpan.FromSeconds(20));
        Assert.True(reconciled.GetProperty("consistent").GetBoolean(), $"accounts differ from the journal: {reconciled}");
    }

    private static CallLoad StartLoad(SiloCluster cluster, int slot, Consumer consumer, string callPath, Stopwatch clock)
    {
        var load = new CallLoad(cluster.Silos[slot].BaseAddress, consumer.ApiKey, callPath, LoopsPerFrontDoor, CallsPerSecondPerFrontDoor, clock);
        load.Start();
        return load;
    }

    /// <summary>
    /// Waits (bounded) until the account holds every answered call and no reservation is open; settlement is batched. (An
    /// account that moved withholds what its old activation may have held until its reservation timeout: not a reservation.)
    /// </summary>
    private static async Task<JsonElement> WaitForSettledAsync(SiloCluster cluster, string accountId, int answered)
    {
        var deadline = Stopwatch.StartNew();
        while (true)
        {
            var account = await cluster.GetJsonAsync(0, $"/admin/accounts/{accountId}");
            if ((account.GetProperty("totalCharged").GetInt64() >= answered && account.GetProperty("reserved").GetInt64() == account.GetProperty("withheld").GetInt64())
                || deadline.Elapsed > TimeSpan.FromSeconds(20))
            {
                return account;
            }

            await Task.Delay(100);
        }
    }
}
