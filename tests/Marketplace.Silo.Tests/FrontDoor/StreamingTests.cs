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

    // A real Kestrel upstream answering 50 MB with its length announced, written from one reused buffer.
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
        await app.StartAsync();
        return app;
    }
}
