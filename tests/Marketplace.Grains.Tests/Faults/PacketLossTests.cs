using System.Collections.Concurrent;
using Microsoft.Extensions.DependencyInjection;

namespace Marketplace.Grains.Tests;

/// <summary>
/// Money messages lost between front doors and silos (requests that never ran, answers lost after they ran, one-way recalls):
/// two front doors admit calls from key leases and settle them through their journals while a share of every money message
/// is lost, over a quota and a balance the load exhausts. No call is admitted past a limit, none is charged twice or lost,
/// and once the losses stop every reservation comes back without waiting for the reservation timeout.
/// </summary>
// Run with the other leasing tests, one after the other: each loads the machine with thousands of admissions.
[Collection(LeasingClusterFixture.Collection)]
public sealed class PacketLossTests(PacketLossClusterFixture fixture) : IClassFixture<PacketLossClusterFixture>, IDisposable
{
    private const string Currency = TestFrontDoors.Currency;
    private readonly TestFrontDoors _doors = new(fixture.Grains);

    [Fact]
    public async Task MoneyMessages_FifteenPercentLost_NothingChargedTwiceOrLostAndEveryReservationReleased()
    {
        const long price = 3;
        const long topUp = 2_400;
        const long creditLimit = 300;
        const int quota = 250;
        // Calls are sent until both limits have refused one (the load exhausts them however many calls faults cost), at most this many.
        const int maxCalls = 10_000;
        var (accountId, serviceId, limited, unlimited) = await CreateAsync(price, topUp, creditLimit, quota);
        var doors = new[] { FrontDoor(), FrontDoor() };
        var keys = new[] { limited, unlimited };
        var account = fixture.Grains.GetGrain<IAccountGrain>(accountId);
        var records = new ConcurrentQueue<CallRecord>();
        var outcomes = new ConcurrentQueue<(int Key, AdmitOutcome? Outcome)>();
        var lowestBalance = long.MaxValue;
        var lowestAvailable = long.MaxValue;
        var (requestsLost, responsesLost) = (PacketLoss.RequestsLost, PacketLoss.ResponsesLost);

        PacketLoss.Start(requests: 0.15, responses: 0.15, oneWay: 0.15);
        try
        {
            var next = -1;
            var (quotaReached, balanceReached) = (0, 0);
            await Task.WhenAll(Enumerable.Range(0, 24).Select(_ => Task.Run(async () =>
            {
                int i;
                while ((Volatile.Read(ref quotaReached) == 0 || Volatile.Read(ref balanceReached) == 0) && (i = Interlocked.Increment(ref next)) < maxCalls)
                {
                    // A third of the calls on the key with a quota, the rest on the other, alternately through each front door.
                    var keyIndex = i % 3 == 0 ? 0 : 1;
                    var key = keys[keyIndex];
                    var door = doors[(i / 3) % 2];
                    AdmitResult result;
                    try
                    {
                        result = await door.Cache.AdmitAsync(key.Id, key.Secret, CredentialKind.KeySecret, serviceId, price, Currency);
                    }
                    catch (ClusterUnavailableException)
                    {
                        // The caller got a 503: nothing admitted.
                        outcomes.Enqueue((keyIndex, null));
                        continue;
                    }

                    outcomes.Enqueue((keyIndex, result.Outcome));
                    if (keyIndex == 0 && result.Outcome == AdmitOutcome.QuotaExhausted)
                    {
                        Volatile.Write(ref quotaReached, 1);
                    }
                    else if (result.Outcome == AdmitOutcome.InsufficientBalance)
                    {
                        Volatile.Write(ref balanceReached, 1);
                    }

                    if (result.Outcome == AdmitOutcome.Admitted)
                    {
                        // Every tenth call fails upstream and is not charged; its reservation is released all the same.
                        var record = Record(result, key.Id, serviceId, charged: i % 10 == 0 ? 0 : result.Reserved);
                        records.Enqueue(record);
                        await door.Journal.WriteAsync(record, CancellationToken.None);
                    }

                    if (i % 8 == 0)
                    {
                        var seen = (await account.GetAsync())!;
                        InterlockedMin(ref lowestBalance, seen.Balance);
                        InterlockedMin(ref lowestAvailable, seen.Available);
                    }
                }
            })));
        }
        finally
        {
            PacketLoss.Stop();
        }

        Assert.True(PacketLoss.RequestsLost > requestsLost, "no request was lost");
        Assert.True(PacketLoss.ResponsesLost > responsesLost, "no answer was lost");

        // Every journal batch is settled; the clock then passes a lease's life, so the front doors' leases lapse and go back to
        // their keys, and the keys' idle leases to the account. It passes neither the reservation timeout nor the time after
        // which a silent front door's leases are reclaimed: what a lost message held must come back through the messages.
        foreach (var door in doors)
        {
            door.Journal.Flush();
            await door.Settlements.DrainAsync();
        }

        fixture.Time.Advance(new LeaseOptions().Lifetime);
        var journaled = records.Count;
        var charged = records.Sum(r => r.Charged);
        var settled = await PollLongAsync(async () => (await account.GetAsync())!, a => a.Reserved == 0 && a.Usage.Calls == journaled);

        var summary = string.Join(", ", outcomes.GroupBy(o => o).OrderBy(g => g.Key.Key).Select(g => $"key {g.Key.Key} {g.Key.Outcome?.ToString() ?? "fault"}: {g.Count()}"));

        // Limits: never past the quota or the balance, however many messages were lost; and the load reached both.
        var admitted = outcomes.Where(o => o.Outcome == AdmitOutcome.Admitted).GroupBy(o => o.Key).ToDictionary(g => g.Key, g => g.Count());
        Assert.Equal(journaled, admitted.Values.Sum());
        Assert.True(admitted.GetValueOrDefault(0) <= quota, $"{admitted.GetValueOrDefault(0)} calls admitted over a quota of {quota}");
        Assert.True(charged <= topUp + creditLimit, $"{charged} charged over {topUp + creditLimit} spendable");
        Assert.True(outcomes.Any(o => o.Key == 0 && o.Outcome == AdmitOutcome.QuotaExhausted), "the quota was not reached: " + summary);
        Assert.True(outcomes.Any(o => o.Outcome == AdmitOutcome.InsufficientBalance), "the balance was not reached: " + summary);
        Assert.True(lowestBalance >= -creditLimit, $"the balance went to {lowestBalance}, below the credit limit of {creditLimit}");
        Assert.True(lowestAvailable >= 0, $"available went to {lowestAvailable}");

        // Money: every call the journal holds charged once, nothing else charged, nothing left reserved.
        Assert.True(settled.Reserved == 0, $"{settled.Reserved} still reserved ({settled.Usage.Calls} of {journaled} calls settled): {summary}");
        Assert.Equal(topUp, settled.Credits);
        Assert.Equal(charged, settled.TotalCharged);
        Assert.Equal(topUp - charged, settled.Balance);
        Assert.Equal(journaled, settled.Usage.Calls);
        Assert.Equal(records.Count(r => r.Charged > 0), settled.Usage.Charged);

        // Counters: the keys' and the service's equal the journal's, and the quota counts exactly the calls admitted.
        foreach (var (key, index) in keys.Select((key, index) => (key, index)))
        {
            var info = (await fixture.Grains.GetGrain<IApiKeyGrain>(key.Id).GetAsync())!;
            var keyCalls = records.Count(r => r.KeyId == key.Id);
            Assert.Equal(keyCalls, info.Usage.Calls);
            Assert.Equal(records.Where(r => r.KeyId == key.Id).Sum(r => r.Charged > 0 ? 1 : 0), info.Usage.Charged);
            if (index == 0)
            {
                Assert.Equal(keyCalls, info.Quotas!.Single(q => q.Window == "day" && q.ServiceId is null).Used);
            }
        }

        var service = (await fixture.Grains.GetGrain<IDataServiceGrain>(serviceId).GetAsync())!;
        Assert.Equal(journaled, service.Counters.Calls);
    }

    private static CallRecord Record(AdmitResult admitted, string keyId, string serviceId, long charged) =>
        new(Guid.CreateVersion7(), "loss", PacketLossClusterFixture.SharedTime.GetUtcNow(), admitted.AccountId, keyId, serviceId, "v1",
            charged > 0 ? CallOutcome.Succeeded : CallOutcome.UpstreamFailed, null, charged > 0 ? 200 : 502, 1, 1, admitted.Reserved, charged,
            admitted.Currency, null, admitted.Reserved, admitted.Hold, admitted.WindowOffsetMinutes, admitted.Epoch);

    private static void InterlockedMin(ref long target, long value)
    {
        var current = Interlocked.Read(ref target);
        while (value < current)
        {
            var seen = Interlocked.CompareExchange(ref target, value, current);
            if (seen == current)
            {
                return;
            }

            current = seen;
        }
    }

    private static Task<T> PollLongAsync<T>(Func<Task<T>> read, Func<T, bool> done) => TestFrontDoors.PollLongAsync(read, done);

    // A front door as a front door process registers it: its own lease cache, journal (so its own holder id) and settlements.
    private (KeyLeaseCache Cache, MemoryJournal Journal, SettlementBatcher Settlements) FrontDoor()
    {
        var provider = _doors.Build(fixture.Time);
        return (provider.GetRequiredService<KeyLeaseCache>(), provider.GetRequiredService<MemoryJournal>(), provider.GetRequiredService<SettlementBatcher>());
    }

    private async Task<(string AccountId, string ServiceId, (string Id, string Secret) Limited, (string Id, string Secret) Unlimited)> CreateAsync(
        long price, long topUp, long creditLimit, long quota)
    {
        var (accountId, serviceId) = await _doors.CreateServiceAndAccountAsync(price, topUp, creditLimit);
        return (accountId, serviceId, await _doors.CreateKeyAsync(accountId, serviceId, new KeyLimits(null, new Quota(quota, null), null, null)),
            await _doors.CreateKeyAsync(accountId, serviceId, null));
    }

    public void Dispose() => _doors.Dispose();
}
