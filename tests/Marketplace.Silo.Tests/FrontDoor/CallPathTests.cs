using System.Net;
using System.Net.Http.Json;
using System.Text.Json;
using Marketplace.Silo.Tests.Infrastructure;

namespace Marketplace.Silo.Tests.FrontDoor;

[Collection(PostgresCollection.Name)]
public sealed class CallPathTests(MarketplaceFixture marketplace) : IClassFixture<MarketplaceFixture>
{
    private MarketplaceFixture M => marketplace;

    [Fact]
    public async Task Call_WithValidKey_ForwardsReturnsDataAndChargesPriceOnce()
    {
        var consumer = await M.CreateConsumerAsync(balance: 100, price: 7);

        using var response = await Call(consumer, "/verify?number=%2B4915112345678");
        var body = await response.Content.ReadFromJsonAsync<JsonElement>();
        var account = await M.WaitForAccountAsync(consumer.AccountId, a => a.GetProperty("reserved").GetInt64() == 0);

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal("+4915112345678", body.GetProperty("number").GetString());
        Assert.True(response.Headers.Contains("X-Track-Id"));
        Assert.Equal("7", response.Headers.GetValues("X-Charged").Single());
        Assert.Equal(93, account.GetProperty("balance").GetInt64());
        Assert.Equal(7, account.GetProperty("totalCharged").GetInt64());
        Assert.Equal(1, account.GetProperty("usage").GetProperty("calls").GetInt64());
    }

    [Fact]
    public async Task Call_WithCallerTrackId_ReturnsItAndSendsItUpstream()
    {
        var consumer = await M.CreateConsumerAsync(balance: 100);
        var trackId = "test-" + Guid.NewGuid().ToString("N");

        using var response = await Call(consumer, "/verify?number=%2B4930123456", trackId);
        var stats = await M.Provider.GetFromJsonAsync<JsonElement>("/_stats");

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal(trackId, response.Headers.GetValues("X-Track-Id").Single());
        Assert.Equal(trackId, stats.GetProperty("lastTrackId").GetString());
    }

    [Fact]
    public async Task Call_WithMalformedTrackId_GetsAFreshOne()
    {
        var consumer = await M.CreateConsumerAsync(balance: 100);

        using var response = await Call(consumer, "/verify?number=%2B4930123456", "bad id <script>");

        var returned = response.Headers.GetValues("X-Track-Id").Single();
        Assert.NotEqual("bad id <script>", returned);
        Assert.Matches("^[A-Za-z0-9._-]{8,64}$", returned);
    }

    [Fact]
    public async Task Call_BearerToken_IsAcceptedLikeTheHeader()
    {
        var consumer = await M.CreateConsumerAsync(balance: 100);
        using var request = new HttpRequestMessage(HttpMethod.Get, $"/v1/call/{consumer.ServiceId}/verify?number=%2B4930123456");
        request.Headers.Authorization = new System.Net.Http.Headers.AuthenticationHeaderValue("Bearer", consumer.ApiKey);

        using var response = await M.Anonymous.SendAsync(request);

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
    }

    [Theory]
    [InlineData(null)]
    [InlineData("")]
    [InlineData("not-a-key")]
    [InlineData("mk_nosuchkey000.secretsecretsecretsecret")]
    [InlineData("mk_../../etc.secretsecretsecretsecret")]
    [InlineData("' OR 1=1 --")]
    public async Task Call_WithMissingOrInvalidKey_Is401Problem(string? apiKey)
    {
        var consumer = await M.CreateConsumerAsync(balance: 100);

        using var response = await Call(consumer with { ApiKey = apiKey! }, "/verify?number=%2B4930123456");

        await Problem.AssertAsync(response, HttpStatusCode.Unauthorized, "invalid-api-key");
    }

    [Fact]
    public async Task Call_WithWrongSecretOfRealKey_Is401AndNotCharged()
    {
        var consumer = await M.CreateConsumerAsync(balance: 100);
        var forged = $"mk_{consumer.KeyId}.{new string('A', 43)}";

        using var response = await Call(consumer with { ApiKey = forged }, "/verify?number=%2B4930123456");
        var account = await M.WaitForAccountAsync(consumer.AccountId, _ => true);

        await Problem.AssertAsync(response, HttpStatusCode.Unauthorized, "invalid-api-key");
        Assert.Equal(100, account.GetProperty("balance").GetInt64());
    }

    [Fact]
    public async Task Call_WithRevokedKey_Is403()
    {
        var consumer = await M.CreateConsumerAsync(balance: 100);
        await M.PostOk($"/admin/keys/{consumer.KeyId}/revoke", new { });

        using var response = await Call(consumer, "/verify?number=%2B4930123456");

        await Problem.AssertAsync(response, HttpStatusCode.Forbidden, "key-revoked");
    }

    [Fact]
    public async Task Call_ToServiceNotEntitled_Is403()
    {
        var consumer = await M.CreateConsumerAsync(balance: 100);
        var other = await M.CreateConsumerAsync(balance: 100);

        using var response = await Call(consumer with { ServiceId = other.ServiceId }, "/verify?number=%2B4930123456");

        await Problem.AssertAsync(response, HttpStatusCode.Forbidden, "not-entitled");
    }

    [Theory]
    [InlineData("no-such-service")]
    [InlineData("UPPER")]
    [InlineData("x")]
    public async Task Call_ToUnknownService_Is404(string serviceId)
    {
        var consumer = await M.CreateConsumerAsync(balance: 100);

        using var response = await Call(consumer with { ServiceId = serviceId }, "/verify");

        await Problem.AssertAsync(response, HttpStatusCode.NotFound, "unknown-service");
    }

    [Fact]
    public async Task Call_WithEmptyBalance_Is402WithPriceAndBalance()
    {
        var consumer = await M.CreateConsumerAsync(balance: 0, price: 5);

        using var response = await Call(consumer, "/verify?number=%2B4930123456");
        var problem = await Problem.AssertAsync(response, HttpStatusCode.PaymentRequired, "insufficient-balance");

        Assert.Equal(5, problem.GetProperty("price").GetInt64());
        Assert.Equal(0, problem.GetProperty("available").GetInt64());
        Assert.Equal("EUR", problem.GetProperty("currency").GetString());
    }

    [Fact]
    public async Task Call_BalanceForTwoCalls_AdmitsExactlyTwoOfTen()
    {
        var consumer = await M.CreateConsumerAsync(balance: 10, price: 5);

        var responses = await Task.WhenAll(Enumerable.Range(0, 10).Select(_ => Call(consumer, "/verify?number=%2B4930123456")));
        var account = await M.WaitForAccountAsync(consumer.AccountId, a => a.GetProperty("reserved").GetInt64() == 0);

        Assert.Equal(2, responses.Count(r => r.StatusCode == HttpStatusCode.OK));
        Assert.Equal(8, responses.Count(r => r.StatusCode == HttpStatusCode.PaymentRequired));
        Assert.Equal(0, account.GetProperty("balance").GetInt64());
    }

    [Fact]
    public async Task Call_UpstreamFailing_Is502AndNotCharged()
    {
        var consumer = await M.CreateConsumerAsync(balance: 100, upstreamPath: "/ip");
        using var control = await M.Provider.PutAsJsonAsync("/_control/ip", new { mode = "fail" });
        control.EnsureSuccessStatusCode();
        try
        {
            using var response = await Call(consumer, "/geo?ip=8.8.8.8");
            var account = await M.WaitForAccountAsync(consumer.AccountId, a => a.GetProperty("usage").GetProperty("calls").GetInt64() == 1);

            await Problem.AssertAsync(response, HttpStatusCode.BadGateway, "upstream-error");
            Assert.Equal(100, account.GetProperty("balance").GetInt64());
            Assert.Equal(0, account.GetProperty("reserved").GetInt64());
        }
        finally
        {
            await M.Provider.DeleteAsync("/_control");
        }
    }

    [Fact]
    public async Task Call_UpstreamUnreachable_Is502()
    {
        var consumer = await M.CreateConsumerAsync(balance: 100, upstreamBaseUrl: $"http://127.0.0.1:{Ports.Free()}/nothing");

        using var response = await Call(consumer, "/x");

        await Problem.AssertAsync(response, HttpStatusCode.BadGateway, "upstream-error");
    }

    [Fact]
    public async Task Call_UpstreamSlowerThanTimeout_Is504AndNotCharged()
    {
        var consumer = await M.CreateConsumerAsync(balance: 100, upstreamPath: "/device", timeoutMs: 200);
        using var control = await M.Provider.PutAsJsonAsync("/_control/device", new { mode = "hang" });
        control.EnsureSuccessStatusCode();
        try
        {
            using var response = await Call(consumer, "/risk?deviceId=abc");
            var account = await M.WaitForAccountAsync(consumer.AccountId, a => a.GetProperty("usage").GetProperty("calls").GetInt64() == 1);

            await Problem.AssertAsync(response, HttpStatusCode.GatewayTimeout, "upstream-timeout");
            Assert.Equal(100, account.GetProperty("balance").GetInt64());
        }
        finally
        {
            await M.Provider.DeleteAsync("/_control");
        }
    }

    [Fact]
    public async Task Call_UpstreamRejectsInput_PassesItsAnswerThroughUncharged()
    {
        var consumer = await M.CreateConsumerAsync(balance: 100);

        using var response = await Call(consumer, "/verify?number=abc");
        var account = await M.WaitForAccountAsync(consumer.AccountId, a => a.GetProperty("usage").GetProperty("calls").GetInt64() == 1);

        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        Assert.Equal(100, account.GetProperty("balance").GetInt64());
    }

    [Fact]
    public async Task Call_PathWithDotSegments_IsRefused()
    {
        var consumer = await M.CreateConsumerAsync(balance: 100);

        using var response = await Call(consumer, "/%2E%2E/_control");

        // Client and Kestrel resolve dot segments before routing, so the call never leaves the service's base path;
        // whatever is left of it must be refused (the pipeline itself also refuses dot segments: see UpstreamPath tests).
        Assert.InRange((int)response.StatusCode, 400, 499);
        Assert.Equal("application/problem+json", response.Content.Headers.ContentType?.MediaType);
    }

    [Fact]
    public async Task Usage_WithOwnKey_ShowsOwnBalanceAndCounts()
    {
        var consumer = await M.CreateConsumerAsync(balance: 50, price: 5);
        (await Call(consumer, "/verify?number=%2B4930123456")).Dispose();
        await M.WaitForAccountAsync(consumer.AccountId, a => a.GetProperty("usage").GetProperty("calls").GetInt64() == 1);

        using var request = new HttpRequestMessage(HttpMethod.Get, "/v1/usage");
        request.Headers.Add("X-Api-Key", consumer.ApiKey);
        using var response = await M.Anonymous.SendAsync(request);
        var usage = await response.Content.ReadFromJsonAsync<JsonElement>();

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal(consumer.AccountId, usage.GetProperty("account").GetProperty("id").GetString());
        Assert.Equal(45, usage.GetProperty("account").GetProperty("balance").GetInt64());
        Assert.Equal(1, usage.GetProperty("key").GetProperty("usage").GetProperty("calls").GetInt64());
        Assert.DoesNotContain(consumer.ApiKey.Split('.')[1], await response.Content.ReadAsStringAsync());
    }

    [Fact]
    public async Task AdminApi_WithConsumerKeyOrNothing_Is401()
    {
        var consumer = await M.CreateConsumerAsync(balance: 50);
        using var request = new HttpRequestMessage(HttpMethod.Get, $"/admin/accounts/{consumer.AccountId}");
        request.Headers.Add("X-Api-Key", consumer.ApiKey);
        request.Headers.Authorization = new System.Net.Http.Headers.AuthenticationHeaderValue("Bearer", consumer.ApiKey);

        using var withConsumerKey = await M.Anonymous.SendAsync(request);
        using var withNothing = await M.Anonymous.GetAsync("/admin/accounts");
        using var dashboard = await M.Anonymous.GetAsync("/dashboard/");

        await Problem.AssertAsync(withConsumerKey, HttpStatusCode.Unauthorized, "admin-unauthorized");
        await Problem.AssertAsync(withNothing, HttpStatusCode.Unauthorized, "admin-unauthorized");
        Assert.Equal(HttpStatusCode.Unauthorized, dashboard.StatusCode);
    }

    [Fact]
    public async Task Dashboard_WithAdminBasicAuth_IsServed()
    {
        using var request = new HttpRequestMessage(HttpMethod.Get, "/dashboard/");
        request.Headers.Authorization = new System.Net.Http.Headers.AuthenticationHeaderValue(
            "Basic", Convert.ToBase64String(System.Text.Encoding.UTF8.GetBytes("admin:" + TestHosts.AdminKey)));

        using var response = await M.Anonymous.SendAsync(request);

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
    }

    [Theory]
    [InlineData("/admin/services", "{\"id\":\"x-svc\",")]
    [InlineData("/admin/services", "[1,2,3]")]
    [InlineData("/admin/services", "{\"id\":\"ok-svc\",\"name\":\"n\",\"providerId\":\"p1\",\"upstreamBaseUrl\":\"ftp://x\",\"pricePerCall\":-1,\"currency\":\"eur\"}")]
    [InlineData("/admin/accounts", "{\"id\":\"../etc\",\"name\":\"n\",\"currency\":\"EUR\"}")]
    [InlineData("/admin/accounts", "{\"id\":\"ok-acct\",\"name\":\"n\",\"currency\":\"EUR\",\"creditLimit\":\"lots\"}")]
    [InlineData("/admin/accounts/no-such-account/top-ups", "{\"amount\":-5,\"reason\":\"x\"}")]
    [InlineData("/admin/providers", "{\"id\":\"p\\u0000\",\"name\":\"\"}")]
    public async Task AdminApi_BadInput_Is400ProblemWithTrackId(string path, string json)
    {
        using var content = new StringContent(json, System.Text.Encoding.UTF8, "application/json");

        using var response = await M.Admin.PostAsync(path, content);

        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        Assert.Equal("application/problem+json", response.Content.Headers.ContentType?.MediaType);
        var problem = await response.Content.ReadFromJsonAsync<JsonElement>();
        Assert.Equal(response.Headers.GetValues("X-Track-Id").Single(), problem.GetProperty("trackId").GetString());
    }

    [Theory]
    [InlineData("application/json; charset=utf-7")]
    [InlineData("application/json; charset=no-such-charset")]
    [InlineData("text/plain")]
    [InlineData("application/xml")]
    public async Task AdminApi_BodyInAnUnreadableMediaType_Is4xxProblemNotAConflict(string contentType)
    {
        using var content = new ByteArrayContent("{\"id\":\"charset-acct\",\"name\":\"n\",\"currency\":\"EUR\"}"u8.ToArray());
        content.Headers.TryAddWithoutValidation("Content-Type", contentType);

        using var response = await M.Admin.PostAsync("/admin/accounts", content);

        // A body that cannot be read as JSON in this media type or charset: 415, never 409 or 500.
        var text = await response.Content.ReadAsStringAsync();
        Assert.True(response.StatusCode == HttpStatusCode.UnsupportedMediaType, $"{(int)response.StatusCode}: {text}");
        Assert.Equal("application/problem+json", response.Content.Headers.ContentType?.MediaType);
        Assert.Equal(response.Headers.GetValues("X-Track-Id").Single(), JsonDocument.Parse(text).RootElement.GetProperty("trackId").GetString());
        Assert.Equal(HttpStatusCode.NotFound, (await M.Admin.GetAsync("/admin/accounts/charset-acct")).StatusCode);
    }

    [Fact]
    public async Task AdminApi_InvalidServiceChange_LeavesServiceUnchanged()
    {
        var consumer = await M.CreateConsumerAsync(balance: 50, price: 5);
        var before = await M.Admin.GetStringAsync($"/admin/services/{consumer.ServiceId}");

        using var response = await M.Admin.PutAsJsonAsync($"/admin/services/{consumer.ServiceId}", new
        {
            name = "renamed", providerId = "someone-else", upstreamBaseUrl = "not a url", pricePerCall = -3, currency = "EUR",
        });
        var after = await M.Admin.GetStringAsync($"/admin/services/{consumer.ServiceId}");

        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        Assert.Equal(before, after);
    }

    [Fact]
    public async Task KeyCreation_ShowsSecretOnceAndNeverAgain()
    {
        var consumer = await M.CreateConsumerAsync(balance: 50);
        var secret = consumer.ApiKey.Split('.')[1];

        var key = await M.Admin.GetStringAsync($"/admin/keys/{consumer.KeyId}");
        var account = await M.Admin.GetStringAsync($"/admin/accounts/{consumer.AccountId}");

        Assert.DoesNotContain(secret, key);
        Assert.DoesNotContain(secret, account);
    }

    [Fact]
    public async Task Health_LiveAndReady_Are200()
    {

        using var live = await M.Anonymous.GetAsync("/health/live");
        using var ready = await M.Anonymous.GetAsync("/health/ready");

        Assert.Equal(HttpStatusCode.OK, live.StatusCode);
        Assert.Equal(HttpStatusCode.OK, ready.StatusCode);
    }

    [Fact]
    public async Task UnknownRoute_Is404ProblemWithTrackId()
    {

        using var response = await M.Anonymous.GetAsync("/no/such/route");

        Assert.Equal(HttpStatusCode.NotFound, response.StatusCode);
        Assert.True(response.Headers.Contains("X-Track-Id"));
    }

    private Task<HttpResponseMessage> Call(Consumer consumer, string pathAndQuery, string? trackId = null)
    {
        var request = new HttpRequestMessage(HttpMethod.Get, $"/v1/call/{consumer.ServiceId}{pathAndQuery}");
        if (!string.IsNullOrEmpty(consumer.ApiKey))
        {
            request.Headers.TryAddWithoutValidation("X-Api-Key", consumer.ApiKey);
        }

        if (trackId is not null)
        {
            request.Headers.TryAddWithoutValidation("X-Track-Id", trackId);
        }

        return M.Anonymous.SendAsync(request);
    }
}
