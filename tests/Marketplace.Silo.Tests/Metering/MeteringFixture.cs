using System.Net.Http.Json;
using System.Text.Json;
using Marketplace.Silo.Hosting;
using Marketplace.Silo.Tests.Infrastructure;
using Microsoft.AspNetCore.Builder;

namespace Marketplace.Silo.Tests.Metering;

/// <summary>
/// A marketplace of its own (own database, cluster and sample provider, because the provider's fail switches are global
/// to its process) for the metering tests, and a second one with strict call-log durability, started on first use.
/// </summary>
public sealed class MeteringFixture(PostgresFixture postgres) : IAsyncLifetime
{
    private readonly SemaphoreSlim _strictGate = new(1, 1);
    private WebApplication? _provider;
    private MarketplaceNode? _strict;

    /// <summary>The marketplace with the default (periodic) call-log durability.</summary>
    public MarketplaceNode Periodic { get; private set; } = null!;

    /// <summary>The sample provider's control and stats endpoints.</summary>
    public HttpClient Provider { get; private set; } = null!;

    public string ProviderUrl => _provider?.Urls.First() ?? throw new InvalidOperationException("Not started.");

    public async ValueTask InitializeAsync()
    {
        _provider = await TestHosts.StartProviderAsync();
        Provider = new HttpClient { BaseAddress = new Uri(ProviderUrl) };
        Periodic = await StartNodeAsync("metering", new Dictionary<string, string?>());
    }

    /// <summary>The marketplace with <c>CallLog:Durability=strict</c>, on its own database and cluster.</summary>
    public async Task<MarketplaceNode> StrictAsync()
    {
        await _strictGate.WaitAsync();
        try
        {
            return _strict ??= await StartNodeAsync("strict", new Dictionary<string, string?> { ["CallLog:Durability"] = "strict" });
        }
        finally
        {
            _strictGate.Release();
        }
    }

    /// <summary>The sample provider's call counts per service and the last TrackId it received.</summary>
    public async Task<JsonElement> StatsAsync() => await Provider.GetFromJsonAsync<JsonElement>("/_stats");

    private async Task<MarketplaceNode> StartNodeAsync(string prefix, Dictionary<string, string?> settings)
    {
        var connectionString = await postgres.CreateDatabaseAsync(prefix);
        var host = await TestHosts.StartMarketplaceAsync(connectionString, prefix + "-" + Guid.NewGuid().ToString("N")[..8], settings);
        return new MarketplaceNode(host, ProviderUrl);
    }

    public async ValueTask DisposeAsync()
    {
        if (_strict is not null)
        {
            await _strict.DisposeAsync();
        }

        if (Periodic is not null)
        {
            await Periodic.DisposeAsync();
        }

        Provider?.Dispose();
        if (_provider is not null)
        {
            await _provider.DisposeAsync();
        }

        _strictGate.Dispose();
    }
}

/// <summary>One running marketplace with its clients.</summary>
public sealed class MarketplaceNode : IAsyncDisposable
{
    public MarketplaceNode(MarketplaceHost host, string providerUrl)
    {
        Host = host;
        Anonymous = new HttpClient { BaseAddress = host.BaseAddress };
        Admin = new HttpClient { BaseAddress = host.BaseAddress };
        Admin.DefaultRequestHeaders.Add("X-Admin-Key", TestHosts.AdminKey);
        Api = new AdminApi(Admin, providerUrl);
    }

    public MarketplaceHost Host { get; }

    /// <summary>A client with no credentials.</summary>
    public HttpClient Anonymous { get; }

    /// <summary>A client that sends the admin key.</summary>
    public HttpClient Admin { get; }

    public AdminApi Api { get; }

    /// <summary>Sends a call to the consumer's service with its key, and optionally a TrackId and an Idempotency-Key.</summary>
    public async Task<HttpResponseMessage> CallAsync(Consumer consumer, string pathAndQuery, string? trackId = null, string? idempotencyKey = null)
    {
        using var request = new HttpRequestMessage(HttpMethod.Get, $"/v1/call/{consumer.ServiceId}{pathAndQuery}");
        if (!string.IsNullOrEmpty(consumer.ApiKey))
        {
            request.Headers.TryAddWithoutValidation("X-Api-Key", consumer.ApiKey);
        }

        if (trackId is not null)
        {
            request.Headers.TryAddWithoutValidation("X-Track-Id", trackId);
        }

        if (idempotencyKey is not null)
        {
            request.Headers.TryAddWithoutValidation("Idempotency-Key", idempotencyKey);
        }

        return await Anonymous.SendAsync(request);
    }

    /// <summary>The call-log rows of a TrackId as admins see them; null while there are none (404).</summary>
    public async Task<JsonElement?> AdminCallsAsync(string trackId)
    {
        using var response = await Admin.GetAsync($"/admin/calls/{trackId}");
        if (response.StatusCode == System.Net.HttpStatusCode.NotFound)
        {
            return null;
        }

        var text = await response.Content.ReadAsStringAsync();
        Assert.True(response.IsSuccessStatusCode, $"GET /admin/calls/{trackId} answered {(int)response.StatusCode}: {text}");
        return JsonDocument.Parse(text).RootElement.Clone();
    }

    /// <summary>
    /// The call-log rows of a TrackId once the periodic flush wrote them: polls until they are there or the deadline passes.
    /// </summary>
    public async Task<JsonElement> WaitForCallAsync(string trackId, TimeSpan? deadline = null)
    {
        var until = DateTimeOffset.UtcNow + (deadline ?? TimeSpan.FromSeconds(10));
        while (true)
        {
            if (await AdminCallsAsync(trackId) is { } rows)
            {
                return rows;
            }

            Assert.True(DateTimeOffset.UtcNow < until, $"The call {trackId} did not reach the call log in time.");
            await Task.Delay(20);
        }
    }

    public async ValueTask DisposeAsync()
    {
        Anonymous.Dispose();
        Admin.Dispose();
        await Host.DisposeAsync();
    }
}
