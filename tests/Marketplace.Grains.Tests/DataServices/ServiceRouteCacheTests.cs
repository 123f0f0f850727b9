using Microsoft.Extensions.DependencyInjection;

namespace Marketplace.Grains.Tests.DataServices;

[Collection(ClusterCollection.Name)]
public sealed class ServiceRouteCacheTests(ClusterFixture fixture)
{
    private static Dictionary<string, int> Weights(params (string Version, int Weight)[] weights) =>
        weights.ToDictionary(w => w.Version, w => w.Weight);

    private ServiceRouteCache CacheOnSecondSilo() =>
        fixture.Cluster.GetSiloServiceProvider(fixture.Cluster.Silos[1].SiloAddress).GetRequiredService<ServiceRouteCache>();

    private async Task<IReadOnlyDictionary<string, int>> CachedWeightsAsync(ServiceRouteCache cache, string serviceId) =>
        (await cache.GetAsync(serviceId))!.Route.Weights;

    [Fact]
    public async Task GetAsync_OnOtherSiloAfterReleaseAndRollback_OldWeightsUntilMaxAgeThenNew()
    {
        var providerId = TestIds.Provider();
        var serviceId = TestIds.Service();
        var service = fixture.Grains.GetGrain<IDataServiceGrain>(serviceId);
        await service.UpsertAsync(new DataServiceSpec("Cached", providerId, "https://upstream.example/api", 1, ClusterFixture.Currency, null, 2000,
            Status: ServiceStatus.Published));
        await service.UpsertVersionAsync("v2", new ServiceVersionSpec("https://upstream.example/v2"), providerId);
        var cache = CacheOnSecondSilo();
        Assert.Equal(TimeSpan.FromSeconds(1), cache.MaxAge);

        var initial = await CachedWeightsAsync(cache, serviceId);
        await service.SetReleaseAsync(new ReleaseSpec(Weights(("v1", 10), ("v2", 90))), providerId);
        var beforeClockMoved = await CachedWeightsAsync(cache, serviceId);
        fixture.Time.Advance(cache.MaxAge);
        var released = await cache.GetAsync(serviceId);

        await service.RollbackAsync(providerId);
        var beforeClockMovedAgain = await CachedWeightsAsync(cache, serviceId);
        fixture.Time.Advance(cache.MaxAge);
        var rolledBack = await cache.GetAsync(serviceId);

        Assert.Equal(Weights(("v1", 100)), initial);
        Assert.Equal(Weights(("v1", 100)), beforeClockMoved);
        Assert.Equal(Weights(("v1", 10), ("v2", 90)), released!.Route.Weights);
        Assert.Equal(Weights(("v1", 10), ("v2", 90)), beforeClockMovedAgain);
        Assert.Equal(Weights(("v1", 100)), rolledBack!.Route.Weights);
        Assert.Equal((await service.GetRouteAsync())!.Revision, rolledBack.Route.Revision);

        // The versions did not change, so the adapters compiled for them are reused across release changes.
        Assert.Same(released.Adapters["v2"], rolledBack.Adapters["v2"]);
    }

    [Fact]
    public async Task GetAsync_UnknownService_Null()
    {
        Assert.Null(await CacheOnSecondSilo().GetAsync(TestIds.Service()));
    }
}
