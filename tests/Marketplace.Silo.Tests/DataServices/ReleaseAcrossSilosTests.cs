using System.Diagnostics;
using System.Net;
using System.Net.Http.Json;
using Marketplace.Silo.Tests.Access;
using Marketplace.Silo.Tests.Infrastructure;

namespace Marketplace.Silo.Tests.DataServices;

/// <summary>A release change made through one front door is served by the other silo's front door within the route cache's age.</summary>
[Collection(PostgresCollection.Name)]
public sealed class ReleaseAcrossSilosTests(TwoSiloFixture cluster) : IClassFixture<TwoSiloFixture>
{
    // The promise is one second (the route cache's age); half a second more for scheduling on a busy test machine.
    private static readonly TimeSpan Bound = TimeSpan.FromMilliseconds(1500);

    [Fact]
    public async Task Release_ChangedAndRolledBackThroughFrontDoorA_IsServedByFrontDoorBWithinTheCacheAge()
    {
        var consumer = await new AdminApi(cluster.Admin, cluster.ProviderUrl).CreateConsumerAsync(balance: 100_000, price: 1, upstreamPath: "/ip");
        await OkAsync(cluster.Admin.PutAsJsonAsync($"/admin/services/{consumer.ServiceId}/versions/v2",
            new { baseUrl = cluster.ProviderUrl.TrimEnd('/') + "/ip", timeoutMs = 5000 }));
        await OkAsync(cluster.Admin.PutAsJsonAsync($"/admin/services/{consumer.ServiceId}/release", new { weights = new { v1 = 100 } }));
        var before = await VersionAsync(consumer);

        await OkAsync(cluster.Admin.PutAsJsonAsync($"/admin/services/{consumer.ServiceId}/release", new { weights = new { v2 = 100 } }));
        var toV2 = await WaitForVersionOnBAsync(consumer, "v2");
        await OkAsync(cluster.Admin.PostAsJsonAsync($"/admin/services/{consumer.ServiceId}/rollback", new { }));
        var backToV1 = await WaitForVersionOnBAsync(consumer, "v1");

        Assert.Equal("v1", before);
        Assert.True(toV2 is { } a && a <= Bound, $"front door B served v2 only after {Describe(toV2)}");
        Assert.True(backToV1 is { } b && b <= Bound, $"front door B served v1 again only after {Describe(backToV1)}");
        TestContext.Current.TestOutputHelper?.WriteLine(
            $"front door B served the new release {toV2!.Value.TotalMilliseconds:F0} ms and the rollback {backToV1!.Value.TotalMilliseconds:F0} ms after the admin call returned on A");
    }

    // Polls front door B from the moment the admin call returned; null when the version never came within 5 s.
    private async Task<TimeSpan?> WaitForVersionOnBAsync(Consumer consumer, string version)
    {
        var watch = Stopwatch.StartNew();
        while (watch.Elapsed < TimeSpan.FromSeconds(5))
        {
            if (await VersionAsync(consumer) == version)
            {
                return watch.Elapsed;
            }

            await Task.Delay(10);
        }

        return null;
    }

    private async Task<string> VersionAsync(Consumer consumer)
    {
        using var response = await DataServicesFixture.CallAsync(cluster.FrontDoorB, consumer.ServiceId, consumer.ApiKey, "/geo?ip=8.8.8.8");
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        return response.Headers.GetValues("X-Service-Version").Single();
    }

    private static async Task OkAsync(Task<HttpResponseMessage> request)
    {
        using var response = await request;
        await DataServicesFixture.ReadOkAsync(response);
    }

    private static string Describe(TimeSpan? elapsed) => elapsed is { } e ? $"{e.TotalMilliseconds:F0} ms" : "more than 5 s";
}
