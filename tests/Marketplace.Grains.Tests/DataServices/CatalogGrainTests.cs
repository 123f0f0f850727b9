namespace Marketplace.Grains.Tests.DataServices;

/// <remarks>The catalog is one grain shared by every test in the cluster: each test names its services with a fresh
/// prefix (and category) and searches for it, so other tests' entries never match.</remarks>
[Collection(ClusterCollection.Name)]
public sealed class CatalogGrainTests(ClusterFixture fixture)
{
    private ICatalogGrain Catalog => fixture.Grains.GetGrain<ICatalogGrain>(ICatalogGrain.Default);

    private static string Unique() => "cat" + Guid.NewGuid().ToString("N")[..12];

    private async Task<string> CreateAsync(string name, string? category = null, ServiceStatus status = ServiceStatus.Published, string? serviceId = null)
    {
        serviceId ??= TestIds.Service();
        var service = fixture.Grains.GetGrain<IDataServiceGrain>(serviceId);
        await service.UpsertAsync(new DataServiceSpec(name, TestIds.Provider(), "https://upstream.example/api", 3, ClusterFixture.Currency,
            "about " + name, 2000, Category: category, Status: status == ServiceStatus.Draft ? null : ServiceStatus.Published));
        if (status is ServiceStatus.Suspended or ServiceStatus.Retired)
        {
            await service.SetStatusAsync(status, null);
        }

        return serviceId;
    }

    [Fact]
    public async Task Search_NameSubstringInAnyCase_OnlyMatchesSortedByNameThenId()
    {
        var prefix = Unique();
        var bravo = await CreateAsync($"{prefix} Bravo");
        var alpha = await CreateAsync($"{prefix} alpha");
        var twinB = await CreateAsync($"{prefix} Twin", serviceId: "svc-b-" + prefix);
        var twinA = await CreateAsync($"{prefix} Twin", serviceId: "svc-a-" + prefix);
        await CreateAsync("unrelated " + Unique());

        var page = await Catalog.SearchAsync(new CatalogQuery(Search: prefix.ToUpperInvariant()));

        Assert.Equal([alpha, bravo, twinA, twinB], page.Items.Select(e => e.Id));
        Assert.Equal(4, page.Total);
        var entry = page.Items[0];
        Assert.Equal(($"{prefix} alpha", 3L, ClusterFixture.Currency, "about " + $"{prefix} alpha", ServiceStatus.Published),
            (entry.Name, entry.PricePerCall, entry.Currency, entry.Description, entry.Status));
    }

    [Fact]
    public async Task Search_ByCategory_OnlyThatCategoryInAnyCase()
    {
        var category = Unique();
        var inCategory = await CreateAsync("Phone " + Unique(), category);
        var other = await CreateAsync("Phone " + Unique(), Unique());

        var page = await Catalog.SearchAsync(new CatalogQuery(Category: category.ToUpperInvariant()));

        Assert.Equal([inCategory], page.Items.Select(e => e.Id));
        Assert.Equal(category, page.Items[0].Category);
        Assert.DoesNotContain(other, page.Items.Select(e => e.Id));
    }

    [Fact]
    public async Task Search_ByStatus_OnlyThoseStatuses()
    {
        var prefix = Unique();
        var draft = await CreateAsync($"{prefix} a", status: ServiceStatus.Draft);
        var published = await CreateAsync($"{prefix} b");
        var suspended = await CreateAsync($"{prefix} c", status: ServiceStatus.Suspended);
        var retired = await CreateAsync($"{prefix} d", status: ServiceStatus.Retired);

        var listed = await Catalog.SearchAsync(new CatalogQuery(prefix, Statuses: [ServiceStatus.Published, ServiceStatus.Suspended]));
        var onlySuspended = await Catalog.SearchAsync(new CatalogQuery(prefix, Statuses: [ServiceStatus.Suspended]));
        var all = await Catalog.SearchAsync(new CatalogQuery(prefix));

        Assert.Equal([published, suspended], listed.Items.Select(e => e.Id));
        Assert.Equal([suspended], onlySuspended.Items.Select(e => e.Id));
        Assert.Equal(ServiceStatus.Suspended, onlySuspended.Items[0].Status);
        Assert.Equal([draft, published, suspended, retired], all.Items.Select(e => e.Id));
    }

    [Fact]
    public async Task Search_ServiceChanged_EntryFollows()
    {
        var prefix = Unique();
        var serviceId = await CreateAsync($"{prefix} old");

        await fixture.Grains.GetGrain<IDataServiceGrain>(serviceId).SetStatusAsync(ServiceStatus.Suspended, null);
        var page = await Catalog.SearchAsync(new CatalogQuery(prefix));

        Assert.Equal(ServiceStatus.Suspended, Assert.Single(page.Items).Status);
    }

    [Fact]
    public async Task Search_Paged_TotalPageAndClampedPageSize()
    {
        var prefix = Unique();
        var ids = new List<string>();
        for (var i = 0; i < 5; i++)
        {
            ids.Add(await CreateAsync($"{prefix} {i}"));
        }

        var second = await Catalog.SearchAsync(new CatalogQuery(prefix, Page: 2, PageSize: 2));
        var last = await Catalog.SearchAsync(new CatalogQuery(prefix, Page: 3, PageSize: 2));
        var beyond = await Catalog.SearchAsync(new CatalogQuery(prefix, Page: 4, PageSize: 2));
        var huge = await Catalog.SearchAsync(new CatalogQuery(prefix, Page: 0, PageSize: 500));
        var tiny = await Catalog.SearchAsync(new CatalogQuery(prefix, PageSize: 0));

        Assert.Equal(ids[2..4], second.Items.Select(e => e.Id));
        Assert.Equal((2, 2, 5), (second.Page, second.PageSize, second.Total));
        Assert.Equal([ids[4]], last.Items.Select(e => e.Id));
        Assert.Empty(beyond.Items);
        Assert.Equal(5, beyond.Total);
        Assert.Equal((1, CatalogGrain.MaxPageSize, 5), (huge.Page, huge.PageSize, huge.Items.Count));
        Assert.Equal(100, CatalogGrain.MaxPageSize);
        Assert.Equal((1, 1), (tiny.PageSize, tiny.Items.Count));
    }
}
