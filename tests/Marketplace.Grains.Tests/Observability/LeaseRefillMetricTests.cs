using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Diagnostics.Metrics.Testing;
using System.Diagnostics.Metrics;

namespace Marketplace.Grains.Tests.Observability;

public sealed class LeaseRefillMetricTests(LeasingClusterFixture fixture) : IClassFixture<LeasingClusterFixture>
{
    [Fact]
    public async Task Admit_KeyReceivesALease_CountsOneRefillOnTheSiloOfTheKey()
    {
        var collectors = fixture.Cluster.Silos
            .Select(silo => new MetricCollector<long>(
                fixture.Cluster.GetSiloServiceProvider(silo.SiloAddress).GetRequiredService<IMeterFactory>(), MarketplaceMetrics.MeterName, "marketplace.lease.refills"))
            .ToList();
        try
        {
            var (keyId, secret, serviceId) = await CreateKeyAsync(balance: 1_000_000);
            var key = fixture.Grains.GetGrain<IApiKeyGrain>(keyId);

            // The first admission leases 32 calls' worth; the next ones spend that lease without asking the account.
            for (var i = 0; i < 5; i++)
            {
                Assert.Equal(AdmitOutcome.Admitted, (await key.AdmitAsync(new AdmitRequest(secret, serviceId, 1, "EUR", "t" + i))).Outcome);
            }

            Assert.Equal(1, collectors.Sum(c => c.GetMeasurementSnapshot().EvaluateAsCounter()));
        }
        finally
        {
            collectors.ForEach(c => c.Dispose());
        }
    }

    private async Task<(string KeyId, string Secret, string ServiceId)> CreateKeyAsync(long balance)
    {
        var accountId = TestIds.Account();
        var providerId = TestIds.Provider();
        var serviceId = TestIds.Service();
        await fixture.Grains.GetGrain<IProviderGrain>(providerId).UpsertAsync(new ProviderSpec("p", null));
        await fixture.Grains.GetGrain<IDataServiceGrain>(serviceId).UpsertAsync(new DataServiceSpec("s", providerId, "http://127.0.0.1:9/x", 1, "EUR", null, 1000, Status: ServiceStatus.Published));
        await fixture.Grains.GetGrain<IAccountGrain>(accountId).CreateAsync(new AccountSpec("a", "EUR", 0));
        await fixture.Grains.GetGrain<IAccountGrain>(accountId).TopUpAsync(balance, "test");
        var keyId = TestIds.Key();
        var created = await fixture.Grains.GetGrain<IApiKeyGrain>(keyId).CreateAsync(new ApiKeySpec(accountId, "k", [serviceId], null));
        return (keyId, created.ApiKey[(created.ApiKey.IndexOf('.') + 1)..], serviceId);
    }
}
