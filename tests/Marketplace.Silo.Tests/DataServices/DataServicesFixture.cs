using System.Net.Http.Json;
using System.Security.Cryptography;
using System.Text.Json;
using Marketplace.Silo.Tests.Infrastructure;

namespace Marketplace.Silo.Tests.DataServices;

/// <summary>
/// A marketplace of its own (own database, own cluster, a secrets key) before a sample provider of its own, so the
/// provider's global switches are flipped by one test class only.
/// </summary>
public sealed class DataServicesFixture(PostgresFixture postgres)
    : MarketplaceFixture(postgres, "dataservices", new Dictionary<string, string?> { ["Secrets:Key"] = Convert.ToBase64String(RandomNumberGenerator.GetBytes(32)) })
{
    public static string NewId(string prefix) => $"{prefix}-{Guid.NewGuid().ToString("N")[..10]}";

    public async Task<string> CreateProviderAsync()
    {
        var id = NewId("prov");
        await Api.PostOk("/admin/providers", new { id, name = "Provider " + id });
        return id;
    }

    /// <summary>A service whose version v1 passes calls through to <paramref name="upstreamPath"/> of the sample provider.</summary>
    public async Task<string> CreateServiceAsync(string providerId, string upstreamPath = "/phone", long price = 5, string status = "published",
        string chargeRule = "perSuccess", string? category = null, string? name = null, string? id = null)
    {
        id ??= NewId("svc");
        await Api.PostOk("/admin/services", new
        {
            id, name = name ?? "Service " + id, providerId, upstreamBaseUrl = ProviderUrl + upstreamPath, pricePerCall = price, currency = "EUR",
            timeoutMs = 5000, status, chargeRule, category,
        });
        return id;
    }

    public async Task<JsonElement> PutVersionAsync(string serviceId, string version, object body)
    {
        using var response = await Admin.PutAsJsonAsync($"/admin/services/{serviceId}/versions/{version}", body);
        return await ReadOkAsync(response);
    }

    public async Task<JsonElement> SetReleaseAsync(string serviceId, object body)
    {
        using var response = await Admin.PutAsJsonAsync($"/admin/services/{serviceId}/release", body);
        return await ReadOkAsync(response);
    }

    /// <summary>An account with <paramref name="balance"/> and one key for <paramref name="services"/>.</summary>
    public async Task<Consumer> CreateConsumerAsync(long balance, params string[] services)
    {
        var accountId = await CreateAccountAsync(balance);
        var (keyId, apiKey) = await CreateKeyAsync(accountId, services);
        return new Consumer(accountId, services[0], keyId, apiKey);
    }

    public async Task<string> CreateAccountAsync(long balance)
    {
        var accountId = NewId("acct");
        await Api.PostOk("/admin/accounts", new { id = accountId, name = "Consumer " + accountId, currency = "EUR" });
        await Api.PostOk($"/admin/accounts/{accountId}/top-ups", new { amount = balance, reason = "test" });
        return accountId;
    }

    public async Task<(string KeyId, string ApiKey)> CreateKeyAsync(string accountId, params string[] services)
    {
        var key = await Api.PostOk($"/admin/accounts/{accountId}/keys", new { name = "key", services });
        return (key.GetProperty("key").GetProperty("keyId").GetString()!, key.GetProperty("apiKey").GetString()!);
    }

    public Task<HttpResponseMessage> CallAsync(string serviceId, string apiKey, string pathAndQuery = "/verify?number=%2B4930123456") =>
        CallAsync(Anonymous, serviceId, apiKey, pathAndQuery);

    public static Task<HttpResponseMessage> CallAsync(HttpClient frontDoor, string serviceId, string apiKey, string pathAndQuery)
    {
        var request = new HttpRequestMessage(HttpMethod.Get, $"/v1/call/{serviceId}{pathAndQuery}");
        request.Headers.TryAddWithoutValidation("X-Api-Key", apiKey);
        return frontDoor.SendAsync(request);
    }

    /// <summary>The account once every call it made is settled: nothing reserved and <paramref name="calls"/> calls counted.</summary>
    public async Task<JsonElement> WaitForSettledAsync(string accountId, long calls)
    {
        var account = await Api.WaitForAccountAsync(accountId,
            a => a.GetProperty("reserved").GetInt64() == 0 && a.GetProperty("usage").GetProperty("calls").GetInt64() == calls);
        Assert.True(account.GetProperty("reserved").GetInt64() == 0, $"reservations never returned: {account}");
        Assert.True(account.GetProperty("usage").GetProperty("calls").GetInt64() == calls, $"expected {calls} settled calls: {account}");
        return account;
    }

    /// <summary>Sets every switch of the sample provider back to normal and its counters to zero.</summary>
    public async Task ResetProviderAsync()
    {
        (await Provider.DeleteAsync("/_control")).EnsureSuccessStatusCode();
        (await Provider.DeleteAsync("/_stats")).EnsureSuccessStatusCode();
    }

    public async Task SwitchProviderAsync(string service, object settings)
    {
        using var response = await Provider.PutAsJsonAsync($"/_control/{service}", settings);
        response.EnsureSuccessStatusCode();
    }

    /// <summary>How many calls the sample provider received for one of its services (phone, ip, device).</summary>
    public async Task<long> ProviderCallsAsync(string service) =>
        (await Provider.GetFromJsonAsync<JsonElement>("/_stats")).GetProperty(service).GetInt64();

    public static async Task<JsonElement> ReadOkAsync(HttpResponseMessage response)
    {
        var text = await response.Content.ReadAsStringAsync();
        Assert.True(response.IsSuccessStatusCode, $"{response.RequestMessage?.Method} {response.RequestMessage?.RequestUri} answered {(int)response.StatusCode}: {text}");
        return JsonDocument.Parse(text).RootElement.Clone();
    }

    /// <summary>Asserts a problem+json answer of the given status and type, carrying the TrackId of the response.</summary>
}
