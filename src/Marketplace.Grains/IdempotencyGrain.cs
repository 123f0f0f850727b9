using Orleans.Storage;

namespace Marketplace.Grains;

/// <inheritdoc cref="IIdempotencyGrain"/>
public sealed class IdempotencyGrain(
    [PersistentState(IdempotencyGrain.StateName, StorageNames.Marketplace)] IPersistentState<IdempotencyState> store,
    TimeProvider time) : Grain, IIdempotencyGrain
{
    /// <summary>The name the records are stored under (the host deletes expired ones by it).</summary>
    public const string StateName = "idempotency";

    /// <summary>How long a started call holds the key, when the caller does not say, before a retry may assume it died with its node.</summary>
    public static readonly TimeSpan InFlightLimit = TimeSpan.FromMinutes(3);

    public async Task<IdempotencyStart> BeginAsync(string fingerprint, TimeSpan window, TimeSpan? claimFor = null)
    {
        var now = time.GetUtcNow();
        var state = store.State;
        var live = store.RecordExists && state.ExpiresAt > now && state.Fingerprint.Length > 0;
        if (live && state.Fingerprint != fingerprint)
        {
            return new IdempotencyStart(IdempotencyStatus.Mismatch);
        }

        if (live && state.Result is { } result)
        {
            return new IdempotencyStart(IdempotencyStatus.Completed, result);
        }

        if (live && now < (state.ClaimedUntil ?? state.StartedAt + InFlightLimit))
        {
            return new IdempotencyStart(IdempotencyStatus.InProgress);
        }

        // Stored before the call goes on, so a duplicate on any silo, or after a restart, sees it.
        state.Fingerprint = fingerprint;
        state.StartedAt = now;
        state.ClaimedUntil = now + (claimFor ?? InFlightLimit);
        state.ExpiresAt = now + (claimFor is { } claim && claim > window ? claim : window);
        state.Result = null;
        try
        {
            await store.WriteStateAsync();
        }
        catch (InconsistentStateException)
        {
            // The expired record was deleted from storage while this activation still held it: start from what is stored.
            await store.ReadStateAsync();
            store.State = state;
            await store.WriteStateAsync();
        }

        return new IdempotencyStart(IdempotencyStatus.Started);
    }

    public async Task CompleteAsync(string fingerprint, CallResult result)
    {
        if (store.State.Fingerprint != fingerprint)
        {
            return;
        }

        store.State.Result = result;
        await store.WriteStateAsync();
    }

    public async Task AbandonAsync(string fingerprint)
    {
        if (store.State.Fingerprint == fingerprint && store.State.Result is null)
        {
            await store.ClearStateAsync();
            store.State = new IdempotencyState();
        }
    }
}
