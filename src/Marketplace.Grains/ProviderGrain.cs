namespace Marketplace.Grains;

/// <inheritdoc cref="IProviderGrain"/>
public sealed class ProviderGrain(
    [PersistentState("provider", StorageNames.Marketplace)] IPersistentState<ProviderState> store,
    TimeProvider time) : Grain, IProviderGrain
{
    public async Task<ProviderInfo> UpsertAsync(ProviderSpec spec)
    {
        Validation.ThrowIfInvalid(Validation.Check(this.GetPrimaryKeyString(), spec));
        var state = store.State;
        if (!store.RecordExists)
        {
            state.CreatedAt = time.GetUtcNow();
        }

        state.Name = spec.Name;
        state.ContactEmail = spec.ContactEmail;
        await store.WriteStateAsync();
        await GrainFactory.GetGrain<IRegistryGrain>(IRegistryGrain.Default).AddAsync(EntityKind.Provider, this.GetPrimaryKeyString());
        return ToInfo();
    }

    public Task<ProviderInfo?> GetAsync() => Task.FromResult(store.RecordExists ? ToInfo() : null);

    private ProviderInfo ToInfo() =>
        new(this.GetPrimaryKeyString(), store.State.Name, store.State.ContactEmail, store.State.CreatedAt);
}
