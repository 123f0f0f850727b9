using System.Net.Http.Json;
using System.Text.Json;

namespace Marketplace.Silo.Tests.Infrastructure;

/// <summary>What the HTTP tests do through the admin API: set up a consumer, read an account back.</summary>
public sealed class AdminApi(HttpClient admin, string providerUrl)
{
    /// <summary>
    /// Creates a provider, a service on the sample provider, an account with a balance (and <paramref name="creditLimit"/>)
    /// and a key; returns the key.
    /// </summary>
    public async Task<Consumer> CreateConsumerAsync(long balance, long price = 5, string upstreamPath = "/phone", int timeoutMs = 5000,
        string? upstreamBaseUrl = null, object? limits = null, long creditLimit = 0)
    {
        var suffix = Guid.NewGuid().ToString("N")[..10];
        var providerId = "prov-" + suffix;
        var serviceId = "svc-" + suffix;
        var accountId = "acct-" + suffix;
        await PostOk("/admin/providers", new { id = providerId, name = "Provider " + suffix });
        await PostOk("/admin/services", new
        {
            id = serviceId, name = "Service " + suffix, providerId, upstreamBaseUrl = upstreamBaseUrl ?? providerUrl.TrimEnd('/') + upstreamPath,
            pricePerCall = price, currency = "EUR", timeoutMs, status = "published",
        });
        await PostOk("/admin/accounts", new { id = accountId, name = "Consumer " + suffix, currency = "EUR", creditLimit });
        if (balance > 0)
        {
            await PostOk($"/admin/accounts/{accountId}/top-ups", new { amount = balance, reason = "test" });
        }

        var (keyId, apiKey) = await AddKeyAsync(accountId, serviceId, "key", limits);
        return new Consumer(accountId, serviceId, keyId, apiKey);
    }

    /// <summary>Issues another key of <paramref name="accountId"/> for <paramref name="serviceId"/>; returns its id and secret.</summary>
    public async Task<(string KeyId, string ApiKey)> AddKeyAsync(string accountId, string serviceId, string name, object? limits = null)
    {
        var key = await PostOk($"/admin/accounts/{accountId}/keys", new { name, services = new[] { serviceId }, limits });
        return (key.GetProperty("key").GetProperty("keyId").GetString()!, key.GetProperty("apiKey").GetString()!);
    }

    public async Task<JsonElement> PostOk(string path, object body)
    {
        using var response = await admin.PostAsJsonAsync(path, body);
        var text = await response.Content.ReadAsStringAsync();
        Assert.True(response.IsSuccessStatusCode, $"POST {path} answered {(int)response.StatusCode}: {text}");
        return JsonDocument.Parse(text).RootElement.Clone();
    }

    /// <summary>Reads an account until <paramref name="done"/> holds (settlement is asynchronous), a bounded number of times.</summary>
    public async Task<JsonElement> WaitForAccountAsync(string accountId, Func<JsonElement, bool> done)
    {
        JsonElement account = default;
        for (var attempt = 0; attempt < 500; attempt++)
        {
            account = JsonDocument.Parse(await admin.GetStringAsync($"/admin/accounts/{accountId}")).RootElement.Clone();
            if (done(account))
            {
                break;
            }

            await Task.Delay(10);
        }

        return account;
    }
}

public sealed record Consumer(string AccountId, string ServiceId, string KeyId, string ApiKey);
