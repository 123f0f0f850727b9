using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Text.Json;

namespace Marketplace.Silo.Tests.Faults;

/// <summary>
/// One run of a failover test on the three silos of a <see cref="FailoverClusterFixture"/>: paced loads on the front doors
/// of the two silos that survive, a SIGKILL or SIGSTOP of the third (the one hosting the grain the test watches) and, once
/// the load stops, the calls it made. Shared by <see cref="SiloFailoverTests"/> (the key grain's silo) and
/// <see cref="AccountFailoverTests"/> (the account grain's silo).
/// </summary>
internal sealed class SiloFaultRun : IDisposable
{
    private readonly SiloCluster _cluster;
    private readonly List<CallLoad> _loads;

    /// <param name="cluster">The cluster, every silo active.</param>
    /// <param name="victimSlot">The silo the fault goes to.</param>
    /// <param name="paused">SIGSTOP (hung) rather than SIGKILL.</param>
    /// <param name="load">The load on the front door of the <c>n</c>th survivor, timed on the run's clock.</param>
    public SiloFaultRun(SiloCluster cluster, int victimSlot, bool paused, Func<Uri, int, Stopwatch, CallLoad> load)
    {
        _cluster = cluster;
        VictimSlot = victimSlot;
        Paused = paused;
        Survivors = [.. Enumerable.Range(0, cluster.Silos.Length).Where(slot => slot != victimSlot)];
        _loads = [.. Survivors.Select((slot, n) => load(cluster.Silos[slot].BaseAddress, n, Clock))];
    }

    /// <summary>The clock calls and the fault are timed on.</summary>
    public Stopwatch Clock { get; } = Stopwatch.StartNew();

    public int VictimSlot { get; }

    /// <summary>The slots whose front doors carry the load.</summary>
    public int[] Survivors { get; }

    public bool Paused { get; }

    public string Fault => Paused ? "SIGSTOP" : "SIGKILL";

    /// <summary>When the signal was sent.</summary>
    public TimeSpan FaultAt { get; private set; }

    /// <summary>When the membership table first showed the victim dead; null when it did not within 40 s.</summary>
    public TimeSpan? DeadAt { get; private set; }

    /// <summary>
    /// Replaces the silos an earlier run left dead (on the same ports) and waits until all three are active, so every run
    /// starts from a whole cluster.
    /// </summary>
    public static async Task ReadyAsync(SiloCluster cluster)
    {
        for (var slot = 0; slot < cluster.Silos.Length; slot++)
        {
            if (cluster.Silos[slot].HasExited)
            {
                await cluster.ReplaceAsync(slot);
            }
        }

        await cluster.WaitForActiveAsync(cluster.Silos.Length, TimeSpan.FromSeconds(30));
    }

    /// <summary>One call through each silo's front door, so the grains the call needs are active before their host is looked up.</summary>
    /// <returns>How many calls were made (all answered 200).</returns>
    public static async Task<int> WarmUpAsync(SiloCluster cluster, string apiKey, string callPath)
    {
        foreach (var silo in cluster.Silos)
        {
            using var client = new HttpClient { BaseAddress = silo.BaseAddress };
            client.DefaultRequestHeaders.Add("X-Api-Key", apiKey);
            using var warmUp = await client.GetAsync(callPath);
            Assert.Equal(HttpStatusCode.OK, warmUp.StatusCode);
        }

        return cluster.Silos.Length;
    }

    public void Start() => _loads.ForEach(load => load.Start());

    /// <summary>Sends the signal to the victim and waits until the survivors declare it dead.</summary>
    public async Task StrikeAsync()
    {
        var victim = _cluster.Silos[VictimSlot];
        FaultAt = Clock.Elapsed;
        if (Paused)
        {
            await victim.PauseAsync();
        }
        else
        {
            victim.Kill();
        }

        DeadAt = await _cluster.WaitForStatusAsync(victim.SiloPort, SiloCluster.Dead, Clock, TimeSpan.FromSeconds(40));
    }

    /// <summary>Calls finished so far that match <paramref name="predicate"/>.</summary>
    public int Count(Func<CallAttempt, bool> predicate) => _loads.Sum(load => load.Finished().Count(predicate));

    /// <summary>Keeps the load going until <paramref name="done"/> holds, or <paramref name="limit"/> passed.</summary>
    public async Task LoadUntilAsync(Func<bool> done, TimeSpan limit)
    {
        var until = Clock.Elapsed + limit;
        while (Clock.Elapsed < until && !done())
        {
            await Task.Delay(50);
        }
    }

    /// <summary>Stops the load and returns every call; a hung victim is woken (and killed if it does not then stop itself).</summary>
    public async Task<List<CallAttempt>> StopAsync()
    {
        var calls = (await Task.WhenAll(_loads.Select(load => load.StopAsync()))).SelectMany(c => c).ToList();
        if (Paused)
        {
            // Woken up, it learns it was declared dead and stops itself; killed if not, so nothing is left behind.
            var victim = _cluster.Silos[VictimSlot];
            await victim.ResumeAsync();
            if (!await victim.WaitForExitAsync(TimeSpan.FromSeconds(15)))
            {
                victim.Kill();
            }
        }

        return calls;
    }

    /// <summary>
    /// Waits (20 s at most) until the survivors' journal writers hold nothing unwritten, the account holds no reservation and its
    /// log holds at least <paramref name="logCalls"/> calls: settlement is asynchronous and batched. Returns the account and the
    /// last reconciliation read (not "consistent": after a fault the log holds the calls whose charges the failed silo had not
    /// written until the grains catch up).
    /// </summary>
    public async Task<(JsonElement Account, JsonElement Reconciliation)> SettledAccountAsync(string accountId, long logCalls)
    {
        JsonElement account = default, reconciliation = default;
        var deadline = Stopwatch.StartNew();
        while (deadline.Elapsed < TimeSpan.FromSeconds(20))
        {
            account = await _cluster.GetJsonAsync(Survivors[0], $"/admin/accounts/{accountId}");
            var pending = 0;
            foreach (var slot in Survivors)
            {
                reconciliation = await _cluster.GetJsonAsync(slot, $"/admin/reconciliation/accounts/{accountId}");
                pending += reconciliation.GetProperty("pendingOnThisNode").GetInt32();
            }

            // An account that moved off the failed silo withholds what its old activation may have held (until its reservation
            // timeout): not a reservation anyone still has to settle.
            if (pending == 0 && account.GetProperty("reserved").GetInt64() == account.GetProperty("withheld").GetInt64() && reconciliation.GetProperty("logCalls").GetInt64() >= logCalls)
            {
                break;
            }

            await Task.Delay(100);
        }

        return (account, reconciliation);
    }

    /// <summary>
    /// Reads what the account and the call log hold of <paramref name="calls"/> (after <see cref="SettledAccountAsync"/>):
    /// <paramref name="ok"/> answered 200 besides <paramref name="warmUps"/>, <paramref name="failed"/> neither 200 nor an
    /// expected refusal.
    /// </summary>
    public async Task<FailoverCharges> ChargesAsync(JsonElement account, List<CallAttempt> calls, List<CallAttempt> ok, int failed, int warmUps,
        long price, TimeSpan lossWindow)
    {
        var rows = await CallLogRows.CountAsync(_cluster.ConnectionString, calls.Select(call => call.TrackId));
        var duplicates = await CallLogRows.DuplicatesAsync(_cluster.ConnectionString);
        return new FailoverCharges(
            Ok: ok.Count + warmUps,
            Failed: failed,
            Price: price,
            Charged: account.GetProperty("totalCharged").GetInt64(),
            AccountCalls: account.GetProperty("usage").GetProperty("calls").GetInt64(),
            OkWithoutRow: ok.Count(call => !rows.ContainsKey(call.TrackId)),
            Duplicates: duplicates,
            Window: ok.Count(call => call.AnsweredAt!.Value > FaultAt - lossWindow && call.AnsweredAt.Value <= FaultAt),
            LossWindow: lossWindow);
    }

    /// <summary>
    /// From the signal until the admin resource <paramref name="path"/> answers through the first survivor again (asked from
    /// when it returns on, each time for a second at most): when the grain behind it is active again.
    /// </summary>
    public async Task<TimeSpan> AnswersAgainAsync(string path)
    {
        using var admin = _cluster.Admin(Survivors[0]);
        admin.Timeout = TimeSpan.FromSeconds(1);
        while (Clock.Elapsed - FaultAt < TimeSpan.FromSeconds(60))
        {
            try
            {
                using var response = await admin.GetAsync(path);
                if (response.IsSuccessStatusCode)
                {
                    break;
                }
            }
            catch (Exception exception) when (exception is HttpRequestException or TaskCanceledException)
            {
                // Not yet.
            }

            await Task.Delay(20);
        }

        return Clock.Elapsed - FaultAt;
    }

    /// <summary>Calls' statuses and how many had each ("none": no answer), e.g. <c>503 x4, none x1</c>.</summary>
    public static string Statuses(IEnumerable<CallAttempt> calls) => string.Join(", ", calls
        .GroupBy(call => call.Status is { } status ? ((int)status).ToString(CultureInfo.InvariantCulture) : "none")
        .Select(g => $"{g.Key} x{g.Count()}"));

    /// <summary>An account's reconciliation without the per-key rows, which say only which keys differ.</summary>
    public static string Summary(JsonElement reconciliation)
    {
        var keys = reconciliation.TryGetProperty("keys", out var rows) && rows.ValueKind == JsonValueKind.Array ? rows.EnumerateArray().ToList() : [];
        var differing = keys.Where(key => !key.GetProperty("consistent").GetBoolean()).Select(key => key.ToString());
        return string.Create(CultureInfo.InvariantCulture,
            $"calls difference {reconciliation.GetProperty("callsDifference")}, charged difference {reconciliation.GetProperty("chargedDifference")}, " +
            $"balance difference {reconciliation.GetProperty("balanceDifference")}, rollup differences {reconciliation.GetProperty("rollupCallsDifference")}/" +
            $"{reconciliation.GetProperty("rollupChargedDifference")}, {keys.Count} keys, differing: [{string.Join(", ", differing)}]");
    }

    /// <summary>Where the time went after the fault; see <see cref="FailoverTimeline"/>.</summary>
    public FailoverTimeline Timeline(List<CallAttempt> calls, string answeredAs, Func<CallAttempt, bool> answered, Func<CallAttempt, bool> failed) =>
        FailoverTimeline.Of(calls, FaultAt, DeadAt, answeredAs, answered, failed);

    /// <summary>Stops sending (a test that failed before <see cref="StopAsync"/> leaves no caller running).</summary>
    public void Dispose() => _loads.ForEach(load => load.Dispose());
}
