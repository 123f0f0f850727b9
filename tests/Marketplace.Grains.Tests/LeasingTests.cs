using Microsoft.Extensions.DependencyInjection;
using Orleans.Hosting;
using Orleans.TestingHost;

namespace Marketplace.Grains.Tests;

/// <summary>A two-silo cluster with balance leasing on (Metering:LeaseCalls = 32), lapsed leases of silent holders reclaimed after 5 s, and the real clock.</summary>
public sealed class LeasingClusterFixture : TwoSiloCluster<LeasingClusterFixture.SiloConfigurator>
{
    /// <summary>The test classes that load this cluster heavily, run one after the other.</summary>
    public const string Collection = "leasing";

    public sealed class SiloConfigurator : ISiloConfigurator
    {
        public void Configure(ISiloBuilder siloBuilder)
        {
            siloBuilder.AddMemoryGrainStorage(StorageNames.Marketplace);
            siloBuilder.Services.AddMarketplaceGrains();
            siloBuilder.Services.Configure<MeteringOptions>(o => o.LeaseCalls = 32);

            // A front door that vanished is given up on 5 s after it went silent (10 s in production); longer than a refusal
            // waits for recalled leases (4 s here), while which a live front door's callers may all be waiting at the key.
            siloBuilder.Services.Configure<LeaseOptions>(o => o.ReclaimAfter = TimeSpan.FromSeconds(5));
        }
    }
}

// Not run alongside the front doors' lease tests: both load the machine with thousands of concurrent admissions, and an
// admission refused only after its recall wait ran out would be a false refusal of the machine's making.
[Collection(LeasingClusterFixture.Collection)]
public sealed class LeasingTests(LeasingClusterFixture fixture) : IClassFixture<LeasingClusterFixture>
{
    [Theory]
    [InlineData(20_000, 1, 30_000)]
    [InlineData(3_000, 7, 1_000)]
    public async Task Admit_ManyKeysLeasingOneBalance_AdmitsExactlyWhatTheBalanceCovers(long balance, long price, int calls)
    {
        var (accountId, keys, serviceId) = await CreateAsync(balance, keyCount: 5);

        var results = await Task.WhenAll(Enumerable.Range(0, calls).Select(i =>
        {
            var (keyId, secret) = keys[i % keys.Count];
            return fixture.Grains.GetGrain<IApiKeyGrain>(keyId).AdmitAsync(new AdmitRequest(secret, serviceId, price, "EUR", "t" + i)).AsTask();
        }));

        var expected = (int)Math.Min(calls, balance / price);
        Assert.Equal(expected, results.Count(r => r.Outcome == AdmitOutcome.Admitted));
        Assert.Equal(calls - expected, results.Count(r => r.Outcome == AdmitOutcome.InsufficientBalance));

        // Charge every admitted call; once the keys hand back what they still lease, nothing stays reserved.
        var account = fixture.Grains.GetGrain<IAccountGrain>(accountId);
        await account.SettleBatchAsync(new SettlementBatch(expected * price, expected * price, [new ServiceUsageDelta(serviceId, expected, expected, 0, expected * price)]));
        foreach (var (keyId, _) in keys)
        {
            await fixture.Grains.GetGrain<IApiKeyGrain>(keyId).RecallLeaseAsync();
        }

        var info = await Poll.UntilAsync(() => account.GetAsync(), a => a!.Reserved == 0);
        Assert.Equal(0, info!.Reserved);
        Assert.Equal(balance - (expected * price), info.Balance);
    }

    [Fact]
    public async Task Admit_WithPlentyOfBalance_LeasesSoTheAccountSeesFewRequests()
    {
        var (accountId, keys, serviceId) = await CreateAsync(1_000_000, keyCount: 1);
        var (keyId, secret) = keys[0];

        var first = await fixture.Grains.GetGrain<IApiKeyGrain>(keyId).AdmitAsync(new AdmitRequest(secret, serviceId, 1, "EUR", "first"));
        var afterFirst = await fixture.Grains.GetGrain<IAccountGrain>(accountId).GetAsync();

        Assert.Equal(AdmitOutcome.Admitted, first.Outcome);
        Assert.Equal(1 + 32, afterFirst!.Reserved);
    }

    private async Task<(string AccountId, List<(string KeyId, string Secret)> Keys, string ServiceId)> CreateAsync(long balance, int keyCount)
    {
        var accountId = TestIds.Account();
        var providerId = TestIds.Provider();
        var serviceId = TestIds.Service();
        await fixture.Grains.GetGrain<IProviderGrain>(providerId).UpsertAsync(new ProviderSpec("p", null));
        await fixture.Grains.GetGrain<IDataServiceGrain>(serviceId).UpsertAsync(new DataServiceSpec("s", providerId, "http://127.0.0.1:9/x", 1, "EUR", null, 1000, Status: ServiceStatus.Published));
        await fixture.Grains.GetGrain<IAccountGrain>(accountId).CreateAsync(new AccountSpec("a", "EUR", 0));
        await fixture.Grains.GetGrain<IAccountGrain>(accountId).TopUpAsync(balance, "test");
        var keys = new List<(string, string)>();
        for (var i = 0; i < keyCount; i++)
        {
            var keyId = TestIds.Key();
            var created = await fixture.Grains.GetGrain<IApiKeyGrain>(keyId).CreateAsync(new ApiKeySpec(accountId, "k", [serviceId], null));
            keys.Add((keyId, created.ApiKey[(created.ApiKey.IndexOf('.') + 1)..]));
        }

        return (accountId, keys, serviceId);
    }
}
