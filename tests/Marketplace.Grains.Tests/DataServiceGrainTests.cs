namespace Marketplace.Grains.Tests;

[Collection(ClusterCollection.Name)]
public sealed class DataServiceGrainTests(ClusterFixture fixture)
{
    private static DataServiceSpec Spec(string providerId, long price = 5) =>
        new("Weather", providerId, "https://upstream.example/api", price, "EUR", "Forecasts", 2000);

    private IDataServiceGrain Service(string serviceId) => fixture.Grains.GetGrain<IDataServiceGrain>(serviceId);

    [Fact]
    public async Task Upsert_Repeatedly_BumpsRevisionAndRouteReflectsLatest()
    {
        var serviceId = TestIds.Service();
        var providerId = TestIds.Provider();
        var service = Service(serviceId);

        var first = await service.UpsertAsync(Spec(providerId, price: 5));
        fixture.Time.Advance(TimeSpan.FromMinutes(1));
        var second = await service.UpsertAsync(Spec(providerId, price: 9) with { UpstreamBaseUrl = "https://upstream.example/v2/" });
        var route = await service.GetRouteAsync();

        Assert.Equal(1, first.Revision);
        Assert.Equal(2, second.Revision);
        Assert.Equal(first.CreatedAt, second.CreatedAt);
        Assert.Equal(fixture.Time.GetUtcNow(), second.UpdatedAt);
        Assert.True(second.UpdatedAt > first.UpdatedAt);
        Assert.NotNull(route);
        Assert.Equal((serviceId, 9L, "EUR", 2), (route.ServiceId, route.PricePerCall, route.Currency, route.Revision));
        var v1 = Assert.Single(route.Versions);
        Assert.Equal(new VersionRoute(DataServiceGrain.DefaultVersion, 2, new ServiceVersionSpec("https://upstream.example/v2", 2000)), v1);
        Assert.Equal(100, Assert.Single(route.Weights, w => w.Key == DataServiceGrain.DefaultVersion).Value);
        Assert.Equal(2, (await service.GetAsync())!.Revision);
    }

    [Fact]
    public async Task GetRoute_UnknownService_Null()
    {
        Assert.Null(await Service(TestIds.Service()).GetRouteAsync());
        Assert.Null(await Service(TestIds.Service()).GetAsync());
    }

    [Theory]
    [InlineData("https://upstream.example/api", -1L, "EUR", 2000)]
    [InlineData("ftp://x", 5L, "EUR", 2000)]
    [InlineData("not a url", 5L, "EUR", 2000)]
    [InlineData("https://upstream.example/api?key=1", 5L, "EUR", 2000)]
    [InlineData("https://upstream.example/api", 5L, "eur", 2000)]
    [InlineData("https://upstream.example/api", 5L, "EUR", 10)]
    public async Task Upsert_InvalidSpec_ThrowsArgumentExceptionAndLeavesServiceUnchanged(
        string url, long price, string currency, int timeoutMs)
    {
        var serviceId = TestIds.Service();
        var providerId = TestIds.Provider();
        var service = Service(serviceId);
        await service.UpsertAsync(Spec(providerId, price: 5));

        await Assert.ThrowsAsync<ArgumentException>(() => service.UpsertAsync(
            new DataServiceSpec("Weather", providerId, url, price, currency, null, timeoutMs)));

        var info = await service.GetAsync();
        Assert.Equal(1, info!.Revision);
        Assert.Equal(5, info.PricePerCall);
        Assert.Equal("https://upstream.example/api", info.UpstreamBaseUrl);
        var route = await service.GetRouteAsync();
        Assert.Equal((5L, 1), (route!.PricePerCall, route.Revision));
        Assert.Equal(new VersionRoute(DataServiceGrain.DefaultVersion, 1, new ServiceVersionSpec("https://upstream.example/api", 2000)), Assert.Single(route.Versions));
    }

    [Fact]
    public async Task Upsert_InvalidSpecForNewService_DoesNotCreateIt()
    {
        var serviceId = TestIds.Service();

        await Assert.ThrowsAsync<ArgumentException>(() => Service(serviceId).UpsertAsync(Spec(TestIds.Provider(), price: -1)));

        Assert.Null(await Service(serviceId).GetAsync());
    }

    [Fact]
    public async Task Upsert_OtherProvider_ThrowsInvalidOperationAndKeepsOwner()
    {
        var serviceId = TestIds.Service();
        var providerId = TestIds.Provider();
        await Service(serviceId).UpsertAsync(Spec(providerId));

        await Assert.ThrowsAsync<InvalidOperationException>(() => Service(serviceId).UpsertAsync(Spec(TestIds.Provider(), price: 1)));

        var info = await Service(serviceId).GetAsync();
        Assert.Equal(providerId, info!.ProviderId);
        Assert.Equal(1, info.Revision);
        Assert.Equal(5, info.PricePerCall);
    }

    [Fact]
    public async Task Record_SettledCalls_CountersShowInGet()
    {
        var serviceId = TestIds.Service();
        var service = Service(serviceId);
        await service.UpsertAsync(Spec(TestIds.Provider()));

        await service.RecordAsync(true, 5);
        await service.RecordAsync(true, 5);
        await service.RecordAsync(false, 0);
        var info = await Poll.UntilAsync(async () => (await service.GetAsync())!, s => s.Counters.Calls == 3);

        Assert.Equal(new ServiceCounters(3, 2, 1, 10), info.Counters);
        Assert.Equal(1, info.Revision);
    }

    [Fact]
    public async Task SettledThroughTheJournal_ThenDeactivate_CountersAreRebuiltFromTheJournal()
    {
        var serviceId = TestIds.Service();
        var service = Service(serviceId);
        await service.UpsertAsync(Spec(TestIds.Provider()));
        await fixture.SettleThroughJournalAsync(TestIds.Key(), serviceId, [new AdmitResult(AdmitOutcome.Admitted, TestIds.Account(), 7, 0, "EUR")]);
        Assert.Equal(1, (await service.GetAsync())!.Counters.Calls);

        await ClusterFixture.DeactivateAsync(service);

        Assert.Equal(new ServiceCounters(1, 1, 0, 7), (await service.GetAsync())!.Counters);
    }

    [Fact]
    public async Task Record_OnNeverCreatedService_DoesNotCreateTheService()
    {
        var serviceId = TestIds.Service();
        var service = Service(serviceId);

        await service.RecordAsync(false, 0);
        Assert.Null(await service.GetAsync());
        await ClusterFixture.DeactivateAsync(service);

        // A stray counter update must not turn into a stored, empty service that blocks its creation.
        var phantom = await service.GetAsync();
        var phantomRoute = await service.GetRouteAsync();
        var creation = await Record.ExceptionAsync(() => service.UpsertAsync(Spec(TestIds.Provider())));
        Assert.Null(creation);
        Assert.Null(phantom);
        Assert.Null(phantomRoute);
        Assert.Equal(1, (await service.GetAsync())!.Revision);
    }
}
