using System.Collections.Concurrent;
using Microsoft.Extensions.DependencyInjection;

namespace Marketplace.Grains.Tests;

/// <summary>
/// A key's quota counts live in its activation's memory; when the activation is lost (its silo killed, or deactivated in a
/// rolling restart) the next one rebuilds them from the journal, which does not hold the calls still in flight or in front
/// doors' leases. Quotas stay exact all the same: no call is admitted past a quota, and once everything settles the key's
/// counts equal the journal's.
/// </summary>
// Run with the other leasing tests, one after the other: front doors and the key's recalls are paced by the clock.
[Collection(LeasingClusterFixture.Collection)]
public sealed class KeyEpochTests(EpochClusterFixture fixture) : IClassFixture<EpochClusterFixture>, IDisposable
{
    private const string Currency = TestFrontDoors.Currency;
    private readonly TestFrontDoors _doors = new(fixture.Grains);

    [Fact]
    public async Task ActivationLost_WithCallsInFlightAndALeaseHeld_AdmitsNoMoreThanTheQuota_AndCountsEqualTheJournal()
    {
        const int quota = 200;
        var (keyId, secret, serviceId) = await CreateKeyAsync(quota);
        var services = _doors.Build(fixture.Time);
        var door = services.GetRequiredService<KeyLeaseCache>();
        var journal = services.GetRequiredService<MemoryJournal>();
        var key = fixture.Grains.GetGrain<IApiKeyGrain>(keyId);
        var admitted = new ConcurrentQueue<AdmitResult>();

        // The front door admits calls it has not settled yet (in flight, or in its unflushed batch), and holds a lease.
        for (var i = 0; i < 60; i++)
        {
            var result = await door.AdmitAsync(keyId, secret, CredentialKind.KeySecret, serviceId, 1, Currency);
            Assert.Equal(AdmitOutcome.Admitted, result.Outcome);
            admitted.Enqueue(result);
        }

        Assert.True((await key.GetAsync())!.LeasedCalls > 0, "the front door holds no lease");

        // The key's activation is lost: its counts in memory go, as they would with its silo killed.
        await ClusterFixture.DeactivateAsync(key);

        // The front door goes on until the key refuses: from what is left of its lease, then from the key's next activation.
        await CallUntilRefusedAsync(door, keyId, secret, serviceId, admitted);
        Assert.True(admitted.Count <= quota, $"{admitted.Count} calls admitted over a quota of {quota}");

        // Everything settles: the calls reach the journal and the key, the front door's leases lapse and are reported.
        foreach (var call in admitted)
        {
            await journal.WriteAsync(Record(call, keyId, serviceId), CancellationToken.None);
        }

        journal.Flush();
        await services.GetRequiredService<SettlementBatcher>().DrainAsync();
        fixture.Time.Advance(new LeaseOptions().Lifetime * 2);
        var info = await TestFrontDoors.PollLongAsync(() => key.GetAsync(), k => k!.LeasedCalls == 0 && DayUsed(k) == admitted.Count);
        var logged = (await journal.ReadKeyAsync(keyId)).Services.Sum(s => s.DayCalls);
        Assert.Equal(admitted.Count, logged);
        Assert.Equal(logged, DayUsed(info));

        // Once the lost activation's calls are all accounted for, the rest of the quota is admitted, and no more.
        await CallUntilRefusedAsync(door, keyId, secret, serviceId, admitted);
        Assert.Equal(quota, admitted.Count);
    }

    // Eight callers at once until one is refused for the quota.
    private static async Task CallUntilRefusedAsync(KeyLeaseCache door, string keyId, string secret, string serviceId, ConcurrentQueue<AdmitResult> admitted)
    {
        var refused = 0;
        var calls = 0;
        await Task.WhenAll(Enumerable.Range(0, 8).Select(async _ =>
        {
            while (Volatile.Read(ref refused) == 0 && Interlocked.Increment(ref calls) <= 2_000)
            {
                var result = await door.AdmitAsync(keyId, secret, CredentialKind.KeySecret, serviceId, 1, Currency);
                if (result.Outcome == AdmitOutcome.Admitted)
                {
                    admitted.Enqueue(result);
                    continue;
                }

                Assert.Equal(AdmitOutcome.QuotaExhausted, result.Outcome);
                Volatile.Write(ref refused, 1);
            }
        }));
    }

    private async Task<(string KeyId, string Secret, string ServiceId)> CreateKeyAsync(long perDay)
    {
        var (accountId, serviceId) = await _doors.CreateServiceAndAccountAsync(price: 1, balance: 1_000_000);
        var (keyId, secret) = await _doors.CreateKeyAsync(accountId, serviceId, new KeyLimits(null, new Quota(perDay, null), null, null));
        return (keyId, secret, serviceId);
    }

    private static long DayUsed(ApiKeyInfo? key) => key!.Quotas!.Single(q => q.Window == QuotaWindows.Day && q.ServiceId is null).Used;

    // An admitted call's journal record, as the call pipeline writes it.
    private static CallRecord Record(AdmitResult admitted, string keyId, string serviceId) =>
        new(Guid.CreateVersion7(), "epoch", EpochClusterFixture.SharedTime.GetUtcNow(), admitted.AccountId, keyId, serviceId, "v1", CallOutcome.Succeeded,
            null, 200, 1, 1, admitted.Reserved, admitted.Reserved, admitted.Currency, null, admitted.Reserved, admitted.Hold, admitted.WindowOffsetMinutes);

    public void Dispose() => _doors.Dispose();
}
