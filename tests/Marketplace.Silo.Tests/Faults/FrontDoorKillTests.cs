using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Net.Http.Json;
using System.Text.Json;
using Marketplace.Silo.Apis;
using Marketplace.Silo.Tests.Infrastructure;

namespace Marketplace.Silo.Tests.Faults;

/// <summary>
/// "A front door killed while holding leases: its allowance returns after the bounded time, and nothing is charged twice"
/// (issue 13; DESIGN §3 promises 1-3, §4 leases), on real processes: one silo (<c>Host:Role=silo</c>) and two separate
/// front doors A and B (<c>Host:Role=frontdoor</c>), the sample provider upstream, one key with a day quota of
/// <see cref="Quota"/> calls and a balance far above it.
/// </summary>
/// <remarks>
/// <para>The run:</para>
/// <list type="number">
/// <item>A admits about half the quota in bursts of concurrent calls, until the key counts more calls than A answered: A
/// asked ahead of need and holds a lease with unspent allowance.</item>
/// <item>Once A's calls are in the journal and their settlements reached the key and the account (the reconciliation
/// agrees), A is SIGKILLed with that lease unreported. Right after the kill the key's count, minus A's journaled calls, is
/// the allowance A took with it.</item>
/// <item>B admits exactly what is left beside it; the next call is refused 403 quota-exhausted. The allowance is still held
/// for A: the key pushes a recall to A (dead), waits its recall bound, then refuses.</item>
/// <item>Within the bound (<c>2 × Lifetime + ReclaimAfter</c> after the kill, see below) the key takes the allowance
/// back: its count drops by exactly what A held, no more (what A's journal settled stays spent). B then admits exactly
/// that much more and the next call is refused. A's journaled calls plus B's admitted calls equal the quota.</item>
/// <item>Nothing is charged twice: every call has exactly one call-log row; 200s are charged the price, refusals nothing;
/// the account's balance is its top-up minus the journal's charges (price × quota), nothing stays reserved, and the
/// per-account reconciliation reports no difference.</item>
/// </list>
/// <para>Why <c>Leases:Lifetime</c> is raised to <see cref="Lifetime"/> here: a live front door reports a lease it stopped
/// using itself (its sweep, at most 1.5 lifetimes after asking for it), which gives the allowance back at once. To kill A
/// while the key still counts its lease <em>and</em> with every call A answered durable and settled (so the reclaim can be
/// checked to the call), the kill must come after A's last batch and settlement and before that report. Waiting for them
/// took 0.3-0.8 s on a loaded two-core machine, against 1-1.5 s with the default lifetime: too thin a margin. The reclaim
/// does not depend on the lifetime's value, only its bound does. <c>Leases:ReclaimAfter</c> is shortened to
/// <see cref="ReclaimAfter"/> to keep the run short, and kept long enough that B's first refusal, which waits the key's
/// recall bound (4/5 of the 5 s hot-path timeout), ends seconds before the earliest reclaim.</para>
/// <para>The bound: the key gives up on a lease <c>Lifetime + ReclaimAfter</c> after granting it, once its holder has been
/// silent for <c>ReclaimAfter</c>, on a timer that ticks every <c>Lifetime</c>; A's last grant and last report both precede
/// the kill, so the allowance is back at most <c>2 × Lifetime + ReclaimAfter</c> after it (polled, with
/// <see cref="ReclaimSlack"/> for a loaded machine). It cannot be back before <c>Lifetime + ReclaimAfter</c> after A's last
/// grant, at least 7 s after the kill here, while B's first refusal ended 4.3-4.9 s after it in the runs: that refusal
/// shows the allowance held by design, with seconds to spare, and the key's count read after it (still the whole quota)
/// confirms no reclaim came first.</para>
/// <para>What this test does not cover: a kill between a journal batch's commit and its settlements' delivery (a few
/// milliseconds; the deliveries are queued in the killed process). By the code, the key then counts fewer settled calls for
/// A than the journal holds and gives back that many calls too many, and the account in memory misses their charges until
/// the grains next activate from the journal. The run waits for the settlements before the kill so that it checks the
/// reclaim to the call.</para>
/// </remarks>
[Collection(PostgresCollection.Name)]
public sealed class FrontDoorKillTests(PostgresFixture postgres)
{
    private const int Quota = 200;
    private const long Price = 3;
    private const long Balance = 1_000_000;
    private const int Burst = 10;
    private const int CallsThroughA = Quota / 2;
    private const int MaxBurstsThroughA = 14;
    private const int Concurrency = 8;
    private const string CallSuffix = "/verify?number=%2B4915112345678";
    private static readonly TimeSpan Lifetime = TimeSpan.FromSeconds(3);
    private static readonly TimeSpan ReclaimAfter = TimeSpan.FromSeconds(7);
    private static readonly TimeSpan FlushInterval = TimeSpan.FromMilliseconds(100);
    private static readonly TimeSpan ReclaimSlack = TimeSpan.FromSeconds(10);
    private static readonly TimeSpan SettleWait = TimeSpan.FromSeconds(20);

    [Fact]
    public async Task KeyLease_FrontDoorKilledHoldingIt_AllowanceReturnsWithinTheBound_NothingChargedTwice()
    {
        await using var provider = await TestHosts.StartProviderAsync();
        await using var cluster = await SiloCluster.StartAsync(postgres, "frontdoor_kill", 1, settings: new Dictionary<string, string>
        {
            ["Leases:Lifetime"] = Lifetime.ToString("c", CultureInfo.InvariantCulture),
            ["Leases:ReclaimAfter"] = ReclaimAfter.ToString("c", CultureInfo.InvariantCulture),
            ["CallLog:FlushInterval"] = FlushInterval.ToString("c", CultureInfo.InvariantCulture),
        }, frontDoors: 2);
        var (doorA, doorB) = (cluster.FrontDoors[0], cluster.FrontDoors[1]);
        using var admin = SiloCluster.Admin(doorB);
        var consumer = await new AdminApi(admin, provider.Urls.First())
            .CreateConsumerAsync(Balance, Price, limits: new { quota = new { perDay = Quota } });
        var run = new Calls(consumer, Guid.NewGuid().ToString("N")[..10]);
        using var callerA = Caller(doorA);
        using var callerB = Caller(doorB);

        // 1. A admits about half the quota, in bursts so that it asks ahead of need, and holds allowance it has not spent.
        var throughA = new List<Call>();
        var sinceA = new Stopwatch();
        for (var burst = 0; ; burst++)
        {
            throughA.AddRange(await run.SendAsync(callerA, string.Create(CultureInfo.InvariantCulture, $"a{burst:D2}"), Burst, Burst));
            sinceA.Restart();
            Assert.True(throughA.All(call => call.Ok), $"A refused or failed a call below the quota: {Show(throughA.FirstOrDefault(call => !call.Ok))}");
            if (throughA.Count >= CallsThroughA && await QuotaUsedAsync(admin, consumer.KeyId) > throughA.Count)
            {
                break;
            }

            Assert.True(burst < MaxBurstsThroughA, $"A held no unspent allowance after {throughA.Count} calls");
        }

        // 2. A's calls are durable, and the key and account have their settlements; then A dies with its lease unreported.
        var beforeKill = await WaitForReconciliationAsync(admin, consumer.AccountId, r => r.LogCalls == throughA.Count);
        Assert.True(beforeKill.Consistent, $"before the kill the grains disagree with the journal: {beforeKill}");
        var killedAfterA = sinceA.Elapsed;
        var clock = Stopwatch.StartNew();
        doorA.Kill();
        Assert.True(doorA.HasExited, "front door A is still running after SIGKILL");
        var heldByA = (int)(await QuotaUsedAsync(admin, consumer.KeyId) - throughA.Count);
        Assert.True(heldByA > 0, $"A reported its lease before the kill ({throughA.Count} calls, the key counts no more): the run proves nothing");

        // 3. B admits exactly what is left beside A's allowance; the next call is refused (the key recalls from A and gives up).
        var freeBeside = Quota - throughA.Count - heldByA;
        var beforeReclaim = await run.SendAsync(callerB, "b1", freeBeside, Concurrency);
        var refusedWhileHeld = (await run.SendAsync(callerB, "b1x", 1, 1))[0];
        var phaseOneEnded = clock.Elapsed;
        var usedWhileHeld = await QuotaUsedAsync(admin, consumer.KeyId);

        // 4. The key takes A's allowance back within the bound; B then admits exactly that much more, and no further call.
        var bound = (2 * Lifetime) + ReclaimAfter;
        var usedAfterReclaim = usedWhileHeld;
        while (usedAfterReclaim >= Quota && clock.Elapsed < bound + ReclaimSlack)
        {
            await Task.Delay(50, TestContext.Current.CancellationToken);
            usedAfterReclaim = await QuotaUsedAsync(admin, consumer.KeyId);
        }

        var reclaimedAfter = clock.Elapsed;
        var afterReclaim = await run.SendAsync(callerB, "b2", heldByA, Concurrency);
        var refusedAtTheEnd = (await run.SendAsync(callerB, "b2x", 1, 1))[0];

        // 5. Every call has one row; the account holds the journal's charges, once each.
        var all = throughA.Concat(beforeReclaim).Append(refusedWhileHeld).Concat(afterReclaim).Append(refusedAtTheEnd).ToList();
        var rows = await WaitForRowsAsync(cluster.ConnectionString, all);
        var reconciliation = await WaitForReconciliationAsync(admin, consumer.AccountId, r => r.LogCharged == Price * Quota);
        var account = await WaitForAccountAsync(admin, consumer.AccountId, a => a.GetProperty("reserved").GetInt64() == 0);
        var duplicates = await CallLogRows.DuplicatesAsync(cluster.ConnectionString);

        var okThroughB = beforeReclaim.Concat(afterReclaim).Count(call => call.Ok);
        TestContext.Current.TestOutputHelper?.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"Quota {Quota}: A admitted {throughA.Count} (journaled and settled), then was SIGKILLed {killedAfterA.TotalSeconds:F2} s after its last answers, " +
            $"holding {heldByA} unspent calls. " +
            $"B admitted {beforeReclaim.Count(call => call.Ok)} of {freeBeside} beside them; its next call was {Show(refusedWhileHeld)}, " +
            $"{phaseOneEnded.TotalSeconds:F2} s after the kill. The key counted {usedWhileHeld}, then {usedAfterReclaim} " +
            $"{reclaimedAfter.TotalSeconds:F2} s after the kill (bound {bound.TotalSeconds:F0} s + {ReclaimSlack.TotalSeconds:F0} s slack). " +
            $"B then admitted {afterReclaim.Count(call => call.Ok)} of {heldByA}; its next call was {Show(refusedAtTheEnd)}. " +
            $"Total 200s {throughA.Count + okThroughB}; call-log rows {rows.Count} for {all.Count} calls; " +
            $"charged {reconciliation.LogCharged}, balance {account.GetProperty("balance").GetInt64()}, reserved {account.GetProperty("reserved").GetInt64()}."));

        // Before the reclaim: exactly the calls beside A's allowance, then a refusal.
        Assert.True(beforeReclaim.All(call => call.Ok), $"B failed a call beside A's allowance: {Show(beforeReclaim.FirstOrDefault(call => !call.Ok))}");
        AssertQuotaExhausted(refusedWhileHeld, "B's call while A's allowance was held");
        Assert.Equal(Quota, usedWhileHeld);

        // The allowance came back within the bound, all of it and no more.
        Assert.True(usedAfterReclaim < Quota, string.Create(CultureInfo.InvariantCulture,
            $"A's {heldByA} unspent calls did not come back within {(bound + ReclaimSlack).TotalSeconds:F0} s of the kill (the key still counts {usedAfterReclaim})"));
        Assert.Equal(Quota - heldByA, usedAfterReclaim);
        Assert.True(afterReclaim.All(call => call.Ok), $"B failed a call of A's returned allowance: {Show(afterReclaim.FirstOrDefault(call => !call.Ok))}");
        AssertQuotaExhausted(refusedAtTheEnd, "B's call once the quota was spent");
        Assert.Equal(Quota, throughA.Count + okThroughB);

        // Nothing charged twice: one row per call, the price on 200s only, and the account agrees with the journal.
        var rowCounts = rows.GroupBy(row => row.TrackId, StringComparer.Ordinal).ToDictionary(g => g.Key, g => g.ToList(), StringComparer.Ordinal);
        var notOnce = all.Where(call => rowCounts.GetValueOrDefault(call.TrackId)?.Count != 1).ToList();
        Assert.True(notOnce.Count == 0, $"{notOnce.Count} calls do not have exactly one call-log row, e.g. {Show(notOnce.FirstOrDefault())}");
        Assert.Empty(duplicates);
        Assert.All(all, call => Assert.Equal(call.Ok ? Price : 0, rowCounts[call.TrackId][0].Charged));
        Assert.All(all.Where(call => call.Ok), call => Assert.Equal(Price, call.Charged));
        Assert.Equal(Price * Quota, rows.Sum(row => row.Charged));
        Assert.True(reconciliation.Consistent, $"the reconciliation reports differences: {reconciliation}");
        Assert.Equal(0, reconciliation.BalanceDifference);
        Assert.Equal(0, reconciliation.CallsDifference);
        Assert.Equal(0, reconciliation.ChargedDifference);
        Assert.Equal(Price * Quota, reconciliation.LogCharged);

        // Every account of the cluster, not only the one the calls used.
        var everyAccount = (await admin.GetFromJsonAsync<JsonElement>("/admin/reconciliation"))!;
        Assert.True(everyAccount.GetProperty("consistent").GetBoolean(), $"accounts differ from the journal: {everyAccount}");
        Assert.Equal(Balance - (Price * Quota), account.GetProperty("balance").GetInt64());
        Assert.Equal(Price * Quota, account.GetProperty("totalCharged").GetInt64());
        Assert.Equal(0, account.GetProperty("reserved").GetInt64());
    }

    private static HttpClient Caller(SiloProcess door) =>
        new(new SocketsHttpHandler { MaxConnectionsPerServer = Burst }) { BaseAddress = door.BaseAddress, Timeout = TimeSpan.FromSeconds(30) };

    // The key's own count of its day quota: calls admitted plus those leased to front doors and not yet given back.
    private static async Task<long> QuotaUsedAsync(HttpClient admin, string keyId)
    {
        var key = await admin.GetFromJsonAsync<JsonElement>($"/admin/keys/{keyId}");
        return key.GetProperty("quotas").EnumerateArray()
            .Single(quota => quota.GetProperty("window").GetString() == "day" && quota.GetProperty("serviceId").ValueKind == JsonValueKind.Null)
            .GetProperty("used").GetInt64();
    }

    private static async Task<Reconciliation> WaitForReconciliationAsync(HttpClient admin, string accountId, Func<Reconciliation, bool> done)
    {
        var clock = Stopwatch.StartNew();
        while (true)
        {
            var reconciliation = (await admin.GetFromJsonAsync<Reconciliation>($"/admin/reconciliation/accounts/{accountId}"))!;
            if ((done(reconciliation) && reconciliation.Consistent) || clock.Elapsed > SettleWait)
            {
                return reconciliation;
            }

            await Task.Delay(20, TestContext.Current.CancellationToken);
        }
    }

    private static async Task<JsonElement> WaitForAccountAsync(HttpClient admin, string accountId, Func<JsonElement, bool> done)
    {
        var clock = Stopwatch.StartNew();
        while (true)
        {
            var account = await admin.GetFromJsonAsync<JsonElement>($"/admin/accounts/{accountId}");
            if (done(account) || clock.Elapsed > SettleWait)
            {
                return account;
            }

            await Task.Delay(50, TestContext.Current.CancellationToken);
        }
    }

    // The front doors write rows in batches: waits (bounded) until every call has one.
    private static async Task<List<CallLogFaultRow>> WaitForRowsAsync(string connectionString, List<Call> calls)
    {
        var clock = Stopwatch.StartNew();
        while (true)
        {
            var rows = await CallLogRows.ReadAsync(connectionString, calls.Select(call => call.TrackId));
            var logged = rows.Select(row => row.TrackId).ToHashSet(StringComparer.Ordinal);
            if (calls.All(call => logged.Contains(call.TrackId)) || clock.Elapsed > SettleWait)
            {
                return rows;
            }

            await Task.Delay(50, TestContext.Current.CancellationToken);
        }
    }

    private static void AssertQuotaExhausted(Call call, string what)
    {
        Assert.True(call.Status == HttpStatusCode.Forbidden && call.ProblemType == "urn:marketplace:problem:quota-exhausted",
            $"{what} was answered {Show(call)}, not 403 quota-exhausted");
    }

    private static string Show(Call? call) => call is null
        ? "-"
        : string.Create(CultureInfo.InvariantCulture,
            $"{call.TrackId}: {(call.Status is { } status ? ((int)status).ToString(CultureInfo.InvariantCulture) : "no answer")} " +
            $"{call.ProblemType ?? call.Error} after {call.Waited.TotalSeconds:F2} s");

    /// <summary>One call: its TrackId, and what its answer said.</summary>
    private sealed record Call(string TrackId, HttpStatusCode? Status, long? Charged, string? ProblemType, string? Error, TimeSpan Waited)
    {
        public bool Ok => Status == HttpStatusCode.OK;
    }

    /// <summary>Calls of one consumer's key to its service, each with its own X-Track-Id.</summary>
    private sealed class Calls(Consumer consumer, string runId)
    {
        /// <summary>Sends <paramref name="count"/> calls, at most <paramref name="concurrency"/> at once, and returns them in order.</summary>
        public async Task<List<Call>> SendAsync(HttpClient caller, string phase, int count, int concurrency)
        {
            var calls = new Call[count];
            var next = -1;
            await Task.WhenAll(Enumerable.Range(0, Math.Min(count, concurrency)).Select(async _ =>
            {
                for (var i = Interlocked.Increment(ref next); i < count; i = Interlocked.Increment(ref next))
                {
                    calls[i] = await SendOneAsync(caller, string.Create(CultureInfo.InvariantCulture, $"kill-{runId}-{phase}-{i:D4}"));
                }
            }));
            return [.. calls];
        }

        private async Task<Call> SendOneAsync(HttpClient caller, string trackId)
        {
            using var request = new HttpRequestMessage(HttpMethod.Get, $"/v1/call/{consumer.ServiceId}{CallSuffix}");
            request.Headers.Add("X-Track-Id", trackId);
            request.Headers.Add("X-Api-Key", consumer.ApiKey);
            var clock = Stopwatch.StartNew();
            try
            {
                using var response = await caller.SendAsync(request);
                var body = await response.Content.ReadAsStringAsync();
                var charged = response.Headers.TryGetValues("X-Charged", out var values) ? long.Parse(values.Single(), CultureInfo.InvariantCulture) : (long?)null;
                string? type = null;
                if (response.StatusCode != HttpStatusCode.OK && body.Length > 0)
                {
                    using var problem = JsonDocument.Parse(body);
                    type = problem.RootElement.TryGetProperty("type", out var t) ? t.GetString() : body;
                }

                return new Call(trackId, response.StatusCode, charged, type, null, clock.Elapsed);
            }
            catch (Exception exception) when (exception is HttpRequestException or TaskCanceledException or IOException or JsonException)
            {
                return new Call(trackId, null, null, null, $"{exception.GetType().Name}: {exception.Message}", clock.Elapsed);
            }
        }
    }
}
