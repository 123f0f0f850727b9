using System.Collections.Concurrent;
using System.Diagnostics;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Options;

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
        var info = await TestFrontDoors.PollLongAsync(() => key.GetAsync(),
            k => k!.LeasedCalls == 0 && k.WithheldCalls == 0 && DayUsed(k) == admitted.Count);
        var logged = (await journal.ReadKeyAsync(keyId)).Services.Sum(s => s.DayCalls);
        Assert.Equal(admitted.Count, logged);
        Assert.Equal(logged, DayUsed(info));
        Assert.Equal(0, info!.WithheldCalls);

        // Once the lost activation's calls are all accounted for, the rest of the quota is admitted, and no more.
        await CallUntilRefusedAsync(door, keyId, secret, serviceId, admitted);
        Assert.Equal(quota, admitted.Count);
    }

    [Fact]
    public async Task ActivationKilled_WithholdsTheStoredCeiling_ShrinkingAsItsCallsAreConfirmed_AndNothingOnceTheHorizonPassed()
    {
        const int quota = 300;
        var (keyId, secret, serviceId) = await CreateKeyAsync(quota);
        var services = _doors.Build(fixture.Time);
        var door = services.GetRequiredService<KeyLeaseCache>();
        var journal = services.GetRequiredService<MemoryJournal>();
        var key = fixture.Grains.GetGrain<IApiKeyGrain>(keyId);
        var admitted = new ConcurrentQueue<AdmitResult>();
        for (var i = 0; i < 100; i++)
        {
            admitted.Enqueue(await door.AdmitAsync(keyId, secret, CredentialKind.KeySecret, serviceId, 1, Currency));
        }

        Assert.All(admitted, call => Assert.Equal(AdmitOutcome.Admitted, call.Outcome));
        var counted = DayUsed(await key.GetAsync());
        var ceiling = (await fixture.StoredKeyAsync(keyId)).UnsettledCeiling;
        Assert.True(ceiling >= counted, $"stored ceiling {ceiling} below the {counted} calls counted and unsettled");

        // Killed: the activation goes without storing anything more (here its writes are refused until the next one has started).
        RecordingGrainStorage.Refuse(key.GetGrainId(), true);
        await ClusterFixture.DeactivateAsync(key);
        var next = await key.GetAsync();
        RecordingGrainStorage.Refuse(key.GetGrainId(), false);
        Assert.Equal(ceiling, next!.WithheldCalls);

        await CallUntilRefusedAsync(door, keyId, secret, serviceId, admitted);
        Assert.True(admitted.Count <= quota, $"{admitted.Count} calls admitted over a quota of {quota}");

        // The lost activation's calls settle and its lease is reported: what is withheld shrinks by exactly what it counted,
        // leaving the ceiling's headroom above that.
        foreach (var call in admitted)
        {
            await journal.WriteAsync(Record(call, keyId, serviceId), CancellationToken.None);
        }

        journal.Flush();
        await services.GetRequiredService<SettlementBatcher>().DrainAsync();
        fixture.Time.Advance(new LeaseOptions().Lifetime * 2);
        var info = await TestFrontDoors.PollLongAsync(() => key.GetAsync(),
            k => k!.LeasedCalls == 0 && k.WithheldCalls == ceiling - counted && DayUsed(k) == admitted.Count);
        Assert.Equal(ceiling - counted, info!.WithheldCalls);
        Assert.Equal(admitted.Count, DayUsed(info));

        // Once every call the lost activation admitted must have settled, nothing is withheld: the rest of the quota is admitted.
        fixture.Time.Advance(WithheldCalls.Horizon(new LeaseOptions(), new MeteringOptions()));
        Assert.Equal(0, (await key.GetAsync())!.WithheldCalls);
        await CallUntilRefusedAsync(door, keyId, secret, serviceId, admitted);
        Assert.Equal(quota, admitted.Count);
    }

    [Fact]
    public async Task Withheld_ShrinksOncePerConfirmedDeliveryOrReport_NotForResentOnes_AndEndsAtTheHorizon()
    {
        var (keyId, secret, serviceId) = await CreateKeyAsync(1_000);
        var key = fixture.Grains.GetGrain<IApiKeyGrain>(keyId);
        var holder = Guid.NewGuid();
        var calls = new List<AdmitResult>();
        for (var i = 0; i < 10; i++)
        {
            calls.Add(await key.AdmitAsync(new AdmitRequest(secret, serviceId, 1, Currency, "t" + i)));
        }

        var epoch = calls[0].Epoch;
        Assert.All(calls, call => Assert.Equal((AdmitOutcome.Admitted, epoch), (call.Outcome, call.Epoch)));
        var first = await key.LeaseAsync(new KeyLeaseRequest(holder, serviceId, 1, Currency, 20, true, []));
        var second = await key.LeaseAsync(new KeyLeaseRequest(holder, serviceId, 1, Currency, 20, true, []));
        Assert.Equal(epoch, first.Epoch);
        var (firstCalls, secondCalls) = (first.Allowance.Sum(a => a.Calls), second.Allowance.Sum(a => a.Calls));

        // A sender committed two batches (4 and 2 of the calls) but the activation went away before they reached it.
        var journal = new MemoryJournal(new SettlementBatcher(fixture.Grains, TimeProvider.System, NullLogger<SettlementBatcher>.Instance),
            Options.Create(new MeteringOptions { SettleInterval = TimeSpan.FromSeconds(1) }), TimeProvider.System) { SendsSettlements = false };
        foreach (var batch in new[] { calls[..4], calls[4..6] })
        {
            foreach (var call in batch)
            {
                await journal.WriteAsync(Record(call, keyId, serviceId), CancellationToken.None);
            }

            journal.Flush();
        }

        // Deactivated in order, it stores exactly what it counted and saw unsettled: the next activation withholds that.
        await ClusterFixture.DeactivateAsync(key);
        var withheld = 10L + firstCalls + secondCalls;
        Assert.Equal((withheld, 6L), await WithheldAndUsedAsync());

        // The committed batches arrive (its sender did not know they were applied): their calls are counted already.
        await Deliver(1, 4);
        Assert.Equal((withheld - 4, 6L), await WithheldAndUsedAsync());
        await Deliver(1, 4);
        Assert.Equal((withheld - 4, 6L), await WithheldAndUsedAsync());
        await Deliver(2, 2, resent: true);
        Assert.Equal((withheld - 4, 6L), await WithheldAndUsedAsync());

        // A batch the journal read did not hold: counted now, and confirmed once.
        await Deliver(3, 3);
        Assert.Equal((withheld - 7, 9L), await WithheldAndUsedAsync());
        await Deliver(3, 3);
        Assert.Equal((withheld - 7, 9L), await WithheldAndUsedAsync());

        // The lost activation's leases are reported: their unspent calls are confirmed once; a report that may have reached it is not.
        await key.EndLeasesAsync(holder, [new LeaseReport(first.LeaseId, 0, epoch, firstCalls)]);
        await key.EndLeasesAsync(holder, [new LeaseReport(first.LeaseId, 0, epoch, firstCalls)]);
        await key.EndLeasesAsync(holder, [new LeaseReport(second.LeaseId, 0, epoch, secondCalls, Resent: true)]);
        Assert.Equal((withheld - 7 - firstCalls, 9L), await WithheldAndUsedAsync());

        fixture.Time.Advance(WithheldCalls.Horizon(new LeaseOptions(), new MeteringOptions()));
        Assert.Equal((0L, 9L), await WithheldAndUsedAsync());

        async Task<(long Withheld, long Used)> WithheldAndUsedAsync()
        {
            var info = await key.GetAsync();
            return (info!.WithheldCalls, DayUsed(info));
        }

        Task Deliver(long sequence, int settled, bool resent = false) =>
            key.RecordBatchAsync([new ServiceUsageDelta(serviceId, settled, settled, 0, settled)], new DeliveryId(journal.Sender, sequence),
                [new EpochCalls(epoch, serviceId, settled)], resent);
    }

    [Fact]
    public async Task Ceiling_StoredBeforeAnyAdmissionPastIt_RaisedLogarithmically_LoweredByTheWriteBehindOnceUnused()
    {
        const int calls = 1_000;
        var (keyId, secret, serviceId) = await CreateKeyAsync(1_000_000);
        var key = fixture.Grains.GetGrain<IApiKeyGrain>(keyId);
        var writesBefore = RecordingGrainStorage.WritesOf(key.GetGrainId());
        var returned = 0;
        var results = await Task.WhenAll(Enumerable.Range(0, calls).Select(async i =>
        {
            var result = await key.AdmitAsync(new AdmitRequest(secret, serviceId, 1, Currency, "t" + i));
            var unsettled = Interlocked.Increment(ref returned);
            var stored = (await fixture.StoredKeyAsync(keyId)).UnsettledCeiling;
            Assert.True(stored >= unsettled, $"admission returned with {unsettled} calls unsettled over a stored ceiling of {stored}");
            return result;
        }));

        // Twice what is needed each time: 65, 132, 266, 534, 1070 for calls one at a time; fewer when many wait for one write.
        var raises = RecordingGrainStorage.WritesOf(key.GetGrainId()) - writesBefore;
        Assert.All(results, r => Assert.Equal(AdmitOutcome.Admitted, r.Outcome));
        Assert.InRange(raises, 1, 5);
        Assert.InRange((await fixture.StoredKeyAsync(keyId)).UnsettledCeiling, calls, 4 * calls);

        // Settled, and none unsettled for a while: the ceiling comes down to its least with the next write-behind.
        await key.RecordBatchAsync([new ServiceUsageDelta(serviceId, calls, calls, 0, calls)], new DeliveryId(Guid.NewGuid(), 1),
            [new EpochCalls(results[0].Epoch, serviceId, calls)]);
        fixture.Time.Advance(2 * UnsettledCeiling.LowerAfter);
        await key.RecordBatchAsync([]);
        var lowered = await TestFrontDoors.PollLongAsync(async () => (await fixture.StoredKeyAsync(keyId)).UnsettledCeiling, c => c == UnsettledCeiling.Headroom);
        Assert.Equal(UnsettledCeiling.Headroom, lowered);
    }

    [Fact]
    public async Task Ceiling_NotStored_AdmitsAllTheSame_AndWritesItOnceTheDatabaseIsBack()
    {
        var (keyId, secret, serviceId) = await CreateKeyAsync(100);
        var key = fixture.Grains.GetGrain<IApiKeyGrain>(keyId);

        // The database refuses the raise: the admission goes on (availability first) and the ceiling is not stored yet.
        RecordingGrainStorage.Refuse(key.GetGrainId(), true);
        Assert.Equal(AdmitOutcome.Admitted, (await key.AdmitAsync(new AdmitRequest(secret, serviceId, 1, Currency, "unstored"))).Outcome);
        Assert.Equal(1, DayUsed(await key.GetAsync()));
        Assert.Equal(0, (await fixture.StoredKeyAsync(keyId)).UnsettledCeiling);

        // Back: the write-behind stores the raised ceiling, covering the call admitted meanwhile.
        RecordingGrainStorage.Refuse(key.GetGrainId(), false);
        var stored = await TestFrontDoors.PollLongAsync(async () => (await fixture.StoredKeyAsync(keyId)).UnsettledCeiling, c => c >= 1);
        Assert.Equal(1 + UnsettledCeiling.Headroom, stored);
    }

    [Fact]
    public async Task Ceiling_FrontDoorRampingUp_IsWrittenAFewTimesNotPerCall()
    {
        var (keyId, secret, serviceId) = await CreateKeyAsync(100_000_000);
        var services = _doors.Build(fixture.Time);
        var door = services.GetRequiredService<KeyLeaseCache>();
        var journal = services.GetRequiredService<MemoryJournal>();
        var key = fixture.Grains.GetGrain<IApiKeyGrain>(keyId);
        var writesBefore = RecordingGrainStorage.WritesOf(key.GetGrainId());
        var output = TestContext.Current.TestOutputHelper;
        long total = 0;

        // Callers double from stage to stage, 1 to 64, each making 3,000 calls; each call is journaled (and settled) as soon as it
        // is admitted.
        for (var callers = 1; callers <= 64; callers *= 2)
        {
            var stage = Stopwatch.StartNew();
            await Task.WhenAll(Enumerable.Range(0, callers).Select(_ => Task.Run(async () =>
            {
                for (var i = 0; i < 3_000; i++)
                {
                    var result = await door.AdmitAsync(keyId, secret, CredentialKind.KeySecret, serviceId, 1, Currency);
                    Assert.Equal(AdmitOutcome.Admitted, result.Outcome);
                    await journal.WriteAsync(Record(result, keyId, serviceId), CancellationToken.None);
                }
            })));
            total += callers * 3_000;
            output?.WriteLine($"{callers} callers: {callers * 3_000 / stage.Elapsed.TotalSeconds:0} calls/s, " +
                $"ceiling {(await fixture.StoredKeyAsync(keyId)).UnsettledCeiling}, {RecordingGrainStorage.WritesOf(key.GetGrainId()) - writesBefore} writes so far");
        }

        // Each write at least doubles what the ceiling covers: about log2(ceiling / 64) + 1 writes in all.
        var writes = RecordingGrainStorage.WritesOf(key.GetGrainId()) - writesBefore;
        var ceiling = (await fixture.StoredKeyAsync(keyId)).UnsettledCeiling;
        output?.WriteLine($"{total} calls, {writes} writes of the key's state, ceiling {ceiling}");
        Assert.InRange(writes, 1, (int)Math.Ceiling(Math.Log2((double)ceiling / UnsettledCeiling.Headroom)) + 2);
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
            null, 200, 1, 1, admitted.Reserved, admitted.Reserved, admitted.Currency, null, admitted.Reserved, admitted.Hold, admitted.WindowOffsetMinutes,
            admitted.Epoch);

    public void Dispose() => _doors.Dispose();
}
