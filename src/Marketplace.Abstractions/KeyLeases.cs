namespace Marketplace;

/// <summary>
/// A front door asking an API key for a lease to admit calls to one service from memory: it spends the allowance itself,
/// one call at a time, and reports what it spent when the lease ends (used up, lapsed, or replaced).
/// </summary>
/// <param name="Holder">The asking process's journal sender id: the settled calls it journals name it too.</param>
/// <param name="Proof">The caller's secret or token when the front door holds no credentials of the key yet; else null.</param>
/// <param name="Wanted">Calls the front door expects to spend within a lease's life; 0 asks only for fresh credentials.</param>
/// <param name="Waiting">True when a caller waits for this lease (the allowance is never empty then unless refused).</param>
/// <param name="Ended">The leases this holder has finished with, and what it spent of each.</param>
/// <param name="Request">
/// Names the request: one whose answer was lost is sent again with the same id, and the key answers it with the lease it
/// granted the first time instead of granting another (which nobody would report, holding quota and balance).
/// </param>
[GenerateSerializer, Immutable, Alias("mk.KeyLeaseRequest")]
public sealed record KeyLeaseRequest(
    [property: Id(0)] Guid Holder,
    [property: Id(1)] string ServiceId,
    [property: Id(2)] long Price,
    [property: Id(3)] string Currency,
    [property: Id(4)] int Wanted,
    [property: Id(5)] bool Waiting,
    [property: Id(6)] IReadOnlyList<LeaseReport> Ended,
    [property: Id(7)] IKeyLeaseHolder? Observer = null,
    [property: Id(8)] string? Proof = null,
    [property: Id(9)] CredentialKind Kind = CredentialKind.KeySecret,
    [property: Id(10)] RequestId? Request = null);

/// <summary>What a holder spent of a lease that ended.</summary>
/// <param name="Epoch">
/// The epoch of the key activation that granted the lease (<see cref="KeyLease.Epoch"/>): a later activation, which does
/// not know the lease, learns from it that the lease's unspent calls will never be spent.
/// </param>
/// <param name="Calls">The calls the lease allowed; what was not <paramref name="Used"/> of them is unspent.</param>
/// <param name="Resent">
/// True once a request carrying the report went unanswered: the activation it was sent to may have applied it before it
/// went away, so a later activation must not take its unspent calls off what it withholds a second time.
/// </param>
[GenerateSerializer, Immutable, Alias("mk.LeaseReport")]
public readonly record struct LeaseReport(
    [property: Id(0)] long LeaseId,
    [property: Id(1)] int Used,
    [property: Id(2)] long Epoch = 0,
    [property: Id(3)] int Calls = 0,
    [property: Id(4)] bool Resent = false);

/// <summary>Calls a lease may admit whose price the account holds in one hold (the settlement names it).</summary>
[GenerateSerializer, Immutable, Alias("mk.LeaseAllowance")]
public readonly record struct LeaseAllowance(
    [property: Id(0)] long Hold,
    [property: Id(1)] int Calls);

/// <summary>
/// A key's answer to a <see cref="KeyLeaseRequest"/>: the credentials and settings to check calls with locally, and an
/// allowance of calls to spend before <see cref="Lifetime"/> ends (counted from when the holder received it). A lease that is
/// not replaced within its lifetime lapses: a lost revocation still takes effect within it.
/// </summary>
/// <param name="Outcome">Admitted, or why the key refuses (then no allowance; the holder answers its caller with it).</param>
/// <param name="LeaseId">Names the lease in the holder's report; 0 when nothing was granted.</param>
/// <param name="Available">The balance the account had beyond this allowance when it was granted.</param>
/// <param name="Limit">The limit closest to running out once the allowance is spent.</param>
/// <param name="Epoch">
/// The granting key activation's epoch (<see cref="AdmitResult.Epoch"/>): each call spent from the lease carries it to its
/// settlement, and the lease's report names it.
/// </param>
[GenerateSerializer, Immutable, Alias("mk.KeyLease")]
public sealed record KeyLease(
    [property: Id(0)] AdmitOutcome Outcome,
    [property: Id(1)] long LeaseId,
    [property: Id(2)] string? AccountId,
    [property: Id(3)] string? Currency,
    [property: Id(4)] IReadOnlyList<LeaseAllowance> Allowance,
    [property: Id(5)] TimeSpan Lifetime,
    [property: Id(6)] KeyCredentials? Credentials,
    [property: Id(7)] long Available,
    [property: Id(8)] LimitStatus? Limit,
    [property: Id(9)] int WindowOffsetMinutes,
    [property: Id(10)] long Price,
    [property: Id(11)] long Epoch = 0)
{
    /// <summary>A refusal: nothing to spend.</summary>
    public static KeyLease Refused(AdmitOutcome outcome, LimitStatus? limit = null, string? accountId = null, long available = 0, string? currency = null) =>
        new(outcome, 0, accountId, currency, [], TimeSpan.Zero, null, available, limit, 0, 0);
}

/// <summary>What a front door needs to check a caller's secret or access token without asking the key: hashes only.</summary>
/// <param name="ExpiresAt">The key's own expiry.</param>
[GenerateSerializer, Immutable, Alias("mk.KeyCredentials")]
public sealed record KeyCredentials(
    [property: Id(0)] ApiKeyStatus Status,
    [property: Id(1)] DateTimeOffset? ExpiresAt,
    [property: Id(2)] IReadOnlyList<SecretCredential> Secrets,
    [property: Id(3)] IReadOnlyDictionary<string, TokenCredential> AccessTokens);

/// <summary>One active secret: its salt and SHA-256 hash, and when it retires.</summary>
[GenerateSerializer, Immutable, Alias("mk.SecretCredential")]
public sealed record SecretCredential(
    [property: Id(0)] byte[] Salt,
    [property: Id(1)] byte[] Hash,
    [property: Id(2)] DateTimeOffset? RetiresAt);

/// <summary>One access token: its hash and expiry.</summary>
[GenerateSerializer, Immutable, Alias("mk.TokenCredential")]
public sealed record TokenCredential(
    [property: Id(0)] byte[] Hash,
    [property: Id(1)] DateTimeOffset ExpiresAt);

/// <summary>A process holding leases of API keys; told when a key changed so its leases must be asked for again.</summary>
[Alias("mk.IKeyLeaseHolder")]
public interface IKeyLeaseHolder : IGrainObserver
{
    /// <summary>The key was revoked, suspended, deleted or changed: drop its leases now.</summary>
    [OneWay, Alias("KeyChanged")]
    Task KeyChanged(string keyId);
}
