using System.Net;
using System.Text.Json;
using Marketplace.Silo.Tests.Infrastructure;

namespace Marketplace.Silo.Tests.Cluster;

/// <summary>
/// The same binary in its roles, as separate processes: calls through a front door that is only an Orleans client keep
/// every promise of the co-hosted one (exact quotas, one charge per call, a call-log row per call), and an internal .NET
/// client against the same cluster runs the same pipeline.
/// </summary>
[Collection(PostgresCollection.Name)]
public sealed class ClusterRolesTests(RolesClusterFixture cluster) : IClassFixture<RolesClusterFixture>
{
    private const string CallPath = "/verify?number=%2B4915112345678";

    [Fact]
    public async Task FrontDoor_ConcurrentCallsOverAQuota_AdmitsExactlyTheQuotaChargesEachOnceAndLogsEveryCall()
    {
        const int quota = 25;
        const int attempts = 60;
        const long price = 3;
        var consumer = await cluster.Api.CreateConsumerAsync(balance: 100_000, price: price, limits: new { quota = new { perDay = quota } });

        using var http = new HttpClient(new SocketsHttpHandler { MaxConnectionsPerServer = 16 })
        {
            BaseAddress = cluster.FrontDoor.BaseAddress,
            Timeout = TimeSpan.FromSeconds(30),
        };
        http.DefaultRequestHeaders.Add("X-Api-Key", consumer.ApiKey);
        var statuses = await Task.WhenAll(Enumerable.Range(0, attempts).Select(async _ =>
        {
            using var response = await http.GetAsync($"/v1/call/{consumer.ServiceId}{CallPath}");
            return response.StatusCode;
        }));

        Assert.Equal(quota, statuses.Count(status => status == HttpStatusCode.OK));
        Assert.Equal(attempts - quota, statuses.Count(status => status == HttpStatusCode.Forbidden));

        // Settlement is asynchronous: wait for the charges, then check there is exactly one per admitted call.
        var account = await cluster.Api.WaitForAccountAsync(consumer.AccountId, a => a.GetProperty("totalCharged").GetInt64() >= quota * price);
        Assert.Equal(quota * price, account.GetProperty("totalCharged").GetInt64());
        Assert.Equal(100_000 - quota * price, account.GetProperty("balance").GetInt64());
        Assert.Equal(quota, account.GetProperty("usage").GetProperty("calls").GetInt64());

        var rows = await RolesClusterFixture.WaitForCallLogAsync(cluster.ConnectionString, consumer.ServiceId, attempts);
        Assert.Equal(attempts, rows.Count);
        Assert.Equal(attempts, rows.Select(row => row.TrackId).Distinct().Count());
        Assert.Equal(quota, rows.Count(row => row.Outcome == "succeeded"));
        Assert.Equal(attempts - quota, rows.Count(row => row.Rejection == "QuotaExhausted"));
        Assert.Equal(quota * price, rows.Sum(row => row.Charged));
    }

    [Fact]
    public async Task InternalClient_SameCluster_RefusesAWrongKeyAndChargesAndLogsACallOnce()
    {
        const long price = 7;
        var consumer = await cluster.Api.CreateConsumerAsync(balance: 1_000, price: price);

        var refused = await cluster.Client.CallAsync(consumer.ServiceId, $"mk_{consumer.KeyId}.not-the-secret-000000000000", CallPath);
        Assert.Equal(CallOutcome.Rejected, refused.Outcome);
        Assert.Equal(AdmitOutcome.InvalidCredentials, refused.Rejection);
        Assert.Equal(0, refused.Charged);

        var served = await cluster.Client.CallAsync(consumer.ServiceId, consumer.ApiKey, CallPath);
        Assert.Equal(CallOutcome.Succeeded, served.Outcome);
        Assert.Equal(200, served.UpstreamStatus);
        Assert.Equal(price, served.Charged);
        Assert.Equal("+4915112345678", JsonDocument.Parse(served.Body!).RootElement.GetProperty("number").GetString());
        Assert.NotEqual(refused.TrackId, served.TrackId);

        var account = await cluster.Api.WaitForAccountAsync(consumer.AccountId, a => a.GetProperty("totalCharged").GetInt64() >= price);
        Assert.Equal(price, account.GetProperty("totalCharged").GetInt64());
        Assert.Equal(1, account.GetProperty("usage").GetProperty("calls").GetInt64());

        var rows = await RolesClusterFixture.WaitForCallLogAsync(cluster.ConnectionString, consumer.ServiceId, 2);
        Assert.Equal(2, rows.Count);
        var servedRow = Assert.Single(rows, row => row.TrackId == served.TrackId);
        Assert.Equal(("succeeded", price), (servedRow.Outcome, servedRow.Charged));
        var refusedRow = Assert.Single(rows, row => row.TrackId == refused.TrackId);
        Assert.Equal(("rejected", "InvalidCredentials", 0L), (refusedRow.Outcome, refusedRow.Rejection, refusedRow.Charged));
    }

    [Fact]
    public async Task SiloRole_ServesHealthButNeitherTheCallNorTheAdminApi()
    {
        using var silo = new HttpClient { BaseAddress = cluster.SiloA.BaseAddress, Timeout = TimeSpan.FromSeconds(30) };
        silo.DefaultRequestHeaders.Add("X-Admin-Key", TestHosts.AdminKey);

        using (var ready = await silo.GetAsync("/health/ready"))
        {
            Assert.Equal(HttpStatusCode.OK, ready.StatusCode);
        }

        using (var call = await silo.GetAsync($"/v1/call/any-service{CallPath}"))
        {
            Assert.Equal(HttpStatusCode.NotFound, call.StatusCode);
        }

        using (var admin = await silo.GetAsync("/admin/accounts"))
        {
            Assert.Equal(HttpStatusCode.NotFound, admin.StatusCode);
        }

        // The front door's readiness is its cluster connection.
        using var frontDoorReady = await cluster.Admin.GetAsync("/health/ready");
        Assert.Equal(HttpStatusCode.OK, frontDoorReady.StatusCode);
    }

    [Fact]
    public async Task UnknownRole_StopsTheStartWithAMessageNamingTheSetting()
    {
        await using var host = new SiloProcess(cluster.ConnectionString, "badrole-" + Guid.NewGuid().ToString("N")[..8], role: "banana");

        var failure = await Assert.ThrowsAsync<InvalidOperationException>(() => host.StartAsync());

        Assert.Contains("exited with code 2", failure.Message);
        Assert.Contains("Host:Role must be 'all', 'silo' or 'frontdoor' (was 'banana')", failure.Message);
    }
}
