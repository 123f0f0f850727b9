using System.Text.Json;
using Marketplace.Silo.Hosting;
using Microsoft.AspNetCore.Builder;

namespace Marketplace.Silo.Tests.Infrastructure;

/// <summary>
/// A running marketplace (real Kestrel on loopback, real PostgreSQL) in front of its own instance of the real sample
/// provider. Fixtures that need other settings derive from it.
/// </summary>
public class MarketplaceFixture : IAsyncLifetime
{
    public static readonly JsonSerializerOptions Json = new(JsonSerializerDefaults.Web);

    private readonly PostgresFixture _postgres;
    private readonly string _name;
    private readonly IDictionary<string, string?>? _settings;
    private MarketplaceHost? _host;

    public MarketplaceFixture(PostgresFixture postgres)
        : this(postgres, "e2e", null)
    {
    }

    /// <summary>A marketplace on its own database named after <paramref name="name"/>, with extra configuration.</summary>
    protected MarketplaceFixture(PostgresFixture postgres, string name, IDictionary<string, string?>? settings)
    {
        _postgres = postgres;
        _name = name;
        _settings = settings;
    }

    /// <summary>The database of this fixture's marketplace.</summary>
    public string ConnectionString => Host.ConnectionString;
    private WebApplication? _provider;

    public MarketplaceHost Host => _host ?? throw new InvalidOperationException("Not started.");

    public string ProviderUrl => _provider?.Urls.First() ?? throw new InvalidOperationException("Not started.");

    /// <summary>A client with no credentials.</summary>
    public HttpClient Anonymous { get; private set; } = null!;

    /// <summary>A client that sends the admin key.</summary>
    public HttpClient Admin { get; private set; } = null!;

    /// <summary>A client for the sample provider's control and stats endpoints.</summary>
    public HttpClient Provider { get; private set; } = null!;

    public async ValueTask InitializeAsync()
    {
        _provider = await TestHosts.StartProviderAsync();
        var connectionString = await _postgres.CreateDatabaseAsync(_name);
        _host = await TestHosts.StartMarketplaceAsync(connectionString, _name + "-" + Guid.NewGuid().ToString("N")[..8], _settings);
        Anonymous = new HttpClient { BaseAddress = _host.BaseAddress };
        Admin = new HttpClient { BaseAddress = _host.BaseAddress };
        Admin.DefaultRequestHeaders.Add("X-Admin-Key", TestHosts.AdminKey);
        Provider = new HttpClient { BaseAddress = new Uri(ProviderUrl) };
        Api = new AdminApi(Admin, ProviderUrl);
    }

    /// <summary>Admin helpers bound to this marketplace and provider.</summary>
    public AdminApi Api { get; private set; } = null!;

    /// <inheritdoc cref="AdminApi.CreateConsumerAsync"/>
    public Task<Consumer> CreateConsumerAsync(long balance, long price = 5, string upstreamPath = "/phone", int timeoutMs = 5000, string? upstreamBaseUrl = null) =>
        Api.CreateConsumerAsync(balance, price, upstreamPath, timeoutMs, upstreamBaseUrl);

    public Task<JsonElement> PostOk(string path, object body) => Api.PostOk(path, body);

    public Task<JsonElement> WaitForAccountAsync(string accountId, Func<JsonElement, bool> done) => Api.WaitForAccountAsync(accountId, done);

    public virtual async ValueTask DisposeAsync()
    {
        Anonymous?.Dispose();
        Admin?.Dispose();
        Provider?.Dispose();
        if (_host is not null)
        {
            await _host.DisposeAsync();
        }

        if (_provider is not null)
        {
            await _provider.DisposeAsync();
        }
    }
}
