namespace Marketplace;

/// <summary>What the first call with an Idempotency-Key found.</summary>
public enum IdempotencyStatus
{
    /// <summary>The first call with this key: go ahead, then complete or abandon.</summary>
    Started = 0,

    /// <summary>A call with this key is running now.</summary>
    InProgress = 1,

    /// <summary>A call with this key completed: answer with its result.</summary>
    Completed = 2,

    /// <summary>The key was used for a different request.</summary>
    Mismatch = 3,
}

/// <summary>The answer to <see cref="IIdempotencyGrain.BeginAsync"/>.</summary>
[GenerateSerializer, Immutable, Alias("mk.IdempotencyStart")]
public sealed record IdempotencyStart(
    [property: Id(0)] IdempotencyStatus Status,
    [property: Id(1)] CallResult? Result = null);

/// <summary>
/// One Idempotency-Key of one API key (grain key <c>&lt;keyId&gt;/&lt;idempotencyKey&gt;</c>): remembers the request's
/// fingerprint and, once the call completed, its result, for the idempotency window. Calls are serialized by the grain,
/// so of concurrent duplicates exactly one runs.
/// </summary>
[Alias("mk.IIdempotencyGrain")]
public interface IIdempotencyGrain : IGrainWithStringKey
{
    /// <summary>
    /// Claims the key for a request with this fingerprint, or says what an earlier call with it did. The claim holds for
    /// <paramref name="claimFor"/> (the longest a call to the service may run; 3 minutes when not given), after which a
    /// retry may assume the first call died with its node and run again.
    /// </summary>
    [Alias("BeginAsync")]
    Task<IdempotencyStart> BeginAsync(string fingerprint, TimeSpan window, TimeSpan? claimFor = null);

    /// <summary>Stores the result the key answers with until the window ends (stored before it returns).</summary>
    [Alias("CompleteAsync")]
    Task CompleteAsync(string fingerprint, CallResult result);

    /// <summary>Releases the key after a call that charged nothing, so a retry runs again.</summary>
    [Alias("AbandonAsync")]
    Task AbandonAsync(string fingerprint);
}
