using System.Diagnostics;
using System.Globalization;
using System.Net;
using Marketplace.Silo.Tests.Infrastructure;

namespace Marketplace.Silo.Tests.DataServices;

/// <summary>
/// Timeouts, failures, the circuit breaker and the concurrency limit of a version, against the real sample provider.
/// Every test flips the provider's switches, so they all live in this one class (run one after the other) with a
/// provider of its own, and each starts by resetting the switches.
/// </summary>
[Collection(PostgresCollection.Name)]
public sealed class UpstreamProtectionHttpTests(DataServicesFixture fixture) : IClassFixture<DataServicesFixture>
{
    private DataServicesFixture F => fixture;

    [Fact]
    public async Task Call_UpstreamHangsPastVersionTimeout_Is504WithTrackIdAndNotCharged()
    {
        await F.ResetProviderAsync();
        var service = await CreateProtectedServiceAsync("/device", price: 5, timeoutMs: 300);
        var consumer = await F.CreateConsumerAsync(100, service);
        await F.SwitchProviderAsync("device", new { mode = "hang" });

        var watch = Stopwatch.StartNew();
        using var response = await F.CallAsync(service, consumer.ApiKey, "/risk?deviceId=abc");
        var answeredAfter = watch.Elapsed;
        var account = await F.WaitForSettledAsync(consumer.AccountId, calls: 1);

        await Problem.AssertAsync(response, HttpStatusCode.GatewayTimeout, "upstream-timeout");
        Assert.True(answeredAfter < TimeSpan.FromSeconds(5), $"the 504 came after {answeredAfter.TotalMilliseconds:F0} ms; the version's timeout is 300 ms");
        Assert.Equal("v1", response.Headers.GetValues("X-Service-Version").Single());
        Assert.Equal("0", response.Headers.GetValues("X-Charged").Single());
        Assert.Equal(100, account.GetProperty("balance").GetInt64());
        TestContext.Current.TestOutputHelper?.WriteLine($"504 upstream-timeout answered {answeredAfter.TotalMilliseconds:F0} ms after the call (version timeout 300 ms)");
    }

    [Fact]
    public async Task Call_UpstreamAnswers500_Is502AndNotCharged()
    {
        await F.ResetProviderAsync();
        var service = await CreateProtectedServiceAsync("/phone", price: 5);
        var consumer = await F.CreateConsumerAsync(100, service);
        await F.SwitchProviderAsync("phone", new { mode = "fail" });

        using var first = await F.CallAsync(service, consumer.ApiKey);
        using var second = await F.CallAsync(service, consumer.ApiKey);
        var account = await F.WaitForSettledAsync(consumer.AccountId, calls: 2);

        await Problem.AssertAsync(first, HttpStatusCode.BadGateway, "upstream-error");
        await Problem.AssertAsync(second, HttpStatusCode.BadGateway, "upstream-error");
        Assert.Equal("0", first.Headers.GetValues("X-Charged").Single());
        Assert.Equal(100, account.GetProperty("balance").GetInt64());
        Assert.Equal(0, account.GetProperty("totalCharged").GetInt64());
    }

    [Theory]
    [InlineData("reset", false)]
    [InlineData("garbage", true)]
    public async Task Call_UpstreamResetsOrSendsGarbageToAMappingVersion_Is502AndNotCharged(string mode, bool mapsResponse)
    {
        await F.ResetProviderAsync();
        var service = await CreateProtectedServiceAsync("/ip", price: 5,
            responseFields: mapsResponse ? new Dictionary<string, string> { ["country"] = "country" } : null);
        var consumer = await F.CreateConsumerAsync(100, service);
        await F.SwitchProviderAsync("ip", new { mode });

        using var response = await F.CallAsync(service, consumer.ApiKey, "/geo?ip=8.8.8.8");
        var account = await F.WaitForSettledAsync(consumer.AccountId, calls: 1);

        await Problem.AssertAsync(response, HttpStatusCode.BadGateway, "upstream-error");
        Assert.Equal("0", response.Headers.GetValues("X-Charged").Single());
        Assert.Equal(100, account.GetProperty("balance").GetInt64());
    }

    [Fact]
    public async Task Call_PerCallServiceUpstreamFails_Is502AndChargedThePrice()
    {
        await F.ResetProviderAsync();
        var provider = await F.CreateProviderAsync();
        var service = await F.CreateServiceAsync(provider, "/phone", price: 7, chargeRule: "perCall");
        var consumer = await F.CreateConsumerAsync(100, service);
        await F.SwitchProviderAsync("phone", new { mode = "fail" });

        using var response = await F.CallAsync(service, consumer.ApiKey);
        var account = await F.WaitForSettledAsync(consumer.AccountId, calls: 1);

        await Problem.AssertAsync(response, HttpStatusCode.BadGateway, "upstream-error");
        Assert.Equal("7", response.Headers.GetValues("X-Charged").Single());
        Assert.Equal(93, account.GetProperty("balance").GetInt64());
        Assert.Equal(7, account.GetProperty("totalCharged").GetInt64());
    }

    [Fact]
    public async Task Breaker_AfterFailures_ShedsBeforeTheUpstreamThenClosesOnceItRecovers()
    {
        await F.ResetProviderAsync();
        var service = await CreateProtectedServiceAsync("/ip", price: 5,
            protection: new { minimumThroughput = 4, failureRatio = 0.5, samplingSeconds = 30, breakSeconds = 1 });
        var consumer = await F.CreateConsumerAsync(1_000, service);
        await F.SwitchProviderAsync("ip", new { mode = "fail" });

        var failures = new List<HttpStatusCode>();
        for (var i = 0; i < 4; i++)
        {
            using var failed = await Geo(service, consumer);
            failures.Add(failed.StatusCode);
        }

        var upstreamCallsWhenOpened = await F.ProviderCallsAsync("ip");
        var shed = new List<HttpResponseMessage>();
        for (var i = 0; i < 3; i++)
        {
            shed.Add(await Geo(service, consumer));
        }

        var upstreamCallsAfterShedding = await F.ProviderCallsAsync("ip");

        await F.SwitchProviderAsync("ip", new { mode = "normal" });
        var recovered = await PollUntilOkAsync(service, consumer, TimeSpan.FromSeconds(10));
        var afterRecovery = new List<HttpStatusCode>();
        for (var i = 0; i < 3; i++)
        {
            using var ok = await Geo(service, consumer);
            afterRecovery.Add(ok.StatusCode);
        }

        Assert.All(failures, status => Assert.Equal(HttpStatusCode.BadGateway, status));
        Assert.Equal(4, upstreamCallsWhenOpened);
        foreach (var response in shed)
        {
            var problem = await Problem.AssertAsync(response, HttpStatusCode.ServiceUnavailable, "upstream-unavailable");
            Assert.Contains("circuit breaker", problem.GetProperty("detail").GetString());
            Assert.InRange(int.Parse(response.Headers.GetValues("Retry-After").Single(), CultureInfo.InvariantCulture), 1, 1);
            Assert.Equal("0", response.Headers.GetValues("X-Charged").Single());
            response.Dispose();
        }

        Assert.Equal(upstreamCallsWhenOpened, upstreamCallsAfterShedding);
        Assert.True(recovered, "the breaker never let a call through again after the upstream recovered");
        Assert.All(afterRecovery, status => Assert.Equal(HttpStatusCode.OK, status));

        // Shed calls were never admitted: only the four failures (uncharged) and the successes count.
        var account = await F.WaitForSettledAsync(consumer.AccountId, calls: 4 + 1 + 3);
        Assert.Equal(1_000 - (4 * 5), account.GetProperty("balance").GetInt64());
    }

    [Fact]
    public async Task Breaker_HalfOpenWithItsProbeInFlight_ShedsOtherCallsWithoutAdmittingThem()
    {
        await F.ResetProviderAsync();
        var service = await CreateProtectedServiceAsync("/ip", price: 5,
            protection: new { minimumThroughput = 4, failureRatio = 0.5, samplingSeconds = 30, breakSeconds = 1 });
        var consumer = await F.CreateConsumerAsync(1_000, service);
        await F.SwitchProviderAsync("ip", new { mode = "fail" });
        for (var i = 0; i < 4; i++)
        {
            (await Geo(service, consumer)).Dispose();
        }

        // The upstream is healthy again but slow, so the first call after the break (the breaker's probe) stays in flight
        // while the others arrive.
        await F.SwitchProviderAsync("ip", new { mode = "normal", delayMs = 1500 });
        var probe = await StartProbeAsync(service, consumer, TimeSpan.FromSeconds(10));
        var others = await Task.WhenAll(Enumerable.Range(0, 8).Select(_ => Geo(service, consumer)));
        using var probed = probe is null ? null : await probe;

        Assert.NotNull(probed);
        Assert.Equal(HttpStatusCode.OK, probed.StatusCode);
        foreach (var response in others)
        {
            await Problem.AssertAsync(response, HttpStatusCode.ServiceUnavailable, "upstream-unavailable");
            Assert.True(response.Headers.Contains("Retry-After"));
            response.Dispose();
        }

        // Shed calls use no quota and count as no call: only the four failures and the probe were admitted.
        var account = await F.Api.WaitForAccountAsync(consumer.AccountId, a => a.GetProperty("reserved").GetInt64() == 0
            && a.GetProperty("usage").GetProperty("calls").GetInt64() >= 5);
        Assert.True(account.GetProperty("usage").GetProperty("calls").GetInt64() == 5,
            $"calls shed while the breaker was half-open were admitted (quota used, counted as failed calls): {account.GetProperty("usage")}");
        Assert.Equal(1_000 - 5, account.GetProperty("balance").GetInt64());
    }

    [Fact]
    public async Task Concurrency_TenCallsOverALimitOfTwo_AdmitsTwoAndShedsEightUncharged()
    {
        await F.ResetProviderAsync();
        var service = await CreateProtectedServiceAsync("/phone", price: 5, protection: new { maxConcurrency = 2 });
        var consumer = await F.CreateConsumerAsync(1_000, service);
        await F.SwitchProviderAsync("phone", new { mode = "slow", delayMs = 1500 });

        var responses = await Task.WhenAll(Enumerable.Range(0, 10).Select(_ => F.CallAsync(service, consumer.ApiKey)));
        var account = await F.WaitForSettledAsync(consumer.AccountId, calls: 2);
        var upstreamCalls = await F.ProviderCallsAsync("phone");

        Assert.Equal(2, responses.Count(r => r.StatusCode == HttpStatusCode.OK));
        var shed = responses.Where(r => r.StatusCode != HttpStatusCode.OK).ToList();
        Assert.Equal(8, shed.Count);
        foreach (var response in shed)
        {
            var problem = await Problem.AssertAsync(response, HttpStatusCode.ServiceUnavailable, "upstream-unavailable");
            Assert.Contains("concurrency limit", problem.GetProperty("detail").GetString());
            Assert.True(int.Parse(response.Headers.GetValues("Retry-After").Single(), CultureInfo.InvariantCulture) >= 1);
            Assert.Equal("0", response.Headers.GetValues("X-Charged").Single());
        }

        Assert.Equal(2, upstreamCalls);
        Assert.Equal(1_000 - (2 * 5), account.GetProperty("balance").GetInt64());
        Assert.Equal(2 * 5, account.GetProperty("totalCharged").GetInt64());
        foreach (var response in responses)
        {
            response.Dispose();
        }
    }

    private async Task<string> CreateProtectedServiceAsync(string upstreamPath, long price, int timeoutMs = 5000, object? protection = null,
        Dictionary<string, string>? responseFields = null)
    {
        var provider = await F.CreateProviderAsync();
        var service = await F.CreateServiceAsync(provider, upstreamPath, price);
        await F.PutVersionAsync(service, "v1", new { baseUrl = F.ProviderUrl + upstreamPath, timeoutMs, protection, responseFields });
        return service;
    }

    private Task<HttpResponseMessage> Geo(string service, Consumer consumer) => F.CallAsync(service, consumer.ApiKey, "/geo?ip=8.8.8.8");

    // Calls until one is not shed at once: that one is the breaker's probe, held by the slow upstream; null past the deadline.
    private async Task<Task<HttpResponseMessage>?> StartProbeAsync(string service, Consumer consumer, TimeSpan deadline)
    {
        var watch = Stopwatch.StartNew();
        while (watch.Elapsed < deadline)
        {
            var call = Geo(service, consumer);
            if (await Task.WhenAny(call, Task.Delay(300)) != call)
            {
                return call;
            }

            using var shed = await call;
            Assert.Equal(HttpStatusCode.ServiceUnavailable, shed.StatusCode);
            await Task.Delay(20);
        }

        return null;
    }

    // Waiting for the break to end is real time by nature: poll, bounded by a deadline, for the outcome.
    private async Task<bool> PollUntilOkAsync(string service, Consumer consumer, TimeSpan deadline)
    {
        var watch = Stopwatch.StartNew();
        while (watch.Elapsed < deadline)
        {
            using var response = await Geo(service, consumer);
            if (response.StatusCode == HttpStatusCode.OK)
            {
                return true;
            }

            Assert.Equal(HttpStatusCode.ServiceUnavailable, response.StatusCode);
            await Task.Delay(20);
        }

        return false;
    }
}
