using Marketplace.Silo.Tests.Infrastructure;
using Npgsql;

namespace Marketplace.Silo.Tests.Hosting;

[Collection(PostgresCollection.Name)]
public sealed class PersistenceTests(PostgresFixture postgres)
{
    [Fact]
    public async Task GrainState_WrittenByOneSilo_IsReadBackAfterRestart()
    {
        var connectionString = await postgres.CreateDatabaseAsync("restart");
        var cluster = "restart-" + Guid.NewGuid().ToString("N")[..8];
        var provider = await TestHosts.StartProviderAsync();
        string keyId;
        await using (var first = await TestHosts.StartMarketplaceAsync(connectionString, cluster))
        {
            var grains = first.Grains;
            await grains.GetGrain<IProviderGrain>("restart-prov").UpsertAsync(new ProviderSpec("P", null));
            await grains.GetGrain<IDataServiceGrain>("restart-svc").UpsertAsync(
                new DataServiceSpec("S", "restart-prov", provider.Urls.First() + "/phone", 3, "EUR", null, 5000, Status: ServiceStatus.Published));
            await grains.GetGrain<IAccountGrain>("restart-acct").CreateAsync(new AccountSpec("A", "EUR", 0));
            await grains.GetGrain<IAccountGrain>("restart-acct").TopUpAsync(100, "test");
            var created = await grains.GetGrain<IApiKeyGrain>("restartkey").CreateAsync(new ApiKeySpec("restart-acct", "k", ["restart-svc"], null));
            keyId = created.Key.KeyId;
            var pipeline = grains.GetGrain<ICallPipelineGrain>(0);
            var result = await pipeline.CallAsync(new CallRequest("restart-svc", created.ApiKey, "GET", "/verify", "?number=%2B4930123456", null, null, null));
            Assert.Equal(CallOutcome.Succeeded, result.Outcome);
            await WaitAsync(async () => (await grains.GetGrain<IAccountGrain>("restart-acct").GetAsync())!.Usage.Calls == 1);
        }

        await using var second = await TestHosts.StartMarketplaceAsync(connectionString, cluster);
        var account = await second.Grains.GetGrain<IAccountGrain>("restart-acct").GetAsync();
        var key = await second.Grains.GetGrain<IApiKeyGrain>(keyId).GetAsync();
        var service = await second.Grains.GetGrain<IDataServiceGrain>("restart-svc").GetAsync();
        await provider.DisposeAsync();

        Assert.NotNull(account);
        Assert.Equal(97, account.Balance);
        Assert.Equal(1, account.Usage.Calls);
        Assert.Equal([keyId], account.KeyIds);
        Assert.NotNull(key);
        Assert.Equal(1, key.Usage.Calls);
        Assert.NotNull(service);
        Assert.Equal(3, service.Counters.Revenue);
    }

    [Fact]
    public async Task GrainState_IsStoredWithoutTheSecret()
    {
        var connectionString = await postgres.CreateDatabaseAsync("nosecret");
        var cluster = "nosecret-" + Guid.NewGuid().ToString("N")[..8];
        await using var host = await TestHosts.StartMarketplaceAsync(connectionString, cluster);
        await host.Grains.GetGrain<IAccountGrain>("ns-acct").CreateAsync(new AccountSpec("A", "EUR", 0));
        var created = await host.Grains.GetGrain<IApiKeyGrain>("nosecretkey").CreateAsync(new ApiKeySpec("ns-acct", "k", ["some-svc"], null));
        var secret = created.ApiKey.Split('.')[1];

        await using var connection = new NpgsqlConnection(connectionString);
        await connection.OpenAsync();
        await using var command = new NpgsqlCommand("SELECT payload FROM orleans_grain_state WHERE payload IS NOT NULL", connection);
        await using var reader = await command.ExecuteReaderAsync();
        var rows = 0;
        while (await reader.ReadAsync())
        {
            rows++;
            var payload = System.Text.Encoding.UTF8.GetString((byte[])reader[0]);
            Assert.DoesNotContain(secret, payload);
        }

        Assert.True(rows >= 2, $"expected the account and key rows, found {rows}");
    }

    private static async Task WaitAsync(Func<Task<bool>> condition)
    {
        for (var attempt = 0; attempt < 500 && !await condition(); attempt++)
        {
            await Task.Delay(10);
        }
    }
}
