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

    public async Task<string> IssueKeyAsync()
    {
        if (!store.RecordExists)
        {
            throw new KeyNotFoundException($"No provider '{this.GetPrimaryKeyString()}'.");
        }

        var secret = ApiKeySecrets.NewSecret();
        var salt = ApiKeySecrets.NewSalt();
        var keys = store.State.Keys;
        keys.Add(new SecretState { Id = ApiKeySecrets.NewTokenId(), Salt = salt, Hash = ApiKeySecrets.Hash(salt, secret), CreatedAt = time.GetUtcNow() });
        if (keys.Count > 2)
        {
            keys.RemoveAt(0);
        }

        await store.WriteStateAsync();
        return ProviderKeys.Format(this.GetPrimaryKeyString(), secret);
    }

    public async Task RevokeKeysAsync()
    {
        if (store.State.Keys.Count > 0)
        {
            store.State.Keys.Clear();
            await store.WriteStateAsync();
        }
    }

    public Task<bool> AuthenticateAsync(string secret)
    {
        var matched = false;

        // Every stored key is checked, so the time taken does not tell which one matched.
        foreach (var key in store.State.Keys)
        {
            matched |= ApiKeySecrets.Verify(key.Salt, key.Hash, secret);
        }

        return Task.FromResult(matched);
    }

    private ProviderInfo ToInfo() =>
        new(this.GetPrimaryKeyString(), store.State.Name, store.State.ContactEmail, store.State.CreatedAt);
}
