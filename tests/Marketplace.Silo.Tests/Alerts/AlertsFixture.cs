using System.Security.Cryptography;
using Marketplace.Silo.Tests.Infrastructure;
using Marketplace.Silo.Tests.Metering;
using Microsoft.AspNetCore.Builder;

namespace Marketplace.Silo.Tests.Alerts;

/// <summary>
/// A marketplace with a Secrets:Key (signing secrets are stored encrypted) that may send webhooks to loopback (the tests'
/// receiver), and, started on first use, one without a Secrets:Key.
/// </summary>
public sealed class AlertsFixture(PostgresFixture postgres) : IAsyncLifetime
{
    private readonly SemaphoreSlim _gate = new(1, 1);
    private WebApplication? _provider;
    private MarketplaceNode? _withoutKey;

    /// <summary>The marketplace alerts are tested on.</summary>
    public MarketplaceNode Node { get; private set; } = null!;

    public async ValueTask InitializeAsync()
    {
        _provider = await TestHosts.StartProviderAsync();
        Node = await StartNodeAsync("alerts", new Dictionary<string, string?>
        {
            ["Secrets:Key"] = Convert.ToBase64String(RandomNumberGenerator.GetBytes(32)),
            ["Alerts:AllowPrivateNetworks"] = "true",
        });
    }

    /// <summary>A marketplace without Secrets:Key, on its own database and cluster.</summary>
    public async Task<MarketplaceNode> WithoutSecretsKeyAsync()
    {
        await _gate.WaitAsync();
        try
        {
            return _withoutKey ??= await StartNodeAsync("nokey", new Dictionary<string, string?>());
        }
        finally
        {
            _gate.Release();
        }
    }

    private async Task<MarketplaceNode> StartNodeAsync(string prefix, Dictionary<string, string?> settings)
    {
        var connectionString = await postgres.CreateDatabaseAsync(prefix);
        var host = await TestHosts.StartMarketplaceAsync(connectionString, prefix + "-" + Guid.NewGuid().ToString("N")[..8], settings);
        return new MarketplaceNode(host, _provider!.Urls.First());
    }

    public async ValueTask DisposeAsync()
    {
        if (_withoutKey is not null)
        {
            await _withoutKey.DisposeAsync();
        }

        if (Node is not null)
        {
            await Node.DisposeAsync();
        }

        if (_provider is not null)
        {
            await _provider.DisposeAsync();
        }

        _gate.Dispose();
    }
}
