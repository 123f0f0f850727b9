using System.Text.Json;
using Microsoft.Extensions.Options;

namespace Marketplace.Grains.Tests.DataServices;

[Collection(ClusterCollection.Name)]
public sealed class DataServiceVersionsTests(ClusterFixture fixture)
{
    private const string BaseUrl = "https://upstream.example/api";

    private IDataServiceGrain Service(string serviceId) => fixture.Grains.GetGrain<IDataServiceGrain>(serviceId);

    /// <summary>A service with the pass-through version v1 (all traffic) and an adapter version v2 (no traffic).</summary>
    private async Task<(IDataServiceGrain Service, string ProviderId)> CreateAsync(ServiceStatus? status = ServiceStatus.Published)
    {
        var providerId = TestIds.Provider();
        var service = Service(TestIds.Service());
        await service.UpsertAsync(new DataServiceSpec("Phone check", providerId, BaseUrl, 5, ClusterFixture.Currency, null, 2000, Status: status));
        await service.UpsertVersionAsync("v2", new ServiceVersionSpec("https://upstream.example/v2", PathTemplate: "/phone/{number}"), providerId);
        return (service, providerId);
    }

    // Contracts hold dictionaries and lists, which records compare by reference: compare what the wire would carry.
    private static string Snapshot(DataServiceInfo? info) => JsonSerializer.Serialize(info);

    private static Dictionary<string, int> Weights(params (string Version, int Weight)[] weights) =>
        weights.ToDictionary(w => w.Version, w => w.Weight);

    [Fact]
    public async Task UpsertVersion_SameSpecAgain_VersionRevisionBumpsOnlyOnChange()
    {
        var (service, providerId) = await CreateAsync();
        var spec = new ServiceVersionSpec("https://upstream.example/v3/", 3000, "POST", "/phone/{number}",
            ParameterMap: new Dictionary<string, string> { ["country"] = "cc" }, Hit: new HitRule("data.found"));

        var first = await service.UpsertVersionAsync("v3", spec, providerId);
        var same = await service.UpsertVersionAsync("v3", spec with { ParameterMap = new Dictionary<string, string> { ["country"] = "cc" } }, null);
        var changed = await service.UpsertVersionAsync("v3", spec with { TimeoutMs = 4000 }, providerId);
        var route = await service.GetRouteAsync();

        Assert.Equal(1, first.Versions!.Single(v => v.Id == "v3").Revision);
        Assert.Equal("https://upstream.example/v3", first.Versions!.Single(v => v.Id == "v3").Spec.BaseUrl);
        Assert.Equal(1, same.Versions!.Single(v => v.Id == "v3").Revision);
        Assert.Equal(2, changed.Versions!.Single(v => v.Id == "v3").Revision);
        Assert.Equal(4000, changed.Versions!.Single(v => v.Id == "v3").Spec.TimeoutMs);
        Assert.Equal(2, route!.Versions.Single(v => v.Id == "v3").Revision);
        Assert.Equal(1, route.Versions.Single(v => v.Id == "v2").Revision);
        Assert.True(changed.Revision > first.Revision);
    }

    [Fact]
    public async Task SetReleaseThenRollback_RestoresPreviousWeightsAndBumpsRevision()
    {
        var (service, providerId) = await CreateAsync();
        var before = await service.GetAsync();

        var released = await service.SetReleaseAsync(
            new ReleaseSpec(Weights(("v1", 90), ("v2", 10)), new Dictionary<string, string> { ["acct-pinned"] = "v2" }), providerId);
        var rolledBack = await service.RollbackAsync(null);
        var route = await service.GetRouteAsync();

        Assert.Equal(Weights(("v1", 100)), before!.Release!.Weights);
        Assert.Equal(Weights(("v1", 90), ("v2", 10)), released.Release!.Weights);
        Assert.Equal("v2", released.Release.Pins["acct-pinned"]);
        Assert.Equal(before.Release.Number + 1, released.Release.Number);
        Assert.Equal(before.Revision + 1, released.Revision);

        Assert.Equal(Weights(("v1", 100)), rolledBack.Release!.Weights);
        Assert.Empty(rolledBack.Release.Pins);
        Assert.Equal(released.Release.Number + 1, rolledBack.Release.Number);
        Assert.Equal(released.Revision + 1, rolledBack.Revision);
        Assert.Equal(Weights(("v1", 100)), route!.Weights);
        Assert.Empty(route.Pins);
        Assert.Equal(rolledBack.Revision, route.Revision);

        await Assert.ThrowsAsync<InvalidOperationException>(() => service.RollbackAsync(providerId));
    }

    [Fact]
    public async Task Changes_ByAnotherProvider_KeyNotFoundAndServiceUnchanged()
    {
        var (service, providerId) = await CreateAsync();
        var other = TestIds.Provider();
        var before = Snapshot(await service.GetAsync());

        await Assert.ThrowsAsync<KeyNotFoundException>(() => service.UpsertVersionAsync("v3", new ServiceVersionSpec(BaseUrl), other));
        await Assert.ThrowsAsync<KeyNotFoundException>(() => service.UpsertVersionAsync("v2", new ServiceVersionSpec(BaseUrl), other));
        await Assert.ThrowsAsync<KeyNotFoundException>(() => service.DeleteVersionAsync("v2", other));
        await Assert.ThrowsAsync<KeyNotFoundException>(() => service.SetReleaseAsync(new ReleaseSpec(Weights(("v2", 100))), other));
        await Assert.ThrowsAsync<KeyNotFoundException>(() => service.RollbackAsync(other));
        await Assert.ThrowsAsync<KeyNotFoundException>(() => service.SetStatusAsync(ServiceStatus.Suspended, other));

        Assert.Equal(before, Snapshot(await service.GetAsync()));
        Assert.Null(await service.GetAsAsync(other));
        Assert.Equal(before, Snapshot(await service.GetAsAsync(providerId)));
        Assert.Equal(before, Snapshot(await service.GetAsAsync(null)));
    }

    [Fact]
    public async Task Changes_OnServiceNeverCreated_KeyNotFoundAndNotCreated()
    {
        var service = Service(TestIds.Service());

        await Assert.ThrowsAsync<KeyNotFoundException>(() => service.UpsertVersionAsync("v1", new ServiceVersionSpec(BaseUrl), null));
        await Assert.ThrowsAsync<KeyNotFoundException>(() => service.SetReleaseAsync(new ReleaseSpec(Weights(("v1", 100))), null));

        Assert.Null(await service.GetAsync());
        Assert.Null(await service.GetRouteAsync());
    }

    [Fact]
    public async Task Changes_InvalidVersionOrRelease_ArgumentExceptionAndServiceUnchanged()
    {
        var (service, providerId) = await CreateAsync();
        var before = Snapshot(await service.GetAsync());

        await Assert.ThrowsAsync<ArgumentException>(() => service.UpsertVersionAsync("v2", new ServiceVersionSpec("ftp://x"), providerId));
        await Assert.ThrowsAsync<ArgumentException>(() => service.UpsertVersionAsync("v3", new ServiceVersionSpec(BaseUrl, Headers: new Dictionary<string, string> { ["Host"] = "x" }), providerId));
        await Assert.ThrowsAsync<ArgumentException>(() => service.UpsertVersionAsync("Bad Version", new ServiceVersionSpec(BaseUrl), providerId));
        await Assert.ThrowsAsync<ArgumentException>(() => service.SetReleaseAsync(new ReleaseSpec(Weights(("v1", 50), ("v2", 40))), providerId));
        await Assert.ThrowsAsync<ArgumentException>(() => service.SetReleaseAsync(new ReleaseSpec(Weights(("v1", 50), ("v9", 50))), providerId));
        await Assert.ThrowsAsync<ArgumentException>(() => service.SetReleaseAsync(
            new ReleaseSpec(Weights(("v1", 100)), new Dictionary<string, string> { ["acct-x"] = "v9" }), providerId));
        await Assert.ThrowsAsync<ArgumentException>(() => service.SetStatusAsync((ServiceStatus)42, providerId));

        Assert.Equal(before, Snapshot(await service.GetAsync()));
    }

    [Fact]
    public async Task SetStatus_LifeCycle_FollowsAllowedTransitionsAndRetiredTakesNoChange()
    {
        var (service, providerId) = await CreateAsync(status: null);
        var created = await service.GetAsync();

        Assert.Equal(ServiceStatus.Draft, created!.Status);
        Assert.Equal(ServiceStatus.Draft, (await service.GetRouteAsync())!.Status);
        Assert.Equal(ServiceStatus.Published, (await service.SetStatusAsync(ServiceStatus.Published, providerId)).Status);
        await Assert.ThrowsAsync<InvalidOperationException>(() => service.SetStatusAsync(ServiceStatus.Draft, providerId));
        Assert.Equal(ServiceStatus.Suspended, (await service.SetStatusAsync(ServiceStatus.Suspended, null)).Status);
        Assert.Equal(ServiceStatus.Suspended, (await service.GetRouteAsync())!.Status);
        await Assert.ThrowsAsync<InvalidOperationException>(() => service.SetStatusAsync(ServiceStatus.Draft, providerId));
        Assert.Equal(ServiceStatus.Published, (await service.SetStatusAsync(ServiceStatus.Published, providerId)).Status);
        var retired = await service.SetStatusAsync(ServiceStatus.Retired, providerId);
        Assert.Equal(ServiceStatus.Retired, retired.Status);
        var before = Snapshot(await service.GetAsync());

        await Assert.ThrowsAsync<InvalidOperationException>(() => service.SetStatusAsync(ServiceStatus.Published, providerId));
        await Assert.ThrowsAsync<InvalidOperationException>(() => service.SetStatusAsync(ServiceStatus.Retired, null));
        await Assert.ThrowsAsync<InvalidOperationException>(() => service.UpsertAsync(
            new DataServiceSpec("Phone check", providerId, BaseUrl, 9, ClusterFixture.Currency, null, 2000)));
        await Assert.ThrowsAsync<InvalidOperationException>(() => service.UpsertVersionAsync("v3", new ServiceVersionSpec(BaseUrl), providerId));
        await Assert.ThrowsAsync<InvalidOperationException>(() => service.SetReleaseAsync(new ReleaseSpec(Weights(("v2", 100))), providerId));
        await Assert.ThrowsAsync<InvalidOperationException>(() => service.DeleteVersionAsync("v2", providerId));

        Assert.Equal(before, Snapshot(await service.GetAsync()));
        Assert.Equal(ServiceStatus.Retired, (await service.GetRouteAsync())!.Status);
    }

    [Fact]
    public async Task Upsert_PublishedBackToDraft_Refused()
    {
        var (service, providerId) = await CreateAsync();

        await Assert.ThrowsAsync<InvalidOperationException>(() => service.UpsertAsync(
            new DataServiceSpec("Phone check", providerId, BaseUrl, 9, ClusterFixture.Currency, null, 2000, Status: ServiceStatus.Draft)));

        var info = await service.GetAsync();
        Assert.Equal(ServiceStatus.Published, info!.Status);
        Assert.Equal(5, info.PricePerCall);
    }

    [Fact]
    public async Task DeleteVersion_WithWeightOrPin_RefusedUntilReleased()
    {
        var (service, providerId) = await CreateAsync();
        await service.SetReleaseAsync(new ReleaseSpec(Weights(("v1", 100), ("v2", 0)), new Dictionary<string, string> { ["pinnedkey"] = "v2" }), providerId);

        await Assert.ThrowsAsync<InvalidOperationException>(() => service.DeleteVersionAsync("v1", providerId));
        await Assert.ThrowsAsync<InvalidOperationException>(() => service.DeleteVersionAsync("v2", providerId));
        await Assert.ThrowsAsync<KeyNotFoundException>(() => service.DeleteVersionAsync("v9", providerId));
        Assert.Equal(["v1", "v2"], (await service.GetAsync())!.Versions!.Select(v => v.Id));

        await service.SetReleaseAsync(new ReleaseSpec(Weights(("v1", 100))), providerId);
        var deleted = await service.DeleteVersionAsync("v2", providerId);

        Assert.Equal(["v1"], deleted.Versions!.Select(v => v.Id));
        Assert.Equal(["v1"], (await service.GetRouteAsync())!.Versions.Select(v => v.Id));
        // The release before names the deleted version: rolling back to it would route to nothing.
        await Assert.ThrowsAsync<InvalidOperationException>(() => service.RollbackAsync(providerId));
        Assert.Equal(Weights(("v1", 100)), (await service.GetAsync())!.Release!.Weights);
    }

    [Fact]
    public async Task UpsertVersion_SecretHeaders_StoredEncryptedShownHiddenAndKeptWhenHiddenSentBack()
    {
        var (service, providerId) = await CreateAsync();
        var secrets = new UpstreamSecrets(Options.Create(new SecretsOptions { Key = ClusterFixture.SecretsKey }));
        const string Plain = "Bearer plain-s3cret-123";

        var written = await service.UpsertVersionAsync("v3", new ServiceVersionSpec(BaseUrl,
            SecretHeaders: new Dictionary<string, string> { ["Authorization"] = Plain }), providerId);
        var stored = (await service.GetRouteAsync())!.Versions.Single(v => v.Id == "v3").Spec.SecretHeaders!["Authorization"];
        var read = await service.GetAsync();

        Assert.Equal(DataServiceGrain.Hidden, written.Versions!.Single(v => v.Id == "v3").Spec.SecretHeaders!["Authorization"]);
        Assert.Equal(DataServiceGrain.Hidden, read!.Versions!.Single(v => v.Id == "v3").Spec.SecretHeaders!["Authorization"]);
        Assert.DoesNotContain(Plain, JsonSerializer.Serialize(read), StringComparison.Ordinal);
        Assert.StartsWith("enc1:", stored, StringComparison.Ordinal);
        Assert.DoesNotContain("plain-s3cret", stored, StringComparison.Ordinal);
        Assert.Equal(Plain, secrets.Decrypt("Authorization", stored));

        var kept = await service.UpsertVersionAsync("v3", new ServiceVersionSpec(BaseUrl, 5000,
            SecretHeaders: new Dictionary<string, string> { ["Authorization"] = DataServiceGrain.Hidden }), providerId);
        var storedAfter = (await service.GetRouteAsync())!.Versions.Single(v => v.Id == "v3").Spec.SecretHeaders!["Authorization"];

        Assert.Equal(2, kept.Versions!.Single(v => v.Id == "v3").Revision);
        Assert.Equal(stored, storedAfter);
        Assert.Equal(Plain, secrets.Decrypt("Authorization", storedAfter));

        var before = Snapshot(await service.GetAsync());
        await Assert.ThrowsAsync<ArgumentException>(() => service.UpsertVersionAsync("v3", new ServiceVersionSpec(BaseUrl,
            SecretHeaders: new Dictionary<string, string> { ["X-Api-Key"] = DataServiceGrain.Hidden }), providerId));
        Assert.Equal(before, Snapshot(await service.GetAsync()));
    }

    [Fact]
    public async Task Upsert_ShorthandOverVersionWithSecret_SecretStillDecryptsToPlainValue()
    {
        var (service, providerId) = await CreateAsync();
        var secrets = new UpstreamSecrets(Options.Create(new SecretsOptions { Key = ClusterFixture.SecretsKey }));
        await service.UpsertVersionAsync(DataServiceGrain.DefaultVersion, new ServiceVersionSpec(BaseUrl, 2000,
            SecretHeaders: new Dictionary<string, string> { ["Authorization"] = "Bearer v1-s3cret" }), providerId);
        var revision = (await service.GetRouteAsync())!.Versions.Single(v => v.Id == DataServiceGrain.DefaultVersion).Revision;

        // A catalog change through the one-version shorthand (same base URL and timeout) must not touch v1's secret.
        await service.UpsertAsync(new DataServiceSpec("Phone check", providerId, BaseUrl, 7, ClusterFixture.Currency, "cheaper", 2000));
        var v1 = (await service.GetRouteAsync())!.Versions.Single(v => v.Id == DataServiceGrain.DefaultVersion);

        Assert.Equal("Bearer v1-s3cret", secrets.Decrypt("Authorization", v1.Spec.SecretHeaders!["Authorization"]));
        Assert.Equal(revision, v1.Revision);
    }
}
