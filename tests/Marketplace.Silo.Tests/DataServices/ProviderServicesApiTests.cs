using System.Collections.Concurrent;
using System.Net;
using System.Net.Http.Json;
using System.Text.Json;
using Marketplace.Silo.Tests.Infrastructure;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;

namespace Marketplace.Silo.Tests.DataServices;

/// <summary>The provider API (<c>/provider/services</c>): a provider manages its own services and never another's.</summary>
[Collection(PostgresCollection.Name)]
public sealed class ProviderServicesApiTests(DataServicesFixture fixture) : IClassFixture<DataServicesFixture>
{
    private DataServicesFixture F => fixture;

    [Fact]
    public async Task ProviderApi_OwnService_CreatedVersionedReleasedAndPublishedUnderTheKeysProvider()
    {
        using var pClient = await CreateProviderWithClientAsync();
        var p = pClient.ProviderId;
        var service = DataServicesFixture.NewId("svc");

        var created = await SendOkAsync(pClient.PostAsJsonAsync("/provider/services", new { id = service, name = "P's service", pricePerCall = 3, currency = "EUR" }));
        await SendOkAsync(pClient.PutAsJsonAsync($"/provider/services/{service}/versions/v1", new { baseUrl = F.ProviderUrl + "/phone", timeoutMs = 5000 }));
        await SendOkAsync(pClient.PutAsJsonAsync($"/provider/services/{service}/release", new { weights = new { v1 = 100 } }));
        var published = await SendOkAsync(pClient.PostAsJsonAsync($"/provider/services/{service}/status", new { status = "published" }));
        var consumer = await F.CreateConsumerAsync(100, service);
        using var call = await F.CallAsync(service, consumer.ApiKey);

        Assert.Equal(p, created.GetProperty("providerId").GetString());
        Assert.Equal("draft", created.GetProperty("status").GetString());
        Assert.Equal("published", published.GetProperty("status").GetString());
        Assert.Equal(HttpStatusCode.OK, call.StatusCode);
        Assert.Equal("v1", call.Headers.GetValues("X-Service-Version").Single());
        Assert.Equal(["provider:" + p], await AuditActorsAsync(service));
    }

    // Who the audit log says changed the service.
    private async Task<List<string>> AuditActorsAsync(string serviceId)
    {
        await using var connection = new Npgsql.NpgsqlConnection(F.ConnectionString);
        await connection.OpenAsync();
        await using var command = new Npgsql.NpgsqlCommand("SELECT DISTINCT actor FROM marketplace_audit_log WHERE entity_kind = 'service' AND entity_id = $1", connection);
        command.Parameters.AddWithValue(serviceId);
        var actors = new List<string>();
        await using var reader = await command.ExecuteReaderAsync();
        while (await reader.ReadAsync())
        {
            actors.Add(reader.GetString(0));
        }

        return actors;
    }

    [Fact]
    public async Task ProviderApi_AnotherProvidersService_Is404ForEveryReadAndChangeAnd409OnCreate()
    {
        using var pClient = await CreateProviderWithClientAsync();
        using var qClient = await CreateProviderWithClientAsync();
        var p = pClient.ProviderId;
        var service = DataServicesFixture.NewId("svc");
        await SendOkAsync(pClient.PostAsJsonAsync("/provider/services", new { id = service, name = "P's service", pricePerCall = 3, currency = "EUR" }));
        await SendOkAsync(pClient.PutAsJsonAsync($"/provider/services/{service}/versions/v1", new { baseUrl = F.ProviderUrl + "/phone", timeoutMs = 5000 }));
        await SendOkAsync(pClient.PutAsJsonAsync($"/provider/services/{service}/release", new { weights = new { v1 = 100 } }));
        await SendOkAsync(pClient.PostAsJsonAsync($"/provider/services/{service}/status", new { status = "published" }));
        var before = await F.Admin.GetStringAsync($"/admin/services/{service}");
        var hijack = new { id = service, name = "Q's now", pricePerCall = 0, currency = "EUR", upstreamBaseUrl = "http://127.0.0.1:9/evil" };
        var version = new { baseUrl = "http://127.0.0.1:9/evil", timeoutMs = 5000 };

        using var get = await qClient.GetAsync($"/provider/services/{service}");
        using var putVersion = await qClient.PutAsJsonAsync($"/provider/services/{service}/versions/v1", version);
        using var newVersion = await qClient.PutAsJsonAsync($"/provider/services/{service}/versions/v9", version);
        using var deleteVersion = await qClient.DeleteAsync($"/provider/services/{service}/versions/v1");
        using var release = await qClient.PutAsJsonAsync($"/provider/services/{service}/release", new { weights = new { v1 = 100 } });
        using var rollback = await qClient.PostAsJsonAsync($"/provider/services/{service}/rollback", new { });
        using var status = await qClient.PostAsJsonAsync($"/provider/services/{service}/status", new { status = "suspended" });
        using var create = await qClient.PostAsJsonAsync("/provider/services", hijack);
        using var put = await qClient.PutAsJsonAsync($"/provider/services/{service}", hijack);
        var after = await F.Admin.GetStringAsync($"/admin/services/{service}");
        var ownRead = await pClient.GetFromJsonAsync<JsonElement>($"/provider/services/{service}");

        foreach (var response in new[] { get, putVersion, newVersion, deleteVersion, release, rollback, status })
        {
            await Problem.AssertAsync(response, HttpStatusCode.NotFound, "not-found");
        }

        await Problem.AssertAsync(create, HttpStatusCode.Conflict, "id-taken");
        // PUT /{id} is the same upsert as POST: creating under a taken id answers like the create does.
        await Problem.AssertAsync(put, HttpStatusCode.Conflict, "id-taken");
        Assert.Equal(before, after);
        Assert.Equal(p, ownRead.GetProperty("providerId").GetString());
    }

    [Fact]
    public async Task ProviderApi_List_ShowsOnlyTheKeysProvidersServices()
    {
        using var pClient = await CreateProviderWithClientAsync();
        using var qClient = await CreateProviderWithClientAsync();
        var (p, q) = (pClient.ProviderId, qClient.ProviderId);
        var mine = new[] { DataServicesFixture.NewId("svc"), DataServicesFixture.NewId("svc") };
        foreach (var id in mine)
        {
            await SendOkAsync(pClient.PostAsJsonAsync("/provider/services", new { id, name = "P " + id, pricePerCall = 1, currency = "EUR" }));
        }

        var theirs = DataServicesFixture.NewId("svc");
        await SendOkAsync(qClient.PostAsJsonAsync("/provider/services", new { id = theirs, name = "Q " + theirs, pricePerCall = 1, currency = "EUR" }));
        await F.CreateServiceAsync(await F.CreateProviderAsync());

        var list = await pClient.GetFromJsonAsync<JsonElement>("/provider/services?pageSize=100");
        var askingForQ = await pClient.GetFromJsonAsync<JsonElement>($"/provider/services?providerId={q}&pageSize=100");

        Assert.Equal(mine.Order(StringComparer.Ordinal), list.GetProperty("items").EnumerateArray().Select(i => i.GetProperty("id").GetString()).Order(StringComparer.Ordinal));
        Assert.Equal(2, list.GetProperty("total").GetInt32());
        Assert.All(askingForQ.GetProperty("items").EnumerateArray(), item => Assert.Equal(p, item.GetProperty("providerId").GetString()));
    }

    [Theory]
    [InlineData(null)]
    [InlineData("")]
    [InlineData("not-a-key")]
    [InlineData("mp_no-such-provider.AAAAAAAAAAAAAAAAAAAAAAAAAAAA")]
    [InlineData("{wrong-secret}")]
    [InlineData("{admin-key}")]
    public async Task ProviderApi_WithoutAValidProviderKey_Is401Problem(string? presented)
    {
        var p = await F.CreateProviderAsync();
        await F.Api.PostOk($"/admin/providers/{p}/keys", new { });
        presented = presented?.Replace("{wrong-secret}", $"mp_{p}.{new string('A', 43)}", StringComparison.Ordinal)
            .Replace("{admin-key}", TestHosts.AdminKey, StringComparison.Ordinal);
        using var request = new HttpRequestMessage(HttpMethod.Get, "/provider/services");
        if (presented is not null)
        {
            request.Headers.TryAddWithoutValidation("X-Provider-Key", presented);
        }

        using var response = await F.Anonymous.SendAsync(request);

        await Problem.AssertAsync(response, HttpStatusCode.Unauthorized, "provider-unauthorized");
    }

    [Fact]
    public async Task SecretHeaders_NeverShownInAnyRead_AndSentToTheUpstream()
    {
        await using var upstream = await EchoUpstream.StartAsync();
        using var pClient = await CreateProviderWithClientAsync();
        var p = pClient.ProviderId;
        var service = DataServicesFixture.NewId("svc");
        var secret = "s3cret-" + Guid.NewGuid().ToString("N");
        await SendOkAsync(pClient.PostAsJsonAsync("/provider/services", new { id = service, name = "Secretive " + service, pricePerCall = 1, currency = "EUR" }));
        var versionAnswer = await SendOkAsync(pClient.PutAsJsonAsync($"/provider/services/{service}/versions/v1", new
        {
            baseUrl = upstream.Url, timeoutMs = 5000,
            headers = new Dictionary<string, string> { ["X-Plain"] = "plain" },
            secretHeaders = new Dictionary<string, string> { ["X-Upstream-Token"] = secret },
        }));
        // Sending "(hidden)" back, as a read shows it, keeps the stored value.
        await SendOkAsync(pClient.PutAsJsonAsync($"/provider/services/{service}/versions/v1", new
        {
            baseUrl = upstream.Url, timeoutMs = 4000,
            headers = new Dictionary<string, string> { ["X-Plain"] = "plain" },
            secretHeaders = new Dictionary<string, string> { ["X-Upstream-Token"] = "(hidden)" },
        }));
        await SendOkAsync(pClient.PostAsJsonAsync($"/provider/services/{service}/status", new { status = "published" }));
        var consumer = await F.CreateConsumerAsync(100, service);

        var reads = new List<string>
        {
            versionAnswer.ToString(),
            await pClient.GetStringAsync($"/provider/services/{service}"),
            await pClient.GetStringAsync("/provider/services"),
            await F.Admin.GetStringAsync($"/admin/services/{service}"),
            await F.Admin.GetStringAsync($"/admin/services?providerId={p}"),
            await F.Anonymous.GetStringAsync($"/v1/services/{service}"),
            await F.Anonymous.GetStringAsync($"/v1/services?search={service}"),
        };
        using var call = await F.CallAsync(service, consumer.ApiKey, "/echo");
        var shown = JsonDocument.Parse(reads[1]).RootElement.GetProperty("versions")[0].GetProperty("spec");

        Assert.All(reads, read => Assert.DoesNotContain(secret, read));
        Assert.Equal("(hidden)", shown.GetProperty("secretHeaders").GetProperty("X-Upstream-Token").GetString());
        Assert.Equal("plain", shown.GetProperty("headers").GetProperty("X-Plain").GetString());
        Assert.Equal(HttpStatusCode.OK, call.StatusCode);
        Assert.Equal(secret, Assert.Single(upstream.Received("X-Upstream-Token")));
        Assert.Equal("plain", Assert.Single(upstream.Received("X-Plain")));
    }

    /// <summary>A new provider and a client that sends its provider key.</summary>
    private async Task<ProviderClient> CreateProviderWithClientAsync()
    {
        var providerId = await F.CreateProviderAsync();
        var issued = await F.Api.PostOk($"/admin/providers/{providerId}/keys", new { });
        Assert.Equal(providerId, issued.GetProperty("providerId").GetString());
        var client = new ProviderClient(providerId) { BaseAddress = F.Anonymous.BaseAddress };
        client.DefaultRequestHeaders.Add("X-Provider-Key", issued.GetProperty("key").GetString());
        return client;
    }

    private sealed class ProviderClient(string providerId) : HttpClient
    {
        public string ProviderId { get; } = providerId;
    }

    private static async Task<JsonElement> SendOkAsync(Task<HttpResponseMessage> request)
    {
        using var response = await request;
        return await DataServicesFixture.ReadOkAsync(response);
    }

    /// <summary>An upstream on loopback that remembers the headers it was sent (the sample provider does not show them).</summary>
    private sealed class EchoUpstream : IAsyncDisposable
    {
        private readonly WebApplication _app;
        private readonly ConcurrentQueue<(string Name, string Value)> _headers = new();

        private EchoUpstream(WebApplication app) => _app = app;

        public string Url => _app.Urls.First().TrimEnd('/');

        public static async Task<EchoUpstream> StartAsync()
        {
            var builder = WebApplication.CreateSlimBuilder(["--urls", "http://127.0.0.1:0", "--Logging:LogLevel:Default=Warning"]);
            var app = builder.Build();
            var echo = new EchoUpstream(app);
            app.MapGet("/echo", (HttpRequest request) =>
            {
                foreach (var (name, values) in request.Headers)
                {
                    echo._headers.Enqueue((name, values.ToString()));
                }

                return Results.Json(new { ok = true });
            });
            await app.StartAsync();
            return echo;
        }

        public List<string> Received(string header) =>
            [.. _headers.Where(h => string.Equals(h.Name, header, StringComparison.OrdinalIgnoreCase)).Select(h => h.Value)];

        public async ValueTask DisposeAsync() => await _app.DisposeAsync();
    }
}
