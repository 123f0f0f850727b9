using Marketplace.Silo.Hosting;
using Marketplace.Silo.Tests.Infrastructure;
using Microsoft.AspNetCore.Builder;

namespace Marketplace.Silo.Tests.Access;

/// <summary>Two marketplace silos, each with its own front door, in one cluster on one PostgreSQL, before the sample provider.</summary>
public sealed class TwoSiloFixture(PostgresFixture postgres) : IAsyncLifetime
{
    private WebApplication? _provider;

    public MarketplaceHost First { get; private set; } = null!;

    public MarketplaceHost Second { get; private set; } = null!;

    public HttpClient Admin { get; private set; } = null!;

    public HttpClient FrontDoorA { get; private set; } = null!;

    public HttpClient FrontDoorB { get; private set; } = null!;

    public string ProviderUrl => _provider!.Urls.First();

    public async ValueTask InitializeAsync()
    {
        _provider = await TestHosts.StartProviderAsync();
        var connectionString = await postgres.CreateDatabaseAsync("twosilo");
        var cluster = "two-" + Guid.NewGuid().ToString("N")[..8];
        First = await TestHosts.StartMarketplaceAsync(connectionString, cluster);
        Second = await TestHosts.StartMarketplaceAsync(connectionString, cluster);
        FrontDoorA = new HttpClient { BaseAddress = First.BaseAddress };
        FrontDoorB = new HttpClient { BaseAddress = Second.BaseAddress };
        Admin = new HttpClient { BaseAddress = First.BaseAddress };
        Admin.DefaultRequestHeaders.Add("X-Admin-Key", TestHosts.AdminKey);
    }

    public async ValueTask DisposeAsync()
    {
        FrontDoorA?.Dispose();
        FrontDoorB?.Dispose();
        Admin?.Dispose();
        if (Second is not null)
        {
            await Second.DisposeAsync();
        }

        if (First is not null)
        {
            await First.DisposeAsync();
        }

        if (_provider is not null)
        {
            await _provider.DisposeAsync();
        }
    }
}
