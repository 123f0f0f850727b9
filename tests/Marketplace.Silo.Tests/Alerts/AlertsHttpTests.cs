using System.Net;
using System.Text;
using System.Text.Json;
using Marketplace.Silo.Tests.Infrastructure;
using Marketplace.Silo.Tests.Metering;
using Marketplace.Testing;

namespace Marketplace.Silo.Tests.Alerts;

/// <summary>Webhook alerts over HTTP: registration and its validation, one consumer's alerts hidden from another, and a delivery end to end.</summary>
[Collection(PostgresCollection.Name)]
public sealed class AlertsHttpTests(AlertsFixture fixture) : IClassFixture<AlertsFixture>
{
    private const string Verify = "/verify?number=%2B4930123456";
    private const string HookUrl = "https://hooks.example.com/marketplace";

    private MarketplaceNode M => fixture.Node;

    public static TheoryData<string, string> InvalidBodies => new()
    {
        { """{ "events": ["quota"], "thresholds": [80] }""", "url" },
        { """{ "url": "/relative", "events": ["quota"], "thresholds": [80] }""", "url" },
        { """{ "url": "ftp://hooks.example.com/x", "events": ["quota"], "thresholds": [80] }""", "url" },
        { """{ "url": "https://user:secret@hooks.example.com/x", "events": ["quota"], "thresholds": [80] }""", "url" },
        { $$"""{ "url": "https://hooks.example.com/{{new string('a', 2030)}}", "events": ["quota"], "thresholds": [80] }""", "url" },
        { """{ "url": "https://hooks.example.com/x", "thresholds": [80] }""", "events" },
        { """{ "url": "https://hooks.example.com/x", "events": [], "thresholds": [80] }""", "events" },
        { """{ "url": "https://hooks.example.com/x", "events": ["quota", "weather"], "thresholds": [80] }""", "events" },
        { """{ "url": "https://hooks.example.com/x", "events": ["quota", "quota"], "thresholds": [80] }""", "events" },
        { """{ "url": "https://hooks.example.com/x", "events": ["quota"] }""", "thresholds" },
        { """{ "url": "https://hooks.example.com/x", "events": ["quota"], "thresholds": [] }""", "thresholds" },
        { """{ "url": "https://hooks.example.com/x", "events": ["quota"], "thresholds": [0] }""", "thresholds" },
        { """{ "url": "https://hooks.example.com/x", "events": ["balance"], "thresholds": [101] }""", "thresholds" },
        { """{ "url": "https://hooks.example.com/x", "events": ["balance"], "thresholds": [10, 20, 30, 40, 50, 60] }""", "thresholds" },
    };

    [Theory]
    [MemberData(nameof(InvalidBodies))]
    public async Task Create_InvalidRegistration_Answers400NamingTheField(string body, string field)
    {
        var consumer = await M.Api.CreateConsumerAsync(balance: 100);

        using var response = await SendAsync(HttpMethod.Post, "/v1/alerts", consumer, body);
        var problem = await Problem.AssertAsync(response, HttpStatusCode.BadRequest, "validation");

        Assert.Equal([field], problem.GetProperty("errors").EnumerateObject().Select(e => e.Name));
        Assert.Empty(await ListAsync(consumer));
    }

    [Fact]
    public async Task Create_ShowsTheSigningSecretOnceAndNeverInReads()
    {
        var consumer = await M.Api.CreateConsumerAsync(balance: 100);

        using var response = await CreateAsync(consumer, HookUrl, ["quota", "balance"], [100, 80]);
        var created = JsonDocument.Parse(await response.Content.ReadAsStringAsync()).RootElement;
        var secret = created.GetProperty("secret").GetString()!;
        var alert = created.GetProperty("alert");
        var alertId = alert.GetProperty("alertId").GetString()!;
        using var list = await SendAsync(HttpMethod.Get, "/v1/alerts", consumer);
        using var one = await SendAsync(HttpMethod.Get, $"/v1/alerts/{alertId}", consumer);
        var listed = await list.Content.ReadAsStringAsync();
        var read = await one.Content.ReadAsStringAsync();

        Assert.Equal(HttpStatusCode.Created, response.StatusCode);
        Assert.Equal($"/v1/alerts/{alertId}", response.Headers.Location?.OriginalString);
        Assert.True(response.Headers.CacheControl?.NoStore);
        Assert.StartsWith("whsec_", secret, StringComparison.Ordinal);
        Assert.True(secret.Length >= 40);
        Assert.Equal(consumer.AccountId, alert.GetProperty("accountId").GetString());
        Assert.Equal(HookUrl, alert.GetProperty("url").GetString());
        Assert.Equal(["quota", "balance"], alert.GetProperty("events").EnumerateArray().Select(e => e.GetString()));
        Assert.Equal([80, 100], alert.GetProperty("thresholds").EnumerateArray().Select(e => e.GetInt32()));
        Assert.Equal(HttpStatusCode.OK, list.StatusCode);
        Assert.Equal(HttpStatusCode.OK, one.StatusCode);
        Assert.Equal(alertId, JsonDocument.Parse(listed).RootElement.EnumerateArray().Single().GetProperty("alertId").GetString());
        Assert.Equal(alertId, JsonDocument.Parse(read).RootElement.GetProperty("alertId").GetString());
        Assert.DoesNotContain(secret, listed, StringComparison.Ordinal);
        Assert.DoesNotContain(secret["whsec_".Length..], listed, StringComparison.Ordinal);
        Assert.DoesNotContain(secret["whsec_".Length..], read, StringComparison.Ordinal);
        Assert.DoesNotContain("secret", read, StringComparison.OrdinalIgnoreCase);
    }

    [Fact]
    public async Task Alerts_OfAnotherConsumer_AreNeitherListedNorReadNorDeleted()
    {
        var mine = await M.Api.CreateConsumerAsync(balance: 100);
        var theirs = await M.Api.CreateConsumerAsync(balance: 100);
        using var created = await CreateAsync(mine, HookUrl, ["quota"], [80]);
        var alertId = JsonDocument.Parse(await created.Content.ReadAsStringAsync()).RootElement.GetProperty("alert").GetProperty("alertId").GetString()!;

        var theirList = await ListAsync(theirs);
        using var theirRead = await SendAsync(HttpMethod.Get, $"/v1/alerts/{alertId}", theirs);
        using var theirDelete = await SendAsync(HttpMethod.Delete, $"/v1/alerts/{alertId}", theirs);
        using var anonymous = await M.Anonymous.GetAsync("/v1/alerts");
        var myList = await ListAsync(mine);
        using var myDelete = await SendAsync(HttpMethod.Delete, $"/v1/alerts/{alertId}", mine);
        using var myDeleteAgain = await SendAsync(HttpMethod.Delete, $"/v1/alerts/{alertId}", mine);

        Assert.Empty(theirList);
        await Problem.AssertAsync(theirRead, HttpStatusCode.NotFound, "not-found");
        await Problem.AssertAsync(theirDelete, HttpStatusCode.NotFound, "not-found");
        await Problem.AssertAsync(anonymous, HttpStatusCode.Unauthorized, "invalid-api-key");
        Assert.Equal(alertId, Assert.Single(myList).GetProperty("alertId").GetString());
        Assert.Equal(HttpStatusCode.NoContent, myDelete.StatusCode);
        await Problem.AssertAsync(myDeleteAgain, HttpStatusCode.NotFound, "not-found");
        Assert.Empty(await ListAsync(mine));
    }

    [Fact]
    public async Task Create_EleventhAlert_Answers409()
    {
        var consumer = await M.Api.CreateConsumerAsync(balance: 100);
        for (var i = 0; i < 10; i++)
        {
            using var created = await CreateAsync(consumer, $"{HookUrl}/{i}", ["quota"], [80]);
            Assert.Equal(HttpStatusCode.Created, created.StatusCode);
        }

        using var eleventh = await SendAsync(HttpMethod.Post, "/v1/alerts", consumer, Body(HookUrl, ["quota"], [80]));

        await Problem.AssertAsync(eleventh, HttpStatusCode.Conflict, "alert-limit");
        Assert.Equal(10, (await ListAsync(consumer)).Count);
    }

    [Fact]
    public async Task Create_OnAMarketplaceWithoutSecretsKey_Answers400AlertsUnavailable()
    {
        var node = await fixture.WithoutSecretsKeyAsync();
        var consumer = await node.Api.CreateConsumerAsync(balance: 100);
        using var request = Request(HttpMethod.Post, "/v1/alerts", consumer, Body(HookUrl, ["quota"], [80]));

        using var response = await node.Anonymous.SendAsync(request);
        var problem = await Problem.AssertAsync(response, HttpStatusCode.BadRequest, "alerts-unavailable");

        Assert.Contains("Secrets:Key", problem.GetProperty("detail").GetString());
    }

    [Fact]
    public async Task QuotaAlert_DailyQuota10_EighthCallDeliversASignedWebhook()
    {
        await using var receiver = await WebhookReceiver.StartAsync();
        var consumer = await M.Api.CreateConsumerAsync(balance: 1_000, price: 1, limits: new { quota = new { perDay = 10 } });
        using var created = await CreateAsync(consumer, receiver.Url("e2e"), ["quota"], [80]);
        var secret = JsonDocument.Parse(await created.Content.ReadAsStringAsync()).RootElement.GetProperty("secret").GetString()!;

        for (var call = 1; call <= 8; call++)
        {
            using var response = await M.CallAsync(consumer, Verify);
            Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        }

        var delivery = Assert.Single(await receiver.WaitForAsync("e2e", 1));
        var payload = delivery.Json;

        Assert.True(delivery.SignedWith(secret));
        Assert.Equal("quota", delivery.Event);
        Assert.Equal((80, 8L, 10L), (payload.GetProperty("threshold").GetInt32(), payload.GetProperty("used").GetInt64(), payload.GetProperty("limit").GetInt64()));
        Assert.Equal(consumer.KeyId, payload.GetProperty("keyId").GetString());
        Assert.Equal(consumer.AccountId, payload.GetProperty("accountId").GetString());
        var alert = Assert.Single(await WaitForDeliveredAsync(consumer));
        Assert.Equal(1, alert.GetProperty("delivered").GetInt64());
    }

    private async Task<List<JsonElement>> WaitForDeliveredAsync(Consumer consumer)
    {
        for (var attempt = 0; ; attempt++)
        {
            var alerts = await ListAsync(consumer);
            if (alerts.All(a => a.GetProperty("delivered").GetInt64() > 0) || attempt >= 500)
            {
                return alerts;
            }

            await Task.Delay(10);
        }
    }

    private async Task<List<JsonElement>> ListAsync(Consumer consumer)
    {
        using var response = await SendAsync(HttpMethod.Get, "/v1/alerts", consumer);
        var text = await response.Content.ReadAsStringAsync();
        Assert.True(response.StatusCode == HttpStatusCode.OK, $"GET /v1/alerts answered {(int)response.StatusCode}: {text}");
        return [.. JsonDocument.Parse(text).RootElement.EnumerateArray().Select(e => e.Clone())];
    }

    private Task<HttpResponseMessage> CreateAsync(Consumer consumer, string url, string[] events, int[] thresholds) =>
        SendAsync(HttpMethod.Post, "/v1/alerts", consumer, Body(url, events, thresholds));

    private static string Body(string url, string[] events, int[] thresholds) => JsonSerializer.Serialize(new { url, events, thresholds });

    private async Task<HttpResponseMessage> SendAsync(HttpMethod method, string path, Consumer consumer, string? body = null)
    {
        using var request = Request(method, path, consumer, body);
        return await M.Anonymous.SendAsync(request);
    }

    private static HttpRequestMessage Request(HttpMethod method, string path, Consumer consumer, string? body)
    {
        var request = new HttpRequestMessage(method, path);
        request.Headers.TryAddWithoutValidation("X-Api-Key", consumer.ApiKey);
        if (body is not null)
        {
            request.Content = new StringContent(body, Encoding.UTF8, "application/json");
        }

        return request;
    }
}
