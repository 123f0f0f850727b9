using System.Net;
using System.Net.Http.Headers;
using Marketplace.Grains;
using Marketplace.Silo.Tests.Infrastructure;
using Microsoft.Extensions.DependencyInjection;

namespace Marketplace.Silo.Tests.Observability;

[Collection(PostgresCollection.Name)]
public sealed class MetricsAndHealthHttpTests(MarketplaceFixture marketplace) : IClassFixture<MarketplaceFixture>
{
    private MarketplaceFixture M => marketplace;

    [Fact]
    public async Task Metrics_WithoutAdminKey_Is401()
    {
        using var anonymous = await M.Anonymous.GetAsync("/metrics");
        using var wrong = new HttpRequestMessage(HttpMethod.Get, "/metrics");
        wrong.Headers.Authorization = new AuthenticationHeaderValue("Bearer", "not-the-admin-key-0000");
        using var wrongKey = await M.Anonymous.SendAsync(wrong);

        Assert.Equal(HttpStatusCode.Unauthorized, anonymous.StatusCode);
        Assert.Equal(HttpStatusCode.Unauthorized, wrongKey.StatusCode);
        Assert.DoesNotContain("marketplace_", await anonymous.Content.ReadAsStringAsync(), StringComparison.Ordinal);
    }

    [Fact]
    public async Task Metrics_AdminKeyAsBearerAfterACall_ServesMarketplaceAndOrleansMetricsAsPrometheusText()
    {
        // A balance large enough that the key leases from its account on its first call.
        var consumer = await M.CreateConsumerAsync(balance: 1_000_000, price: 5);
        using var call = new HttpRequestMessage(HttpMethod.Get, $"/v1/call/{consumer.ServiceId}/verify?number=%2B4930123456");
        call.Headers.TryAddWithoutValidation("X-Api-Key", consumer.ApiKey);
        using var called = await M.Anonymous.SendAsync(call);
        Assert.Equal(HttpStatusCode.OK, called.StatusCode);
        await M.WaitForAccountAsync(consumer.AccountId, a => a.GetProperty("usage").GetProperty("calls").GetInt64() == 1);

        using var scrape = new HttpRequestMessage(HttpMethod.Get, "/metrics");
        scrape.Headers.Authorization = new AuthenticationHeaderValue("Bearer", TestHosts.AdminKey);
        using var response = await M.Anonymous.SendAsync(scrape);
        var text = await response.Content.ReadAsStringAsync();

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.StartsWith("text/plain", response.Content.Headers.ContentType?.MediaType, StringComparison.Ordinal);
        Assert.Contains("# TYPE marketplace_settlement_pending gauge", text, StringComparison.Ordinal);
        Assert.Contains("# TYPE marketplace_settlement_flushes_total counter", text, StringComparison.Ordinal);
        Assert.Matches(@"(?m)^marketplace_settlement_flushes_total(\{[^}]*\})? [1-9]", text);
        Assert.Matches(@"(?m)^marketplace_lease_refills_total(\{[^}]*\})? [1-9]", text);
        Assert.Matches(@"(?m)^orleans_", text);
        Assert.Matches(@"(?m)^marketplace_calls_total\{[^}]*outcome=""succeeded""[^}]*\} [1-9]", text);
        Assert.Contains("# TYPE marketplace_call_duration_seconds histogram", text, StringComparison.Ordinal);
        Assert.Contains("# TYPE marketplace_calllog_pending gauge", text, StringComparison.Ordinal);
        Assert.Contains("# TYPE marketplace_calllog_lag_seconds gauge", text, StringComparison.Ordinal);
    }

    [Fact]
    public async Task HealthReady_AllLoopsBeating_Is200AndAFailingLoopMakesIt503()
    {
        var loops = M.Host.App.Services.GetRequiredService<BackgroundLoops>();
        Assert.Contains(loops.Snapshot(), s => s.Name == "call-log" && s.IsHealthy);

        using var healthy = await M.Anonymous.GetAsync("/health/ready");
        loops.Register("test-loop", TimeSpan.FromMinutes(1));
        loops.Failed("test-loop", new InvalidOperationException("broken on purpose"));
        try
        {
            using var failing = await M.Anonymous.GetAsync("/health/ready");
            loops.Beat("test-loop");
            using var recovered = await M.Anonymous.GetAsync("/health/ready");

            Assert.Equal(HttpStatusCode.OK, healthy.StatusCode);
            Assert.Equal(HttpStatusCode.ServiceUnavailable, failing.StatusCode);
            Assert.Equal(HttpStatusCode.OK, recovered.StatusCode);
        }
        finally
        {
            loops.Unregister("test-loop");
        }
    }
}
