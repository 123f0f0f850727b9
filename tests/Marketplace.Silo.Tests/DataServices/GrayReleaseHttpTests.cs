using System.Net;
using System.Net.Http.Json;
using System.Text;
using System.Text.Json;
using Marketplace.Silo.Tests.Infrastructure;

namespace Marketplace.Silo.Tests.DataServices;

/// <summary>Weights, stickiness, pins, rollback and refused releases of a two-version service over HTTP.</summary>
[Collection(PostgresCollection.Name)]
public sealed class GrayReleaseHttpTests(DataServicesFixture fixture) : IClassFixture<DataServicesFixture>
{
    private DataServicesFixture F => fixture;

    [Fact]
    public async Task Release_NinetyTen_SplitsFreshKeysByWeightAndKeepsEachKeyOnItsVersion()
    {
        var (service, accountId) = await CreateTwoVersionServiceAsync(balance: 1_000);
        await F.SetReleaseAsync(service, new { weights = new { v1 = 90, v2 = 10 } });
        var keys = await CreateKeysAsync(accountId, service, 200);

        var first = await VersionsServedAsync(service, keys);
        var second = await VersionsServedAsync(service, keys);

        var v2Share = first.Count(v => v == "v2") / (double)keys.Count;
        Assert.All(first, version => Assert.True(version is "v1" or "v2", $"unexpected version {version}"));
        Assert.InRange(v2Share, 0.03, 0.20);
        Assert.Equal(first, second);
        TestContext.Current.TestOutputHelper?.WriteLine($"v2 served {v2Share:P1} of {keys.Count} fresh keys at weight 10");
    }

    [Fact]
    public async Task Release_PinThenRollback_PinnedKeyGetsItsVersionAndRollbackRestoresTheWeights()
    {
        var (service, accountId) = await CreateTwoVersionServiceAsync(balance: 1_000);
        await F.SetReleaseAsync(service, new { weights = new { v1 = 50, v2 = 50 } });
        var keys = await CreateKeysAsync(accountId, service, 20);
        var weighted = await VersionsServedAsync(service, keys);
        var pinnedIndex = weighted.IndexOf("v1");

        var pinned = await F.SetReleaseAsync(service, new
        {
            weights = new { v1 = 100 }, pins = new Dictionary<string, string> { [keys[pinnedIndex].KeyId] = "v2" },
        });
        var whilePinned = await VersionsServedAsync(service, keys);
        var rolledBack = await PostAsync($"/admin/services/{service}/rollback");
        var afterRollback = await VersionsServedAsync(service, keys);

        Assert.Contains("v2", weighted);
        Assert.True(pinnedIndex >= 0, "no key was on v1 at 50/50");
        Assert.Equal(HttpStatusCode.OK, rolledBack.Status);
        Assert.Equal("v2", whilePinned[pinnedIndex]);
        Assert.All(whilePinned.Where((_, i) => i != pinnedIndex), version => Assert.Equal("v1", version));
        Assert.Equal(50, rolledBack.Body.GetProperty("release").GetProperty("weights").GetProperty("v1").GetInt32());
        Assert.Equal(50, rolledBack.Body.GetProperty("release").GetProperty("weights").GetProperty("v2").GetInt32());
        Assert.Empty(rolledBack.Body.GetProperty("release").GetProperty("pins").EnumerateObject());
        Assert.True(rolledBack.Body.GetProperty("release").GetProperty("number").GetInt32() > pinned.GetProperty("release").GetProperty("number").GetInt32());
        Assert.Equal(weighted, afterRollback);
    }

    [Theory]
    [InlineData("""{"weights":{"v1":50,"v2":40}}""")]
    [InlineData("""{"weights":{"v1":120,"v2":-20}}""")]
    [InlineData("""{"weights":{"v1":50,"v3":50}}""")]
    [InlineData("""{"weights":{}}""")]
    [InlineData("""{"pins":{"some-key":"v1"}}""")]
    [InlineData("""{"weights":{"v1":100},"pins":{"some-key":"v9"}}""")]
    [InlineData("""{"weights":{"v1":100},"pins":{"Not A Key!":"v2"}}""")]
    public async Task Release_WeightsNotAddingTo100OrUnknownVersion_Is400AndReleaseUnchanged(string json)
    {
        var (service, _) = await CreateTwoVersionServiceAsync(balance: 1);
        await F.SetReleaseAsync(service, new { weights = new { v1 = 80, v2 = 20 } });
        var before = await F.Admin.GetStringAsync($"/admin/services/{service}");

        using var response = await F.Admin.PutAsync($"/admin/services/{service}/release", new StringContent(json, Encoding.UTF8, "application/json"));
        var after = await F.Admin.GetStringAsync($"/admin/services/{service}");

        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        Assert.Equal("application/problem+json", response.Content.Headers.ContentType?.MediaType);
        Assert.Equal(before, after);
    }

    // Both versions pass calls through to the same upstream; the X-Service-Version header tells them apart.
    private async Task<(string Service, string AccountId)> CreateTwoVersionServiceAsync(long balance)
    {
        var provider = await F.CreateProviderAsync();
        var service = await F.CreateServiceAsync(provider, "/phone", price: 1);
        await F.PutVersionAsync(service, "v2", new { baseUrl = F.ProviderUrl + "/phone", timeoutMs = 5000 });
        return (service, await F.CreateAccountAsync(balance));
    }

    private async Task<List<(string KeyId, string ApiKey)>> CreateKeysAsync(string accountId, string service, int count)
    {
        var keys = new List<(string KeyId, string ApiKey)>();
        foreach (var batch in Enumerable.Range(0, count).Chunk(50))
        {
            keys.AddRange(await Task.WhenAll(batch.Select(_ => F.CreateKeyAsync(accountId, service))));
        }

        return keys;
    }

    private async Task<List<string?>> VersionsServedAsync(string service, List<(string KeyId, string ApiKey)> keys)
    {
        var responses = await Task.WhenAll(keys.Select(k => F.CallAsync(service, k.ApiKey)));
        try
        {
            Assert.All(responses, r => Assert.Equal(HttpStatusCode.OK, r.StatusCode));
            return [.. responses.Select(r => r.Headers.GetValues("X-Service-Version").Single())];
        }
        finally
        {
            foreach (var response in responses)
            {
                response.Dispose();
            }
        }
    }

    private async Task<(HttpStatusCode Status, JsonElement Body)> PostAsync(string path)
    {
        using var response = await F.Admin.PostAsJsonAsync(path, new { });
        var text = await response.Content.ReadAsStringAsync();
        return (response.StatusCode, JsonDocument.Parse(text).RootElement.Clone());
    }
}
