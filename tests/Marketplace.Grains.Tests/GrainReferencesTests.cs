namespace Marketplace.Grains.Tests;

[Collection(ClusterCollection.Name)]
public sealed class GrainReferencesTests(ClusterFixture fixture)
{
    [Fact]
    public async Task Get_AfterTheFirst_BuildsTheSameReferencesAsGetGrain()
    {
        var references = new GrainReferences<IApiKeyGrain>(fixture.Grains);
        var (keyId, _, _) = await fixture.CreateKeyAsync(await fixture.CreateAccountAsync(balance: 10), ["svc-" + Guid.NewGuid().ToString("N")[..8]]);
        var ids = new[] { TestIds.Key(), keyId, TestIds.Key() };

        foreach (var id in ids)
        {
            var built = references.Get(id);
            var expected = fixture.Grains.GetGrain<IApiKeyGrain>(id);
            Assert.Equal(expected.GetGrainId(), built.GetGrainId());
            Assert.Equal(expected, built);
        }

        // Built references reach the grain: the existing key answers, an unknown one does not exist.
        Assert.Equal(keyId, (await references.Get(keyId).GetAsync())!.KeyId);
        Assert.Null(await references.Get(ids[2]).GetAsync());
    }
}
