using System.Net;
using System.Net.Http.Json;
using System.Text.Json;
using Marketplace.Silo.Tests.Infrastructure;
using Marketplace.Silo.Tests.Metering;
using Microsoft.AspNetCore.Builder;
using Npgsql;

namespace Marketplace.Silo.Tests.Reports;

/// <summary>
/// A marketplace of its own (own database, cluster and sample provider) for the report tests, and one run of calls made
/// once, on first use: two providers, three services, two consumer accounts with three keys between them, and calls that
/// succeed, are refused upstream (400), cannot reach their upstream, and are rejected for a forged key.
/// </summary>
public sealed class ReportsFixture(PostgresFixture postgres) : IAsyncLifetime
{
    public const string Verify = "/verify?number=%2B4930123456";

    private readonly SemaphoreSlim _gate = new(1, 1);
    private WebApplication? _provider;
    private Scenario? _scenario;

    public MarketplaceNode M { get; private set; } = null!;

    /// <summary>The marketplace's database, for reading the call log and the rollups directly.</summary>
    public NpgsqlDataSource Database { get; private set; } = null!;

    public async ValueTask InitializeAsync()
    {
        _provider = await TestHosts.StartProviderAsync();
        var connectionString = await postgres.CreateDatabaseAsync("reports");
        // The tests also write calls of 2020 straight through the writer; its hourly rollup retention must not remove them meanwhile.
        var host = await TestHosts.StartMarketplaceAsync(connectionString, "reports-" + Guid.NewGuid().ToString("N")[..8],
            new Dictionary<string, string?> { ["CallLog:MinuteRollupRetentionDays"] = "3650" });
        M = new MarketplaceNode(host, _provider.Urls.First());
        Database = NpgsqlDataSource.Create(connectionString);
    }

    /// <summary>The run of calls, made on first use; returns once every one of its calls is in the call log.</summary>
    public async Task<Scenario> ScenarioAsync()
    {
        await _gate.WaitAsync();
        try
        {
            return _scenario ??= await RunScenarioAsync();
        }
        finally
        {
            _gate.Release();
        }
    }

    private async Task<Scenario> RunScenarioAsync()
    {
        var suffix = Guid.NewGuid().ToString("N")[..8];
        var providerUrl = _provider!.Urls.First().TrimEnd('/');
        var p1 = await CreateProviderAsync("rp1-" + suffix);
        var p2 = await CreateProviderAsync("rp2-" + suffix);
        var s1 = await CreateServiceAsync("rs1-" + suffix, p1.Id, providerUrl + "/phone", price: 7);
        var s2 = await CreateServiceAsync("rs2-" + suffix, p1.Id, $"http://127.0.0.1:{Ports.Free()}/phone", price: 5);
        var s3 = await CreateServiceAsync("rs3-" + suffix, p2.Id, providerUrl + "/phone", price: 3);
        var a = "racct-a-" + suffix;
        var b = "racct-b-" + suffix;
        await CreateAccountAsync(a);
        await CreateAccountAsync(b);
        var ka1 = await CreateKeyAsync(a, s1, s2);
        var ka2 = await CreateKeyAsync(a, s1, s2);
        var kb = await CreateKeyAsync(b, s1, s3);

        var trackIds = new List<string>();
        async Task CallAsync(Consumer consumer, string path, HttpStatusCode expected, int times)
        {
            for (var i = 0; i < times; i++)
            {
                var trackId = $"report-{suffix}-{trackIds.Count:D2}-{Guid.NewGuid():N}";
                trackIds.Add(trackId);
                using var response = await M.CallAsync(consumer, path, trackId);
                Assert.True(expected == response.StatusCode, $"{consumer.ServiceId}{path}: expected {(int)expected}, got {(int)response.StatusCode}");
            }
        }

        await CallAsync(ka1 with { ServiceId = s1 }, Verify, HttpStatusCode.OK, 4);
        await CallAsync(ka2 with { ServiceId = s1 }, Verify, HttpStatusCode.OK, 3);
        await CallAsync(ka2 with { ServiceId = s1 }, "/verify?number=abc", HttpStatusCode.BadRequest, 1);
        await CallAsync(ka1 with { ServiceId = s2 }, Verify, HttpStatusCode.BadGateway, 2);
        await CallAsync(ka1 with { ServiceId = s1, ApiKey = $"mk_{ka1.KeyId}.{new string('A', 43)}" }, Verify, HttpStatusCode.Unauthorized, 2);
        await CallAsync(kb with { ServiceId = s1 }, Verify, HttpStatusCode.OK, 2);
        await CallAsync(kb with { ServiceId = s3 }, Verify, HttpStatusCode.OK, 3);

        await WaitForLogAsync(trackIds);
        return new Scenario(p1, p2, s1, s2, s3, ka1, ka2, kb, trackIds);
    }

    // The periodic writer flushes within its interval: poll the log (not the rollups) until every call is there.
    private async Task WaitForLogAsync(IReadOnlyList<string> trackIds)
    {
        var until = DateTimeOffset.UtcNow + TimeSpan.FromSeconds(15);
        while (true)
        {
            await using var command = Database.CreateCommand("SELECT count(*) FROM marketplace_call_log WHERE track_id = ANY($1)");
            command.Parameters.AddWithValue(trackIds.ToArray());
            var stored = (long)(await command.ExecuteScalarAsync())!;
            if (stored == trackIds.Count)
            {
                return;
            }

            Assert.True(DateTimeOffset.UtcNow < until, $"Only {stored} of {trackIds.Count} calls reached the call log in time.");
            await Task.Delay(20);
        }
    }

    private async Task<ProviderClient> CreateProviderAsync(string id)
    {
        await M.Api.PostOk("/admin/providers", new { id, name = "Provider " + id });
        var issued = await M.Api.PostOk($"/admin/providers/{id}/keys", new { });
        var client = new HttpClient { BaseAddress = M.Host.BaseAddress };
        client.DefaultRequestHeaders.Add("X-Provider-Key", issued.GetProperty("key").GetString());
        return new ProviderClient(id, client);
    }

    private async Task<string> CreateServiceAsync(string id, string providerId, string upstreamBaseUrl, long price)
    {
        await M.Api.PostOk("/admin/services", new
        {
            id, name = "Service " + id, providerId, upstreamBaseUrl, pricePerCall = price, currency = "EUR", timeoutMs = 5000, status = "published",
        });
        return id;
    }

    private async Task CreateAccountAsync(string id)
    {
        await M.Api.PostOk("/admin/accounts", new { id, name = "Consumer " + id, currency = "EUR" });
        await M.Api.PostOk($"/admin/accounts/{id}/top-ups", new { amount = 10_000, reason = "test" });
    }

    private async Task<Consumer> CreateKeyAsync(string accountId, params string[] services)
    {
        var key = await M.Api.PostOk($"/admin/accounts/{accountId}/keys", new { name = "key", services });
        return new Consumer(accountId, services[0], key.GetProperty("key").GetProperty("keyId").GetString()!, key.GetProperty("apiKey").GetString()!);
    }

    /// <summary>A new account with a key and no calls.</summary>
    public async Task<Consumer> CreateIdleConsumerAsync(string serviceId)
    {
        var id = "racct-idle-" + Guid.NewGuid().ToString("N")[..8];
        await CreateAccountAsync(id);
        return await CreateKeyAsync(id, serviceId);
    }

    /// <summary>GET with an API key (none when null); returns status, content type and body.</summary>
    public async Task<(HttpStatusCode Status, string? MediaType, string Body)> GetAsync(string path, string? apiKey)
    {
        using var request = new HttpRequestMessage(HttpMethod.Get, path);
        if (apiKey is not null)
        {
            request.Headers.TryAddWithoutValidation("X-Api-Key", apiKey);
        }

        using var response = await M.Anonymous.SendAsync(request);
        return (response.StatusCode, response.Content.Headers.ContentType?.MediaType, await response.Content.ReadAsStringAsync());
    }

    /// <summary>GET that must answer 200 with JSON.</summary>
    public static async Task<JsonElement> ReadOkAsync(HttpClient client, string path)
    {
        using var response = await client.GetAsync(path);
        var text = await response.Content.ReadAsStringAsync();
        Assert.True(response.IsSuccessStatusCode, $"GET {path} answered {(int)response.StatusCode}: {text}");
        return JsonDocument.Parse(text).RootElement.Clone();
    }

    public async ValueTask DisposeAsync()
    {
        if (_scenario is not null)
        {
            _scenario.P1.Client.Dispose();
            _scenario.P2.Client.Dispose();
        }

        if (M is not null)
        {
            await M.DisposeAsync();
        }

        if (Database is not null)
        {
            await Database.DisposeAsync();
        }

        if (_provider is not null)
        {
            await _provider.DisposeAsync();
        }

        _gate.Dispose();
    }
}

/// <summary>A provider and a client that sends its provider key.</summary>
public sealed record ProviderClient(string Id, HttpClient Client);

/// <summary>
/// The fixture's run of calls. P1 sells S1 (price 7, works) and S2 (price 5, upstream unreachable); P2 sells S3 (price 3).
/// Account A: KA1 calls S1 4 times (succeeded) and S2 twice (upstreamUnreachable); KA2 calls S1 3 times (succeeded) and once
/// with a bad number (upstreamRejected); a forged secret for KA1 is rejected twice on S1 (no account). Account B: KB calls
/// S1 twice and S3 3 times (succeeded).
/// </summary>
public sealed record Scenario(
    ProviderClient P1, ProviderClient P2, string S1, string S2, string S3, Consumer Ka1, Consumer Ka2, Consumer Kb, IReadOnlyList<string> TrackIds)
{
    /// <summary>A window of whole UTC days around the run (so that a run across midnight is still inside).</summary>
    public static string Window
    {
        get
        {
            var today = DateTime.UtcNow.Date;
            return $"from={today.AddDays(-1):yyyy-MM-dd}&to={today.AddDays(2):yyyy-MM-dd}";
        }
    }
}
