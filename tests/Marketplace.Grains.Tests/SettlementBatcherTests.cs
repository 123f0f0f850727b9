using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Options;

namespace Marketplace.Grains.Tests;

[Collection(ClusterCollection.Name)]
public sealed class SettlementBatcherTests(ClusterFixture fixture)
{
    [Theory]
    [InlineData(20)]
    [InlineData(0)]
    public async Task Record_ManyCallsOverKeysAndServices_AddUpExactlyOnAccountKeysAndServices(int intervalMs)
    {
        var accountId = await fixture.CreateAccountAsync(balance: 1_000);
        var serviceA = await CreateServiceAsync();
        var serviceB = await CreateServiceAsync();
        var (keyOne, secretOne, _) = await fixture.CreateKeyAsync(accountId, [serviceA, serviceB]);
        var (keyTwo, secretTwo, _) = await fixture.CreateKeyAsync(accountId, [serviceA]);
        var account = fixture.Grains.GetGrain<IAccountGrain>(accountId);
        var batcher = new SettlementBatcher(fixture.Grains, Options.Create(new MeteringOptions { SettleInterval = TimeSpan.FromMilliseconds(intervalMs) }),
            TimeProvider.System, NullLogger<SettlementBatcher>.Instance);

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
            batcher.Record(accountId, keyId, service, 3, succeeded ? 3 : 0, succeeded, admitted.Hold);
        }

        var beforeFlush = await account.GetAsync();
        batcher.Flush();
        var info = await Poll.UntilAsync(() => account.GetAsync(), a => a!.Usage.Calls == 30);
        var one = await Poll.UntilAsync(() => fixture.Grains.GetGrain<IApiKeyGrain>(keyOne).GetAsync(), k => k!.Usage.Calls == 20);
        var two = await Poll.UntilAsync(() => fixture.Grains.GetGrain<IApiKeyGrain>(keyTwo).GetAsync(), k => k!.Usage.Calls == 10);
        var a = await Poll.UntilAsync(() => fixture.Grains.GetGrain<IDataServiceGrain>(serviceA).GetAsync(), s => s!.Counters.Calls == 20);

        if (intervalMs > 0)
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

    private async Task<string> CreateServiceAsync()
    {
        var providerId = TestIds.Provider();
        var serviceId = TestIds.Service();
        await fixture.Grains.GetGrain<IProviderGrain>(providerId).UpsertAsync(new ProviderSpec("p", null));
        await fixture.Grains.GetGrain<IDataServiceGrain>(serviceId).UpsertAsync(new DataServiceSpec("s", providerId, "http://127.0.0.1:9/x", 3, "EUR", null, 1000, Status: ServiceStatus.Published));
        return serviceId;
    }
}
