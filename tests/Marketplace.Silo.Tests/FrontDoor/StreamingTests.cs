using System.Net;
using Marketplace.Silo.Tests.Infrastructure;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Logging;

namespace Marketplace.Silo.Tests.FrontDoor;

/// <summary>
/// A pass-through version's answer streams from the upstream to the caller as it arrives, through real Kestrel on both
/// sides: a 50 MB answer (over the 8 MB a buffered answer may have) is forwarded whole, charged once, and never held in the
/// marketplace's memory.
/// </summary>
[Collection(PostgresCollection.Name)]
public sealed class StreamingTests(MarketplaceFixture marketplace) : IClassFixture<MarketplaceFixture>
{
    private const int Megabytes = 50;

    [Fact]
    public async Task PassThroughAnswer_OfFiftyMegabytes_StreamsThroughWithoutBeingHeldWhole_AndIsChargedOnce()
    {
        var cancel = TestContext.Current.CancellationToken;
        await using var upstream = await StartLargeUpstreamAsync();
        var consumer = await marketplace.CreateConsumerAsync(balance: 100, price: 3, timeoutMs: 60_000,
            upstreamBaseUrl: upstream.Urls.First().TrimEnd('/') + "/large");
        using var client = new HttpClient { BaseAddress = marketplace.Anonymous.BaseAddress, Timeout = TimeSpan.FromMinutes(2) };
        client.DefaultRequestHeaders.Add("X-Api-Key", consumer.ApiKey);

        // Everything this process allocates while the answer passes: the marketplace runs in it, the caller reads into one buffer.
        var allocatedBefore = GC.GetTotalAllocatedBytes(precise: true);
        using var response = await client.GetAsync($"/v1/call/{consumer.ServiceId}/data", HttpCompletionOption.ResponseHeadersRead, cancel);
        long received = 0;
        var buffer = new byte[64 * 1024];
        await using (var body = await response.Content.ReadAsStreamAsync(cancel))
        {
            int read;
            while ((read = await body.ReadAsync(buffer, cancel)) > 0)
            {
                received += read;
            }
        }

        var allocated = GC.GetTotalAllocatedBytes(precise: true) - allocatedBefore;
        TestContext.Current.TestOutputHelper?.WriteLine($"{received:N0} bytes passed through; the process allocated {allocated:N0} bytes meanwhile.");

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal((long)Megabytes * 1024 * 1024, received);
        Assert.Equal((long)Megabytes * 1024 * 1024, response.Content.Headers.ContentLength);
        Assert.Equal("3", response.Headers.GetValues("X-Charged").Single());
        Assert.True(allocated < Megabytes * 1024 * 1024 / 2, $"the marketplace allocated {allocated:N0} bytes for a {Megabytes} MB answer: it was held whole");
        var account = await marketplace.WaitForAccountAsync(consumer.AccountId, a => a.GetProperty("totalCharged").GetInt64() == 3);
        Assert.Equal(97, account.GetProperty("balance").GetInt64());
    }

    [Fact]
    public async Task PassThroughCall_SendsTheCallersBodyButNoneOfItsHeaders_AndPassesAFourHundredThrough()
    {
        var cancel = TestContext.Current.CancellationToken;
        await using var upstream = await StartLargeUpstreamAsync();
        var consumer = await marketplace.CreateConsumerAsync(balance: 100, price: 3, upstreamBaseUrl: upstream.Urls.First().TrimEnd('/') + "/echo");
        using var request = new HttpRequestMessage(HttpMethod.Post, $"/v1/call/{consumer.ServiceId}/things?x=1")
        {
            Content = new StringContent("{\"name\":\"pass\"}", System.Text.Encoding.UTF8, "application/json"),
        };
        request.Headers.Add("X-Api-Key", consumer.ApiKey);
        request.Headers.Add("Cookie", "session=caller-secret");
        request.Headers.Add("X-Caller-Own", "not-for-upstream");

        using var response = await marketplace.Anonymous.SendAsync(request, cancel);
        var text = await response.Content.ReadAsStringAsync(cancel);
        Assert.True(response.StatusCode == HttpStatusCode.OK, text);
        var echoed = System.Text.Json.JsonDocument.Parse(text).RootElement;
        Assert.Equal("POST /echo/things?x=1", echoed.GetProperty("request").GetString());
        Assert.Equal("{\"name\":\"pass\"}", echoed.GetProperty("body").GetString());
        var sent = echoed.GetProperty("headers").EnumerateArray().Select(h => h.GetString()!.ToLowerInvariant()).ToList();
        Assert.Contains("x-track-id", sent);
        Assert.DoesNotContain("x-api-key", sent);
        Assert.DoesNotContain("cookie", sent);
        Assert.DoesNotContain("x-caller-own", sent);
        Assert.Equal(response.Headers.GetValues("X-Track-Id").Single(), echoed.GetProperty("trackId").GetString());
        Assert.Equal("3", response.Headers.GetValues("X-Charged").Single());
        Assert.Equal("97", response.Headers.GetValues("X-Balance-Available").Single());
        Assert.False(response.Headers.Contains("X-Upstream-Own"), "the upstream's own headers are not passed through");

        // A 4xx is the upstream's own answer: passed through with its body, not charged (charged per success).
        using var refused = new HttpRequestMessage(HttpMethod.Get, $"/v1/call/{consumer.ServiceId}/refuse");
        refused.Headers.Add("X-Api-Key", consumer.ApiKey);
        using var refusal = await marketplace.Anonymous.SendAsync(refused, cancel);
        Assert.Equal(HttpStatusCode.NotFound, refusal.StatusCode);
        Assert.Equal("no such thing", await refusal.Content.ReadAsStringAsync(cancel));
        Assert.Equal("0", refusal.Headers.GetValues("X-Charged").Single());

        // A 5xx becomes the marketplace's own problem answer, with the TrackId, not charged.
        using var failing = new HttpRequestMessage(HttpMethod.Get, $"/v1/call/{consumer.ServiceId}/fail");
        failing.Headers.Add("X-Api-Key", consumer.ApiKey);
        using var failure = await marketplace.Anonymous.SendAsync(failing, cancel);
        Assert.Equal(HttpStatusCode.BadGateway, failure.StatusCode);
        Assert.Equal("application/problem+json", failure.Content.Headers.ContentType?.MediaType);
        var problem = System.Text.Json.JsonDocument.Parse(await failure.Content.ReadAsStringAsync(cancel)).RootElement;
        Assert.Equal(failure.Headers.GetValues("X-Track-Id").Single(), problem.GetProperty("trackId").GetString());
        Assert.False(failure.Headers.Contains("X-Upstream-Own"));

        var account = await marketplace.WaitForAccountAsync(consumer.AccountId, a => a.GetProperty("totalCharged").GetInt64() == 3);
        Assert.Equal(97, account.GetProperty("balance").GetInt64());
    }

    // A real Kestrel upstream answering 50 MB with its length announced, written from one reused buffer, and echoing what it gets.
    private static async Task<WebApplication> StartLargeUpstreamAsync()
    {
        var builder = WebApplication.CreateSlimBuilder();
        builder.Logging.ClearProviders();
        builder.WebHost.UseUrls("http://127.0.0.1:0");
        var app = builder.Build();
        var chunk = new byte[1024 * 1024];
        Array.Fill(chunk, (byte)'x');
        app.MapGet("/large/data", async (HttpContext context) =>
        {
            context.Response.ContentType = "application/octet-stream";
            context.Response.ContentLength = (long)Megabytes * chunk.Length;
            for (var i = 0; i < Megabytes; i++)
            {
                await context.Response.Body.WriteAsync(chunk, context.RequestAborted);
            }
        });

        // Tells what it received: method, path and query, header names, body and TrackId; refuses and fails on request.
        app.MapPost("/echo/things", async (HttpContext context) =>
        {
            using var reader = new StreamReader(context.Request.Body);
            var body = await reader.ReadToEndAsync(context.RequestAborted);
            context.Response.Headers["X-Upstream-Own"] = "upstream";
            return Results.Json(new
            {
                request = $"{context.Request.Method} {context.Request.Path}{context.Request.QueryString}",
                headers = context.Request.Headers.Keys.ToArray(),
                body,
                trackId = context.Request.Headers["X-Track-Id"].ToString(),
            });
        });
        app.MapGet("/echo/refuse", () => Results.Text("no such thing", statusCode: 404));
        app.MapGet("/echo/fail", (HttpContext context) =>
        {
            context.Response.Headers["X-Upstream-Own"] = "upstream";
            return Results.Text("upstream broke", statusCode: 503);
        });
        await app.StartAsync();
        return app;
    }
}
