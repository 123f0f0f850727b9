using System.Diagnostics;
using System.Net;
using Marketplace.Silo.Tests.Infrastructure;

namespace Marketplace.Silo.Tests.Cluster;

/// <summary>
/// A front door's life beside the silos: it waits for the first silo, and on SIGTERM (in the order an operator stops a
/// cluster) it sends what it holds (settlements and call-log rows) before it disconnects, a silo's grains write their
/// state as they deactivate, and a front door's readiness follows whether any silo is there.
/// </summary>
[Collection(PostgresCollection.Name)]
public sealed class FrontDoorShutdownTests(PostgresFixture postgres)
{
    private const string CallPath = "/verify?number=%2B4915112345678";
    private static readonly TimeSpan ReadinessDeadline = TimeSpan.FromSeconds(60);

    [Fact]
    public async Task FrontDoor_WaitsForTheFirstSilo_AndSigTermDrainsSettlementsAndCallLog_SiloWritesGrainState_ReadinessFollowsTheSilos()
    {
        const int calls = 12;
        const long price = 4;
        await using var provider = await TestHosts.StartProviderAsync();
        var connectionString = await postgres.CreateDatabaseAsync("shutdown");
        var cluster = "shutdown-" + Guid.NewGuid().ToString("N")[..8];
        var clock = Stopwatch.StartNew();
        void Step(string what) => TestContext.Current.TestOutputHelper?.WriteLine($"{clock.Elapsed.TotalSeconds,6:F1} s  {what}");

        // Nothing is written behind the calls while these processes run: the silo's write-behind interval and the front
        // door's call-log interval outlast the test, so what is stored afterwards was stored by the shutdowns.
        await using var silo = new SiloProcess(connectionString, cluster, writeBehindInterval: TimeSpan.FromMinutes(10), role: "silo",
            settings: RolesClusterFixture.Quiet);
        await using var frontDoor = new SiloProcess(connectionString, cluster, role: "frontdoor", settings: new Dictionary<string, string>
        {
            ["CallLog:FlushInterval"] = "00:01:00",
            ["Metering:SettleInterval"] = "00:00:01",
            ["Serilog:MinimumLevel:Default"] = "Warning",
        });

        // 0. The front door starts before any silo: it waits for one instead of failing, and is ready once the silo is.
        var frontDoorStarted = frontDoor.StartAsync();
        await WaitForOutputAsync(frontDoor, "Cannot connect to cluster " + cluster + " yet");
        Assert.False(frontDoorStarted.IsCompleted);
        await silo.StartAsync();
        await frontDoorStarted;
        Step("silo and front door ready");

        Consumer consumer;
        using (var admin = AdminClient(frontDoor))
        {
            consumer = await new AdminApi(admin, provider.Urls.First()).CreateConsumerAsync(balance: 10_000, price: price);
        }

        using (var http = new HttpClient { BaseAddress = frontDoor.BaseAddress, Timeout = TimeSpan.FromSeconds(30) })
        {
            http.DefaultRequestHeaders.Add("X-Api-Key", consumer.ApiKey);
            var statuses = await Task.WhenAll(Enumerable.Range(0, calls).Select(async _ =>
            {
                using var response = await http.GetAsync($"/v1/call/{consumer.ServiceId}{CallPath}");
                return response.StatusCode;
            }));
            Assert.All(statuses, status => Assert.Equal(HttpStatusCode.OK, status));
        }

        Assert.Empty(await RolesClusterFixture.ReadCallLogAsync(connectionString, consumer.ServiceId));
        Step($"{calls} calls answered");

        // 1. The front door stops: its call-log rows are written and its last settlements sent before it disconnects.
        await frontDoor.StopAsync();
        Assert.Equal(0, frontDoor.ExitCode);
        var rows = await RolesClusterFixture.ReadCallLogAsync(connectionString, consumer.ServiceId);
        Assert.Equal(calls, rows.Count);
        Assert.Equal(calls * price, rows.Sum(row => row.Charged));
        Step("front door stopped, its call log written");

        // 2. Another front door; the silo stops: its grains write their state, and the front door is no longer ready.
        await using var second = new SiloProcess(connectionString, cluster, role: "frontdoor", settings: RolesClusterFixture.Quiet);
        await second.StartAsync();
        Step("second front door ready");
        await silo.StopAsync();
        Assert.Equal(0, silo.ExitCode);
        Step("silo stopped");
        using var probe = new HttpClient { BaseAddress = second.BaseAddress, Timeout = TimeSpan.FromSeconds(10) };
        Assert.Equal(HttpStatusCode.ServiceUnavailable, await WaitForReadinessAsync(probe, HttpStatusCode.ServiceUnavailable));
        Step("front door not ready");

        // 3. A new silo joins: the front door is ready again and reads what the first silo stored on its way out.
        await using var replacement = new SiloProcess(connectionString, cluster, role: "silo", settings: RolesClusterFixture.Quiet);
        await replacement.StartAsync();
        Step("new silo ready");
        Assert.Equal(HttpStatusCode.OK, await WaitForReadinessAsync(probe, HttpStatusCode.OK));
        Step("front door ready again");

        using var reader = AdminClient(second);
        var account = await new AdminApi(reader, provider.Urls.First()).WaitForAccountAsync(consumer.AccountId, _ => true);
        Assert.Equal(calls * price, account.GetProperty("totalCharged").GetInt64());
        Assert.Equal(10_000 - calls * price, account.GetProperty("balance").GetInt64());
        Assert.Equal(calls, account.GetProperty("usage").GetProperty("calls").GetInt64());
    }

    private static async Task WaitForOutputAsync(SiloProcess host, string text)
    {
        var deadline = DateTime.UtcNow + ReadinessDeadline;
        while (!host.Output.Contains(text, StringComparison.Ordinal))
        {
            Assert.False(host.HasExited, $"The process exited while waiting for '{text}':{Environment.NewLine}{host.Output}");
            Assert.True(DateTime.UtcNow < deadline, $"'{text}' did not appear within {ReadinessDeadline}:{Environment.NewLine}{host.Output}");
            await Task.Delay(100);
        }
    }

    private static HttpClient AdminClient(SiloProcess host)
    {
        var client = new HttpClient { BaseAddress = host.BaseAddress, Timeout = TimeSpan.FromSeconds(30) };
        client.DefaultRequestHeaders.Add("X-Admin-Key", TestHosts.AdminKey);
        return client;
    }

    // Polls /health/ready until it answers the wanted status or the deadline passes; returns the last status seen.
    private static async Task<HttpStatusCode> WaitForReadinessAsync(HttpClient probe, HttpStatusCode wanted)
    {
        var deadline = DateTime.UtcNow + ReadinessDeadline;
        HttpStatusCode status;
        do
        {
            using var response = await probe.GetAsync("/health/ready");
            status = response.StatusCode;
            if (status == wanted)
            {
                break;
            }

            await Task.Delay(100);
        }
        while (DateTime.UtcNow < deadline);

        return status;
    }
}
