using System.Net.Http.Json;
using System.Text.Json;
using Marketplace.Silo.Hosting;
using Microsoft.AspNetCore.Builder;

namespace Marketplace.Silo.Tests.Infrastructure;

/// <summary>A running marketplace (real Kestrel on loopback, real PostgreSQL) in front of the real sample provider.</summary>
public sealed class MarketplaceFixture(PostgresFixture postgres) : IAsyncLifetime
{
    public static readonly JsonSerializerOptions Json = new(JsonSerializerDefaults.Web);

    private MarketplaceHost? _host;
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
        var connectionString = await postgres.CreateDatabaseAsync("e2e");
        _host = await TestHosts.StartMarketplaceAsync(connectionString, "e2e-" + Guid.NewGuid().ToString("N")[..8]);
        Anonymous = new HttpClient { BaseAddress = _host.BaseAddress };
        Admin = new HttpClient { BaseAddress = _host.BaseAddress };
        Admin.DefaultRequestHeaders.Add("X-Admin-Key", TestHosts.AdminKey);
        Provider = new HttpClient { BaseAddress = new Uri(ProviderUrl) };
    }

    /// <summary>Creates a provider, a service on the sample provider, an account with a balance and a key; returns the key.</summary>
    public async Task<Consumer> CreateConsumerAsync(long balance, long price = 5, string upstreamPath = "/phone", int timeoutMs = 5000, string? upstreamBaseUrl = null)
    {
        var suffix = Guid.NewGuid().ToString("N")[..10];
        var providerId = "prov-" + suffix;
        var serviceId = "svc-" + suffix;
        var accountId = "acct-" + suffix;
        await PostOk("/admin/providers", new { id = providerId, name = "Provider " + suffix });
        await PostOk("/admin/services", new
        {
            id = serviceId, name = "Service " + suffix, providerId, upstreamBaseUrl = upstreamBaseUrl ?? ProviderUrl.TrimEnd('/') + upstreamPath,
            pricePerCall = price, currency = "EUR", timeoutMs,
        });
        await PostOk("/admin/accounts", new { id = accountId, name = "Consumer " + suffix, currency = "EUR" });
        if (balance > 0)
        {
            await PostOk($"/admin/accounts/{accountId}/top-ups", new { amount = balance, reason = "test" });
        }

        var key = await PostOk($"/admin/accounts/{accountId}/keys", new { name = "key", services = new[] { serviceId } });
        return new Consumer(accountId, serviceId, key.GetProperty("key").GetProperty("keyId").GetString()!, key.GetProperty("apiKey").GetString()!);
    }

    public async Task<JsonElement> PostOk(string path, object body)
    {
        using var response = await Admin.PostAsJsonAsync(path, body);
        var text = await response.Content.ReadAsStringAsync();
        Assert.True(response.IsSuccessStatusCode, $"POST {path} answered {(int)response.StatusCode}: {text}");
        return JsonDocument.Parse(text).RootElement.Clone();
    }

    /// <summary>Reads an account through the admin API until <paramref name="done"/> holds (settlement is asynchronous).</summary>
    public async Task<JsonElement> WaitForAccountAsync(string accountId, Func<JsonElement, bool> done)
    {
        JsonElement account = default;
        for (var attempt = 0; attempt < 500; attempt++)
        {
            account = JsonDocument.Parse(await Admin.GetStringAsync($"/admin/accounts/{accountId}")).RootElement.Clone();
            if (done(account))
            {
                return account;
            }

            await Task.Delay(10);
        }

        return account;
    }

    public async ValueTask DisposeAsync()
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

public sealed record Consumer(string AccountId, string ServiceId, string KeyId, string ApiKey);
