using Microsoft.Extensions.DependencyInjection;
using Orleans.Storage;
using Orleans.TestingHost;

namespace Marketplace.Grains.Tests.Metering;

/// <summary>
/// While silos leave and join, two activations of one grain can run at once; each writes what it changed. The second
/// write fails the storage's version check; instead of losing its change, the grain re-reads what the other stored and
/// applies its own on top. Here the "other activation" writes the stored state directly, the way a duplicate would.
/// Counters are not in stored state at all: both activations' calls are in the journal, which a new activation reads.
/// </summary>
[Collection(ClusterCollection.Name)]
public sealed class ConflictMergeTests(ClusterFixture fixture)
{
    [Fact]
    public async Task Account_WrittenMeanwhileByAnotherActivation_KeepsBothActivationsTopUpsAndTheJournalsCharges()
    {
        var accountId = await fixture.CreateAccountAsync(balance: 1_000);
        var account = fixture.Grains.GetGrain<IAccountGrain>(accountId);
        var serviceId = TestIds.Service();

        // An admin topped up 500 through the other activation.
        await ChangeStoredAsync<AccountState>("account", account, state =>
        {
            state.Credits += 500;
            state.Balance += 500;
            state.TotalToppedUp += 500;
        });

        // A call charged 30; then this activation takes a top-up of 100 and writes over a state that changed under it.
        await fixture.SettleThroughJournalAsync(TestIds.Key(), serviceId, [new AdmitResult(AdmitOutcome.Admitted, accountId, 30, 0, "EUR")]);
        await account.TopUpAsync(100, "second top-up");
        await ClusterFixture.DeactivateAsync(account);

        var info = (await account.GetAsync())!;
        Assert.Equal(1_000 + 500 + 100 - 30, info.Balance);
        Assert.Equal(1_600, info.TotalToppedUp);
        Assert.Equal(30, info.TotalCharged);
        Assert.Equal(1, info.Usage.Calls);
    }

    [Fact]
    public async Task Key_WrittenMeanwhileByAnotherActivation_KeepsItsRevocationAndTheJournalsCounts()
    {
        var accountId = await fixture.CreateAccountAsync(balance: 1_000);
        var serviceId = TestIds.Service();
        var (keyId, _, _) = await fixture.CreateKeyAsync(accountId, [serviceId]);
        var key = fixture.Grains.GetGrain<IApiKeyGrain>(keyId);
        Assert.NotNull(await key.GetAsync());

        await ChangeStoredAsync<ApiKeyState>("apikey", key, state => state.Status = ApiKeyStatus.Revoked);

        await fixture.SettleThroughJournalAsync(keyId, serviceId,
            [new AdmitResult(AdmitOutcome.Admitted, accountId, 10, 0, "EUR"), new AdmitResult(AdmitOutcome.Admitted, accountId, 10, 0, "EUR")]);
        await key.UpdateAsync(new ApiKeyUpdate("renamed", null, null, null));
        await ClusterFixture.DeactivateAsync(key);

        var info = (await key.GetAsync())!;
        Assert.Equal(2, info.Usage.Calls);
        Assert.Equal("renamed", info.Name);
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
