using Microsoft.Extensions.DependencyInjection;
using Orleans.Storage;
using Orleans.TestingHost;

namespace Marketplace.Grains.Tests.Metering;

/// <summary>
/// While silos leave and join, two activations of one grain can run at once; each writes what it counted. The second
/// write fails the storage's version check; instead of losing its counts, the grain re-reads what the other stored and
/// adds its own on top. Here the "other activation" writes the stored state directly, the way a duplicate would.
/// </summary>
[Collection(ClusterCollection.Name)]
public sealed class ConflictMergeTests(ClusterFixture fixture)
{
    [Fact]
    public async Task Account_WrittenMeanwhileByAnotherActivation_KeepsBothActivationsChargesAndTopUps()
    {
        var accountId = await fixture.CreateAccountAsync(balance: 1_000);
        var account = fixture.Grains.GetGrain<IAccountGrain>(accountId);
        var serviceId = TestIds.Service();

        // The other activation charged 40 for 2 calls and an admin topped up 500 through it.
        await ChangeStoredAsync<AccountState>("account", account, state =>
        {
            state.Balance += 500 - 40;
            state.TotalToppedUp += 500;
            state.TotalCharged += 40;
            state.Usage.Add(new ServiceUsageDelta(serviceId, 2, 2, 0, 40));
        });

        // This activation charges 30 for one call, then writes (on deactivation) over a state that changed under it.
        await account.SettleBatchAsync(new SettlementBatch(0, 30, [new ServiceUsageDelta(serviceId, 1, 1, 0, 30)]));
        await ClusterFixture.DeactivateAsync(account);

        var info = (await Poll.UntilAsync(() => account.GetAsync(), a => a!.TotalCharged == 70))!;
        Assert.Equal(1_000 + 500 - 40 - 30, info.Balance);
        Assert.Equal(1_500, info.TotalToppedUp);
        Assert.Equal(70, info.TotalCharged);
        Assert.Equal(3, info.Usage.Calls);
        Assert.Equal(3, info.Usage.CallsByService[serviceId]);
    }

    [Fact]
    public async Task Key_WrittenMeanwhileByAnotherActivation_AddsItsCountsAndKeepsItsRevocation()
    {
        var accountId = await fixture.CreateAccountAsync(balance: 1_000);
        var serviceId = TestIds.Service();
        var (keyId, _, _) = await fixture.CreateKeyAsync(accountId, [serviceId]);
        var key = fixture.Grains.GetGrain<IApiKeyGrain>(keyId);
        Assert.NotNull(await key.GetAsync());

        await ChangeStoredAsync<ApiKeyState>("apikey", key, state =>
        {
            state.Usage.Add(new ServiceUsageDelta(serviceId, 5, 5, 0, 50));
            state.Status = ApiKeyStatus.Revoked;
        });

        await key.RecordBatchAsync([new ServiceUsageDelta(serviceId, 2, 2, 0, 20)]);
        await ClusterFixture.DeactivateAsync(key);

        var info = (await Poll.UntilAsync(() => key.GetAsync(), k => k!.Usage.Calls == 7))!;
        Assert.Equal(7, info.Usage.Calls);
        Assert.Equal(ApiKeyStatus.Revoked, info.Status);
    }

    // Writes the grain's stored state the way another activation of it would: read, change, write (a new version).
    private async Task ChangeStoredAsync<TState>(string stateName, IAddressable grain, Action<TState> change)
        where TState : class, new()
    {
        var silo = (InProcessSiloHandle)fixture.Cluster.Primary!;
        var storage = silo.ServiceProvider.GetRequiredKeyedService<IGrainStorage>(StorageNames.Marketplace);
        var state = new GrainState<TState>();
        await storage.ReadStateAsync(stateName, grain.GetGrainId(), state);
        Assert.True(state.RecordExists);
        change(state.State!);
        await storage.WriteStateAsync(stateName, grain.GetGrainId(), state);
    }
}
