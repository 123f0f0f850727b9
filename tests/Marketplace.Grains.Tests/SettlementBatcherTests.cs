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

    private async Task<string> CreateServiceAsync()
    {
        var providerId = TestIds.Provider();
        var serviceId = TestIds.Service();
        await fixture.Grains.GetGrain<IProviderGrain>(providerId).UpsertAsync(new ProviderSpec("p", null));
        await fixture.Grains.GetGrain<IDataServiceGrain>(serviceId).UpsertAsync(new DataServiceSpec("s", providerId, "http://127.0.0.1:9/x", 3, "EUR", null, 1000, Status: ServiceStatus.Published));
        return serviceId;
    }
}
