using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Options;

namespace Marketplace.Grains.Tests;

[Collection(ClusterCollection.Name)]
public sealed class SettlementBatcherTests(ClusterFixture fixture)
{
    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public async Task Journal_ManyCallsOverKeysAndServices_AddUpExactlyOnAccountKeysAndServices(bool batched)
    {
        var accountId = await fixture.CreateAccountAsync(balance: 1_000);
        var serviceA = await CreateServiceAsync();
        var serviceB = await CreateServiceAsync();
        var (keyOne, secretOne, _) = await fixture.CreateKeyAsync(accountId, [serviceA, serviceB]);
        var (keyTwo, secretTwo, _) = await fixture.CreateKeyAsync(accountId, [serviceA]);
        var account = fixture.Grains.GetGrain<IAccountGrain>(accountId);
        var journal = Journal(batched ? Gathered : TimeSpan.Zero);

        // 30 calls reserve 3 each: 20 succeed (charged), 10 fail (released).
        for (var i = 0; i < 30; i++)
        {
            var (keyId, secret, service) = (i % 3) switch
            {
                0 => (keyOne, secretOne, serviceA),
                1 => (keyOne, secretOne, serviceB),
                _ => (keyTwo, secretTwo, serviceA),
            };
            var admitted = await fixture.Grains.GetGrain<IApiKeyGrain>(keyId).AdmitAsync(new AdmitRequest(secret, service, 3, "EUR", "track-" + i));
            Assert.Equal(AdmitOutcome.Admitted, admitted.Outcome);
            var succeeded = i % 3 != 2 || i < 15;
            await journal.WriteAsync(Settled(accountId, keyId, service, admitted, succeeded ? 3 : 0, succeeded), CancellationToken.None);
        }

        var beforeFlush = await account.GetAsync();
        journal.Flush();
        var info = await Poll.UntilAsync(() => account.GetAsync(), a => a!.Usage.Calls == 30);
        var one = await Poll.UntilAsync(() => fixture.Grains.GetGrain<IApiKeyGrain>(keyOne).GetAsync(), k => k!.Usage.Calls == 20);
        var two = await Poll.UntilAsync(() => fixture.Grains.GetGrain<IApiKeyGrain>(keyTwo).GetAsync(), k => k!.Usage.Calls == 10);
        var a = await Poll.UntilAsync(() => fixture.Grains.GetGrain<IDataServiceGrain>(serviceA).GetAsync(), s => s!.Counters.Calls == 20);

        if (batched)
        {
            Assert.Equal(90, beforeFlush!.Reserved);
        }

        Assert.Equal(0, info!.Reserved);
        Assert.Equal(1_000 - (25 * 3), info.Balance);
        Assert.Equal(25, info.Usage.Charged);
        Assert.Equal(5, info.Usage.Failed);
        Assert.Equal(20, info.Usage.CallsByService[serviceA]);
        Assert.Equal(10, info.Usage.CallsByService[serviceB]);
        Assert.Equal(20, one!.Usage.Charged);
        Assert.Equal(5, two!.Usage.Failed);
        Assert.Equal(5, a!.Counters.Failed);
        Assert.Equal(15 * 3, a.Counters.Revenue);
    }

    [Fact]
    public async Task Journal_GrainsDeactivated_RebuildBalanceUsageAndQuotaFromTheJournal()
    {
        var accountId = await fixture.CreateAccountAsync(balance: 100);
        var serviceId = await CreateServiceAsync();
        var keyId = TestIds.Key();
        var key = fixture.Grains.GetGrain<IApiKeyGrain>(keyId);
        var created = await key.CreateAsync(new ApiKeySpec(accountId, "quota key", [serviceId], null,
            new KeyLimits(null, new Quota(PerDay: 5, PerMonth: null), null, TimeSpan.FromMinutes(330))));
        var secret = created.ApiKey[$"mk_{keyId}.".Length..];
        var account = fixture.Grains.GetGrain<IAccountGrain>(accountId);
        var service = fixture.Grains.GetGrain<IDataServiceGrain>(serviceId);
        var journal = Journal(Gathered);

        for (var i = 0; i < 3; i++)
        {
            var admitted = await key.AdmitAsync(new AdmitRequest(secret, serviceId, 3, "EUR", "t" + i));
            Assert.Equal(AdmitOutcome.Admitted, admitted.Outcome);
            Assert.Equal(330, admitted.WindowOffsetMinutes);
            await journal.WriteAsync(Settled(accountId, keyId, serviceId, admitted, 3, succeeded: true), CancellationToken.None);
        }

        journal.Flush();
        await Poll.UntilAsync(() => account.GetAsync(), a => a!.Usage.Calls == 3);
        await Poll.UntilAsync(() => service.GetAsync(), s => s!.Counters.Calls == 3);
        await Poll.UntilAsync(() => key.GetAsync(), k => k!.Usage.Calls == 3);
        await ClusterFixture.DeactivateAsync(account);
        await ClusterFixture.DeactivateAsync(key);
        await ClusterFixture.DeactivateAsync(service);

        var info = await account.GetAsync();
        Assert.Equal(100 - 9, info!.Balance);
        Assert.Equal(9, info.TotalCharged);
        Assert.Equal(3, info.Usage.Calls);
        Assert.Equal(3, info.Usage.CallsByService[serviceId]);
        Assert.Equal(3, (await key.GetAsync())!.Usage.Calls);
        Assert.Equal(9, (await service.GetAsync())!.Counters.Revenue);

        // The quota day counted 3 of 5 before the restart: two more are admitted, the sixth is not.
        for (var i = 0; i < 2; i++)
        {
            Assert.Equal(AdmitOutcome.Admitted, (await key.AdmitAsync(new AdmitRequest(secret, serviceId, 3, "EUR", "more" + i))).Outcome);
        }

        Assert.Equal(AdmitOutcome.QuotaExhausted, (await key.AdmitAsync(new AdmitRequest(secret, serviceId, 3, "EUR", "over"))).Outcome);
    }

    [Fact]
    public async Task Journal_BatchResentAfterTheGrainReadIt_IsNotAppliedAgain()
    {
        var accountId = await fixture.CreateAccountAsync(balance: 100);
        var serviceId = await CreateServiceAsync();
        var (keyId, secret, _) = await fixture.CreateKeyAsync(accountId, [serviceId]);
        var account = fixture.Grains.GetGrain<IAccountGrain>(accountId);
        var journal = Journal(Gathered);
        var admitted = await fixture.Grains.GetGrain<IApiKeyGrain>(keyId).AdmitAsync(new AdmitRequest(secret, serviceId, 3, "EUR", "t"));
        await journal.WriteAsync(Settled(accountId, keyId, serviceId, admitted, 3, succeeded: true), CancellationToken.None);
        journal.Flush();
        await Poll.UntilAsync(() => account.GetAsync(), a => a!.Usage.Calls == 1);

        // The sender did not learn the outcome and sends batch 1 again, to an activation that read the journal after it.
        await ClusterFixture.DeactivateAsync(account);
        var usage = new ServiceUsageDelta(serviceId, 1, 1, 0, 3);
        await account.SettleBatchAsync(new SettlementBatch(3, 3, [usage], null, new DeliveryId(journal.Sender, 1)));

        var info = await account.GetAsync();
        Assert.Equal(97, info!.Balance);
        Assert.Equal(1, info.Usage.Calls);
    }

    [Fact]
    public async Task SettleAndRecordBatch_SameDeliverySentAgain_AppliedOnce()
    {
        var accountId = await fixture.CreateAccountAsync(balance: 1_000);
        var serviceId = await CreateServiceAsync();
        var (keyId, _, _) = await fixture.CreateKeyAsync(accountId, [serviceId]);
        var account = fixture.Grains.GetGrain<IAccountGrain>(accountId);
        var key = fixture.Grains.GetGrain<IApiKeyGrain>(keyId);
        var service = fixture.Grains.GetGrain<IDataServiceGrain>(serviceId);
        var sender = Guid.NewGuid();
        var usage = new ServiceUsageDelta(serviceId, 4, 4, 0, 12);

        // The first delivery's outcome was unknown to the sender, so it sends the same one again; then the next one.
        foreach (var sequence in new long[] { 1, 1, 2 })
        {
            var delivery = new DeliveryId(sender, sequence);
            await account.SettleBatchAsync(new SettlementBatch(0, 12, [usage], null, delivery));
            await key.RecordBatchAsync([usage], delivery);
            await service.RecordBatchAsync(usage, delivery);
        }

        // Another sender's deliveries are its own.
        await account.SettleBatchAsync(new SettlementBatch(0, 12, [usage], null, new DeliveryId(Guid.NewGuid(), 1)));

        Assert.Equal(1_000 - (3 * 12), (await account.GetAsync())!.Balance);
        Assert.Equal(8, (await key.GetAsync())!.Usage.Calls);
        Assert.Equal(24, (await service.GetAsync())!.Counters.Revenue);
    }

    [Fact]
    public void DeliveryMarks_OldSendersPrunedOnlyPastTheRetention()
    {
        var now = DateTimeOffset.UnixEpoch;
        var marks = new Dictionary<Guid, DeliveryMark>();
        var first = Guid.NewGuid();
        Assert.True(DeliveryMarks.TryAccept(marks, new DeliveryId(first, 5), now));
        for (var i = 0; i < 40; i++)
        {
            Assert.True(DeliveryMarks.TryAccept(marks, new DeliveryId(Guid.NewGuid(), 1), now + DeliveryMarks.Retention));
        }

        Assert.False(DeliveryMarks.TryAccept(marks, new DeliveryId(first, 5), now + DeliveryMarks.Retention));
        Assert.True(DeliveryMarks.TryAccept(marks, new DeliveryId(first, 6), now + DeliveryMarks.Retention));
        Assert.True(DeliveryMarks.TryAccept(marks, null, now));
    }

    // Longer than any test: a batch is committed only when the test calls Flush, never by the journal's timer.
    private static readonly TimeSpan Gathered = TimeSpan.FromHours(1);

    private MemoryJournal Journal(TimeSpan interval)
    {
        var batcher = new SettlementBatcher(fixture.Grains, TimeProvider.System, NullLogger<SettlementBatcher>.Instance);
        return new MemoryJournal(batcher, Options.Create(new MeteringOptions { SettleInterval = interval }), TimeProvider.System);
    }

    private static CallRecord Settled(string accountId, string keyId, string serviceId, AdmitResult admitted, long charged, bool succeeded) =>
        new(Guid.CreateVersion7(), "t", ClusterFixture.SharedTime.GetUtcNow(), accountId, keyId, serviceId, "v1",
            succeeded ? CallOutcome.Succeeded : CallOutcome.UpstreamFailed, null, succeeded ? 200 : 502, 1, 1, 3, charged, "EUR", null,
            admitted.Reserved, admitted.Hold, admitted.WindowOffsetMinutes, admitted.Epoch);

    private async Task<string> CreateServiceAsync()
    {
        var providerId = TestIds.Provider();
        var serviceId = TestIds.Service();
        await fixture.Grains.GetGrain<IProviderGrain>(providerId).UpsertAsync(new ProviderSpec("p", null));
        await fixture.Grains.GetGrain<IDataServiceGrain>(serviceId).UpsertAsync(new DataServiceSpec("s", providerId, "http://127.0.0.1:9/x", 3, "EUR", null, 1000, Status: ServiceStatus.Published));
        return serviceId;
    }
}
