namespace Marketplace.Grains.Tests;

[Collection(ClusterCollection.Name)]
public sealed class RegistryAndProviderGrainTests(ClusterFixture fixture)
{
    private IRegistryGrain Registry => fixture.Grains.GetGrain<IRegistryGrain>(IRegistryGrain.Default);

    [Fact]
    public async Task Registry_AfterCreatingEntities_ListsEachIdUnderItsKind()
    {
        var providerId = TestIds.Provider();
        var serviceId = TestIds.Service();
        var accountId = TestIds.Account();

        await fixture.Grains.GetGrain<IProviderGrain>(providerId).UpsertAsync(new ProviderSpec("Seller", "ops@seller.example"));
        await fixture.Grains.GetGrain<IDataServiceGrain>(serviceId).UpsertAsync(
            new DataServiceSpec("Data", providerId, "https://seller.example", 1, "EUR", null, 1000, Status: ServiceStatus.Published));
        await fixture.Grains.GetGrain<IAccountGrain>(accountId).CreateAsync(new AccountSpec("Buyer", "EUR", 0));

        var providers = await Registry.ListAsync(EntityKind.Provider);
        var services = await Registry.ListAsync(EntityKind.Service);
        var accounts = await Registry.ListAsync(EntityKind.Account);

        Assert.Contains(providerId, providers);
        Assert.Contains(serviceId, services);
        Assert.Contains(accountId, accounts);
        Assert.DoesNotContain(serviceId, providers);
        Assert.DoesNotContain(accountId, services);
        Assert.DoesNotContain(providerId, accounts);
        Assert.Equal(services.Order(StringComparer.Ordinal), services);
    }

    [Fact]
    public async Task Registry_RepeatedUpserts_ListIdOnce()
    {
        var providerId = TestIds.Provider();
        var provider = fixture.Grains.GetGrain<IProviderGrain>(providerId);

        await provider.UpsertAsync(new ProviderSpec("Seller", null));
        await provider.UpsertAsync(new ProviderSpec("Seller renamed", null));

        Assert.Single(await Registry.ListAsync(EntityKind.Provider), id => id == providerId);
        Assert.Equal("Seller renamed", (await provider.GetAsync())!.Name);
    }

    [Fact]
    public async Task Registry_FailedCreation_IsNotListed()
    {
        var accountId = TestIds.Account();

        await Assert.ThrowsAsync<ArgumentException>(
            () => fixture.Grains.GetGrain<IAccountGrain>(accountId).CreateAsync(new AccountSpec("Buyer", "eur", 0)));

        Assert.DoesNotContain(accountId, await Registry.ListAsync(EntityKind.Account));
    }

    [Fact]
    public async Task Provider_InvalidEmail_ThrowsAndIsNotCreated()
    {
        var provider = fixture.Grains.GetGrain<IProviderGrain>(TestIds.Provider());

        await Assert.ThrowsAsync<ArgumentException>(() => provider.UpsertAsync(new ProviderSpec("Seller", "not-an-email")));

        Assert.Null(await provider.GetAsync());
    }
}
