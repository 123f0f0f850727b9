using System.Security.Cryptography;
using Marketplace.Silo.Tests.Infrastructure;
using Marketplace.Silo.Tests.Metering;
using Microsoft.AspNetCore.Builder;

namespace Marketplace.Silo.Tests.Hostile;

/// <summary>
/// A marketplace of its own (own database, so whole-catalog snapshots see only this test's data) with a Secrets:Key
/// (alerts work) and no refresh grace period (a used refresh token is dead at once, so replaying it must fail).
/// </summary>
public sealed class HostileFixture(PostgresFixture postgres) : IAsyncLifetime
{
    private WebApplication? _provider;

    public MarketplaceNode Node { get; private set; } = null!;

    public string ProviderUrl => _provider?.Urls.First() ?? throw new InvalidOperationException("Not started.");

    public async ValueTask InitializeAsync()
    {
        _provider = await TestHosts.StartProviderAsync();
        var connectionString = await postgres.CreateDatabaseAsync("hostile");
        var host = await TestHosts.StartMarketplaceAsync(connectionString, "hostile-" + Guid.NewGuid().ToString("N")[..8], new Dictionary<string, string?>
        {
            ["Secrets:Key"] = Convert.ToBase64String(RandomNumberGenerator.GetBytes(32)),
            ["Tokens:RefreshGracePeriod"] = "00:00:00",
        });
        Node = new MarketplaceNode(host, ProviderUrl);
    }

    public async ValueTask DisposeAsync()
    {
        if (Node is not null)
        {
            await Node.DisposeAsync();
        }

        if (_provider is not null)
        {
            await _provider.DisposeAsync();
        }
    }
}
