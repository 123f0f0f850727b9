using System.Net;
using System.Net.Http.Json;
using System.Text.Json;
using Marketplace.Silo.Tests.Infrastructure;

namespace Marketplace.Silo.Tests.Access;

/// <summary>Exact limits, tokens and revocation over real HTTP, across two silos and two front doors.</summary>
[Collection(PostgresCollection.Name)]
public sealed class AccessControlHttpTests(TwoSiloFixture cluster) : IClassFixture<TwoSiloFixture>
{
    [Fact]
    public async Task Quota_ThousandsOfConcurrentCallsThroughTwoFrontDoors_AdmitsExactlyTheQuota()
    {
        var consumer = await CreateConsumerAsync(balance: 1_000_000, price: 3, limits: new { quota = new { perDay = 150 } });

        var responses = await Task.WhenAll(Enumerable.Range(0, 2000).Select(i => CallAsync(i % 2 == 0 ? cluster.FrontDoorA : cluster.FrontDoorB, consumer)));
        var account = await WaitForAccountAsync(consumer.AccountId, a => a.GetProperty("reserved").GetInt64() == 0 && a.GetProperty("usage").GetProperty("calls").GetInt64() == 150);

        Assert.Equal(150, responses.Count(r => r == HttpStatusCode.OK));
        Assert.Equal(1850, responses.Count(r => r == HttpStatusCode.Forbidden));
        Assert.Equal(1_000_000 - (150 * 3), account.GetProperty("balance").GetInt64());
    }

    [Fact]
    public async Task Balance_ThousandsOfConcurrentCallsThroughTwoFrontDoors_AdmitsExactlyWhatItCovers()
    {
        var consumer = await CreateConsumerAsync(balance: 700, price: 7);

        var responses = await Task.WhenAll(Enumerable.Range(0, 1000).Select(i => CallAsync(i % 2 == 0 ? cluster.FrontDoorA : cluster.FrontDoorB, consumer)));
        var account = await WaitForAccountAsync(consumer.AccountId, a => a.GetProperty("reserved").GetInt64() == 0 && a.GetProperty("usage").GetProperty("calls").GetInt64() == 100);

        Assert.Equal(100, responses.Count(r => r == HttpStatusCode.OK));
        Assert.Equal(900, responses.Count(r => r == HttpStatusCode.PaymentRequired));
        Assert.Equal(0, account.GetProperty("balance").GetInt64());
    }

    [Fact]
    public async Task RateLimit_Exceeded_Is429WithRetryAfterAndRateLimitHeaders()
    {
        var consumer = await CreateConsumerAsync(balance: 1_000, price: 1, limits: new { rate = new { perSecond = 0.01, burst = 3 } });

        var statuses = new List<HttpResponseMessage>();
        for (var i = 0; i < 4; i++)
        {
            statuses.Add(await SendAsync(cluster.FrontDoorA, consumer.ServiceId, consumer.ApiKey));
        }

        var limited = statuses[3];
        var problem = JsonDocument.Parse(await limited.Content.ReadAsStringAsync()).RootElement;

        Assert.All(statuses.Take(3), r => Assert.Equal(HttpStatusCode.OK, r.StatusCode));
        Assert.StartsWith("\"rate\";r=0;t=", statuses[2].Headers.GetValues("RateLimit").Single());
        Assert.False(statuses[2].Headers.Contains("Retry-After"));
        Assert.Equal(HttpStatusCode.TooManyRequests, limited.StatusCode);
        Assert.Equal("urn:marketplace:problem:rate-limited", problem.GetProperty("type").GetString());
        Assert.True(int.Parse(limited.Headers.GetValues("Retry-After").Single(), System.Globalization.CultureInfo.InvariantCulture) >= 1);
        Assert.StartsWith("\"rate\";q=3;w=", limited.Headers.GetValues("RateLimit-Policy").Single());
        Assert.StartsWith("\"rate\";r=0;t=", limited.Headers.GetValues("RateLimit").Single());
    }

    [Fact]
    public async Task Quota_SuccessCarriesRemaining_ExhaustedIs403QuotaProblem()
    {
        var consumer = await CreateConsumerAsync(balance: 1_000, price: 1, limits: new { quota = new { perMonth = 2 } });

        using var first = await SendAsync(cluster.FrontDoorA, consumer.ServiceId, consumer.ApiKey);
        using var second = await SendAsync(cluster.FrontDoorB, consumer.ServiceId, consumer.ApiKey);
        using var third = await SendAsync(cluster.FrontDoorA, consumer.ServiceId, consumer.ApiKey);
        var problem = JsonDocument.Parse(await third.Content.ReadAsStringAsync()).RootElement;

        Assert.StartsWith("\"month\";r=1;t=", first.Headers.GetValues("RateLimit").Single());
        Assert.StartsWith("\"month\";r=0;t=", second.Headers.GetValues("RateLimit").Single());
        Assert.Equal(HttpStatusCode.Forbidden, third.StatusCode);
        Assert.Equal("urn:marketplace:problem:quota-exhausted", problem.GetProperty("type").GetString());
        Assert.True(third.Headers.Contains("Retry-After"));
    }

    [Fact]
    public async Task Revocation_ThroughOneFrontDoor_IsRefusedOnTheOtherSiloAtOnce()
    {
        var consumer = await CreateConsumerAsync(balance: 1_000, price: 1);
        using var before = await SendAsync(cluster.FrontDoorB, consumer.ServiceId, consumer.ApiKey);

        using var revoke = await cluster.Admin.PostAsync($"/admin/keys/{consumer.KeyId}/revoke", null);
        var revokedAt = DateTimeOffset.UtcNow;
        using var after = await SendAsync(cluster.FrontDoorB, consumer.ServiceId, consumer.ApiKey);
        var seenWithin = DateTimeOffset.UtcNow - revokedAt;

        Assert.Equal(HttpStatusCode.OK, before.StatusCode);
        Assert.Equal(HttpStatusCode.OK, revoke.StatusCode);
        Assert.Equal(HttpStatusCode.Forbidden, after.StatusCode);
        TestContext.Current.TestOutputHelper?.WriteLine($"revocation refused on the other front door {seenWithin.TotalMilliseconds:F1} ms after the revoke returned");
    }

    [Fact]
    public async Task Tokens_IssueCallRefreshRevoke_OverHttp()
    {
        var consumer = await CreateConsumerAsync(balance: 1_000, price: 1);

        var pair = await TokenAsync(cluster.FrontDoorA, new Dictionary<string, string> { ["grant_type"] = "client_credentials" }, consumer.ApiKey);
        var accessToken = pair.GetProperty("access_token").GetString()!;
        using var withToken = await SendAsync(cluster.FrontDoorB, consumer.ServiceId, accessToken);
        var refreshed = await TokenAsync(cluster.FrontDoorB, new Dictionary<string, string>
        {
            ["grant_type"] = "refresh_token", ["refresh_token"] = pair.GetProperty("refresh_token").GetString()!,
        });
        using var oldStillWorks = await SendAsync(cluster.FrontDoorA, consumer.ServiceId, accessToken);
        using var revoke = await cluster.FrontDoorA.PostAsync("/v1/token/revoke", new FormUrlEncodedContent(new Dictionary<string, string> { ["token"] = accessToken }));
        using var afterRevoke = await SendAsync(cluster.FrontDoorB, consumer.ServiceId, accessToken);
        using var newOne = await SendAsync(cluster.FrontDoorB, consumer.ServiceId, refreshed.GetProperty("access_token").GetString()!);

        Assert.Equal("Bearer", pair.GetProperty("token_type").GetString());
        Assert.Equal(HttpStatusCode.OK, withToken.StatusCode);
        Assert.Equal(HttpStatusCode.OK, oldStillWorks.StatusCode);
        Assert.Equal(HttpStatusCode.OK, revoke.StatusCode);
        Assert.Equal(HttpStatusCode.Unauthorized, afterRevoke.StatusCode);
        Assert.Equal(HttpStatusCode.OK, newOne.StatusCode);
    }

    [Fact]
    public async Task Tokens_ConcurrentRefreshesOfOneToken_YieldOnePair()
    {
        var consumer = await CreateConsumerAsync(balance: 1_000, price: 1);
        var pair = await TokenAsync(cluster.FrontDoorA, new Dictionary<string, string> { ["grant_type"] = "client_credentials" }, consumer.ApiKey);
        var refreshToken = pair.GetProperty("refresh_token").GetString()!;

        var refreshed = await Task.WhenAll(Enumerable.Range(0, 20).Select(i => TokenAsync(i % 2 == 0 ? cluster.FrontDoorA : cluster.FrontDoorB,
            new Dictionary<string, string> { ["grant_type"] = "refresh_token", ["refresh_token"] = refreshToken })));

        Assert.Single(refreshed.Select(r => r.GetProperty("access_token").GetString()).Distinct());
        Assert.Single(refreshed.Select(r => r.GetProperty("refresh_token").GetString()).Distinct());
    }

    [Fact]
    public async Task Rotation_OldAndNewSecretsWorkDuringOverlap_RetiredSecretIsRefused()
    {
        var consumer = await CreateConsumerAsync(balance: 1_000, price: 1);

        using var rotate = await cluster.Admin.PostAsJsonAsync($"/admin/keys/{consumer.KeyId}/rotate", new { overlapSeconds = 3600 });
        var rotated = JsonDocument.Parse(await rotate.Content.ReadAsStringAsync()).RootElement;
        var newKey = rotated.GetProperty("apiKey").GetString()!;
        using var oldWorks = await SendAsync(cluster.FrontDoorA, consumer.ServiceId, consumer.ApiKey);
        using var newWorks = await SendAsync(cluster.FrontDoorB, consumer.ServiceId, newKey);
        var oldSecretId = rotated.GetProperty("key").GetProperty("secrets").EnumerateArray()
            .First(s => s.GetProperty("retiresAt").ValueKind != JsonValueKind.Null).GetProperty("secretId").GetString();
        using var retire = await cluster.Admin.DeleteAsync($"/admin/keys/{consumer.KeyId}/secrets/{oldSecretId}");
        using var oldRefused = await SendAsync(cluster.FrontDoorA, consumer.ServiceId, consumer.ApiKey);

        Assert.Equal(HttpStatusCode.OK, rotate.StatusCode);
        Assert.Equal(HttpStatusCode.OK, oldWorks.StatusCode);
        Assert.Equal(HttpStatusCode.OK, newWorks.StatusCode);
        Assert.Equal(HttpStatusCode.OK, retire.StatusCode);
        Assert.Equal(HttpStatusCode.Unauthorized, oldRefused.StatusCode);
    }

    [Fact]
    public async Task ConsumerKeys_OwnAccountOnly()
    {
        var mine = await CreateConsumerAsync(balance: 1_000, price: 1);
        var theirs = await CreateConsumerAsync(balance: 1_000, price: 1);

        using var create = new HttpRequestMessage(HttpMethod.Post, "/v1/keys") { Content = JsonContent.Create(new { name = "second key" }) };
        create.Headers.Add("X-Api-Key", mine.ApiKey);
        using var created = await cluster.FrontDoorA.SendAsync(create);
        var second = JsonDocument.Parse(await created.Content.ReadAsStringAsync()).RootElement;
        using var list = await GetAsConsumer("/v1/keys", mine.ApiKey);
        using var otherKey = await GetAsConsumer($"/v1/keys/{theirs.KeyId}", mine.ApiKey);
        using var revokeOther = new HttpRequestMessage(HttpMethod.Post, $"/v1/keys/{theirs.KeyId}/revoke");
        revokeOther.Headers.Add("X-Api-Key", mine.ApiKey);
        using var revokeOtherResponse = await cluster.FrontDoorA.SendAsync(revokeOther);
        using var theirsStillWorks = await SendAsync(cluster.FrontDoorB, theirs.ServiceId, theirs.ApiKey);
        using var secondWorks = await SendAsync(cluster.FrontDoorB, mine.ServiceId, second.GetProperty("apiKey").GetString()!);

        Assert.Equal(HttpStatusCode.Created, created.StatusCode);
        Assert.Equal(2, JsonDocument.Parse(await list.Content.ReadAsStringAsync()).RootElement.GetArrayLength());
        Assert.Equal(HttpStatusCode.NotFound, otherKey.StatusCode);
        Assert.Equal(HttpStatusCode.NotFound, revokeOtherResponse.StatusCode);
        Assert.Equal(HttpStatusCode.OK, theirsStillWorks.StatusCode);
        Assert.Equal(HttpStatusCode.OK, secondWorks.StatusCode);
    }

    [Theory]
    [InlineData("application/json", "{not json")]
    [InlineData("application/json", "[1,2]")]
    [InlineData("application/json", "{\"grant_type\":\"password\"}")]
    [InlineData("application/json", "{\"grant_type\":\"refresh_token\",\"refresh_token\":\"mr_x.y.z\"}")]
    [InlineData("application/x-www-form-urlencoded", "grant_type=refresh_token&refresh_token=' OR 1=1 --")]
    [InlineData("application/x-www-form-urlencoded", "grant_type=client_credentials&client_secret=mk_nokey0000.AAAAAAAAAAAAAAAAAAAAAAAA")]
    [InlineData("text/plain", "hello")]
    public async Task TokenEndpoint_BadInput_Is4xxProblemWithTrackId(string contentType, string body)
    {
        using var content = new StringContent(body, System.Text.Encoding.UTF8, contentType);

        using var response = await cluster.FrontDoorA.PostAsync("/v1/token", content);
        var text = await response.Content.ReadAsStringAsync();

        Assert.InRange((int)response.StatusCode, 400, 499);
        Assert.Equal("application/problem+json", response.Content.Headers.ContentType?.MediaType);
        Assert.Equal(response.Headers.GetValues("X-Track-Id").Single(), JsonDocument.Parse(text).RootElement.GetProperty("trackId").GetString());
    }

    [Fact]
    public async Task AdminUpdate_InvalidLimits_Is400AndLeavesKeyUnchanged()
    {
        var consumer = await CreateConsumerAsync(balance: 1_000, price: 1, limits: new { quota = new { perDay = 10 } });
        var before = await cluster.Admin.GetStringAsync($"/admin/keys/{consumer.KeyId}");

        using var response = await cluster.Admin.PatchAsJsonAsync($"/admin/keys/{consumer.KeyId}", new
        {
            name = "renamed", limits = new { rate = new { perSecond = 0, burst = 0 }, windowOffset = "15:00:00" },
        });
        var after = await cluster.Admin.GetStringAsync($"/admin/keys/{consumer.KeyId}");

        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        Assert.Equal("application/problem+json", response.Content.Headers.ContentType?.MediaType);
        Assert.Equal(before, after);
    }

    private Task<HttpResponseMessage> GetAsConsumer(string path, string apiKey)
    {
        var request = new HttpRequestMessage(HttpMethod.Get, path);
        request.Headers.Add("X-Api-Key", apiKey);
        return cluster.FrontDoorA.SendAsync(request);
    }

    private Task<Consumer> CreateConsumerAsync(long balance, long price, object? limits = null) =>
        new AdminApi(cluster.Admin, cluster.ProviderUrl).CreateConsumerAsync(balance, price, upstreamPath: "/ip", limits: limits);

    private static async Task<HttpStatusCode> CallAsync(HttpClient frontDoor, Consumer consumer)
    {
        using var response = await SendAsync(frontDoor, consumer.ServiceId, consumer.ApiKey);
        return response.StatusCode;
    }

    private static Task<HttpResponseMessage> SendAsync(HttpClient frontDoor, string serviceId, string credential)
    {
        var request = new HttpRequestMessage(HttpMethod.Get, $"/v1/call/{serviceId}/geo?ip=8.8.8.8");
        request.Headers.Authorization = new System.Net.Http.Headers.AuthenticationHeaderValue("Bearer", credential);
        return frontDoor.SendAsync(request);
    }

    private static async Task<JsonElement> TokenAsync(HttpClient frontDoor, Dictionary<string, string> form, string? apiKey = null)
    {
        using var request = new HttpRequestMessage(HttpMethod.Post, "/v1/token") { Content = new FormUrlEncodedContent(form) };
        if (apiKey is not null)
        {
            request.Headers.Add("X-Api-Key", apiKey);
        }

        using var response = await frontDoor.SendAsync(request);
        var text = await response.Content.ReadAsStringAsync();
        Assert.True(response.IsSuccessStatusCode, $"token: {(int)response.StatusCode} {text}");
        return JsonDocument.Parse(text).RootElement.Clone();
    }

    private Task<JsonElement> WaitForAccountAsync(string accountId, Func<JsonElement, bool> done) =>
        new AdminApi(cluster.Admin, cluster.ProviderUrl).WaitForAccountAsync(accountId, done);
}
