namespace Marketplace.Grains;

/// <inheritdoc cref="IRegistryGrain"/>
public sealed class RegistryGrain(
    [PersistentState("registry", StorageNames.Marketplace)] IPersistentState<RegistryState> store) : Grain, IRegistryGrain
{
    public async Task AddAsync(EntityKind kind, string id)
    {
        if (Set(kind).Add(id))
        {
            await store.WriteStateAsync();
        }
    }

    public Task<IReadOnlyList<string>> ListAsync(EntityKind kind) =>
        Task.FromResult<IReadOnlyList<string>>([.. Set(kind)]);

    private SortedSet<string> Set(EntityKind kind) => kind switch
    {
        EntityKind.Provider => store.State.Providers,
        EntityKind.Service => store.State.Services,
        EntityKind.Account => store.State.Accounts,
        _ => throw new ArgumentOutOfRangeException(nameof(kind)),
    };
}
