namespace Marketplace;

/// <summary>Life-cycle state of an API key.</summary>
public enum ApiKeyStatus
{
    /// <summary>The key may call.</summary>
    Active = 0,

    /// <summary>The key is refused until resumed.</summary>
    Suspended = 1,

    /// <summary>The key is refused for ever.</summary>
    Revoked = 2,
}

/// <summary>What an admin sends to issue an API key for an account.</summary>
/// <param name="Services">The data services the key may call.</param>
[GenerateSerializer, Immutable, Alias("mk.ApiKeySpec")]
public sealed record ApiKeySpec(
    [property: Id(0)] string AccountId,
    [property: Id(1)] string Name,
    [property: Id(2)] IReadOnlyList<string> Services,
    [property: Id(3)] DateTimeOffset? ExpiresAt,
    [property: Id(4)] KeyLimits? Limits = null);

/// <summary>A change to an existing key; null fields stay as they are.</summary>
[GenerateSerializer, Immutable, Alias("mk.ApiKeyUpdate")]
public sealed record ApiKeyUpdate(
    [property: Id(0)] string? Name,
    [property: Id(1)] IReadOnlyList<string>? Services,
    [property: Id(2)] DateTimeOffset? ExpiresAt,
    [property: Id(3)] KeyLimits? Limits);

/// <summary>One of a key's secrets, without the secret itself.</summary>
/// <param name="RetiresAt">When the secret stops working (set when a newer secret replaces it); null while current.</param>
[GenerateSerializer, Immutable, Alias("mk.SecretInfo")]
public sealed record SecretInfo(
    [property: Id(0)] string SecretId,
    [property: Id(1)] DateTimeOffset CreatedAt,
    [property: Id(2)] DateTimeOffset? RetiresAt);

/// <summary>Calls counted against a quota in its current window.</summary>
[GenerateSerializer, Immutable, Alias("mk.QuotaUsage")]
public sealed record QuotaUsage(
    [property: Id(0)] string Window,
    [property: Id(1)] string? ServiceId,
    [property: Id(2)] DateTimeOffset WindowStart,
    [property: Id(3)] long Used,
    [property: Id(4)] long Limit);

/// <summary>An API key as admins and its owner see it. Never carries the secret.</summary>
/// <param name="LeasedCalls">Calls of the leases front doors hold unreported: counted in the quotas, maybe not spent yet.</param>
/// <param name="WithheldCalls">
/// Calls the key's previous activations may have admitted that its quota counts do not hold yet (their settlements have not
/// arrived): withheld from every quota window that was current when this activation started, until they are confirmed or
/// every call of those activations must have settled.
/// </param>
[GenerateSerializer, Immutable, Alias("mk.ApiKeyInfo")]
public sealed record ApiKeyInfo(
    [property: Id(0)] string KeyId,
    [property: Id(1)] string AccountId,
    [property: Id(2)] string Name,
    [property: Id(3)] ApiKeyStatus Status,
    [property: Id(4)] IReadOnlyList<string> Services,
    [property: Id(5)] DateTimeOffset? ExpiresAt,
    [property: Id(6)] DateTimeOffset CreatedAt,
    [property: Id(7)] UsageCounters Usage,
    [property: Id(8)] KeyLimits? Limits = null,
    [property: Id(9)] IReadOnlyList<SecretInfo>? Secrets = null,
    [property: Id(10)] IReadOnlyList<QuotaUsage>? Quotas = null,
    [property: Id(11)] long LeasedCalls = 0,
    [property: Id(12)] long WithheldCalls = 0);

/// <summary>The answer to key creation: the only time the secret is shown.</summary>
/// <param name="ApiKey">The full key to present on calls (<c>mk_&lt;keyId&gt;.&lt;secret&gt;</c>).</param>
[GenerateSerializer, Immutable, Alias("mk.ApiKeyCreated")]
public sealed record ApiKeyCreated(
    [property: Id(0)] ApiKeyInfo Key,
    [property: Id(1)] string ApiKey);

/// <summary>Why an admission was refused, or that it was admitted.</summary>
public enum AdmitOutcome
{
    /// <summary>Authenticated, entitled and the price is reserved.</summary>
    Admitted = 0,

    /// <summary>Unknown key or wrong secret.</summary>
    InvalidCredentials = 1,

    /// <summary>The key was revoked.</summary>
    Revoked = 2,

    /// <summary>The key is suspended.</summary>
    Suspended = 3,

    /// <summary>The key is past its expiry.</summary>
    Expired = 4,

    /// <summary>The key may not call this service.</summary>
    NotEntitled = 5,

    /// <summary>The account cannot cover the price.</summary>
    InsufficientBalance = 6,

    /// <summary>The service is priced in another currency than the account holds.</summary>
    CurrencyMismatch = 7,

    /// <summary>A rate limit (token bucket) has no token left; retry after <see cref="LimitStatus.ResetSeconds"/>.</summary>
    RateLimited = 8,

    /// <summary>A daily or monthly call quota of the key is used up.</summary>
    QuotaExhausted = 9,

    /// <summary>The account's monthly call cap is reached.</summary>
    AccountCapReached = 10,

    /// <summary>The access token has expired or was revoked.</summary>
    TokenInvalid = 11,
}

/// <summary>How the caller proved who it is.</summary>
public enum CredentialKind
{
    /// <summary>The API key's secret.</summary>
    KeySecret = 0,

    /// <summary>A short-lived access token issued from the key.</summary>
    AccessToken = 1,
}

/// <summary>A call asking to be let in: credentials, target and the price to reserve.</summary>
/// <param name="Secret">The key's secret, or for an access token its <c>tokenId.secret</c> part.</param>
[GenerateSerializer, Immutable, Alias("mk.AdmitRequest")]
public sealed record AdmitRequest(
    [property: Id(0)] string Secret,
    [property: Id(1)] string ServiceId,
    [property: Id(2)] long Price,
    [property: Id(3)] string Currency,
    [property: Id(4)] string TrackId,
    [property: Id(5)] CredentialKind Kind = CredentialKind.KeySecret);

/// <summary>The key grain's decision on an <see cref="AdmitRequest"/>.</summary>
/// <param name="Hold">The account hold carrying <paramref name="Reserved"/>; the settlement names it.</param>
/// <param name="WindowOffsetMinutes">
/// Where the key's quota days and months start, in minutes from UTC: the journal counts the call in the key's day and month
/// at this offset, so the key's quota counters can be rebuilt from it.
/// </param>
/// <param name="Epoch">
/// The epoch of the key activation that counted the call (a random number per activation; 0 from a key that names none).
/// The call carries it to its settlement, so a later activation can tell the calls it must add to its counts from the ones
/// it counted itself.
/// </param>
[GenerateSerializer, Immutable, Alias("mk.AdmitResult")]
public sealed record AdmitResult(
    [property: Id(0)] AdmitOutcome Outcome,
    [property: Id(1)] string? AccountId,
    [property: Id(2)] long Reserved,
    [property: Id(3)] long Available,
    [property: Id(4)] string? Currency,
    [property: Id(5)] LimitStatus? Limit = null,
    [property: Id(6)] long Hold = 0,
    [property: Id(7)] int WindowOffsetMinutes = 0,
    [property: Id(8)] long Epoch = 0)
{
    /// <summary>A refusal: why, what the account could still spend, and the limit that refused it.</summary>
    public static AdmitResult Refused(AdmitOutcome outcome, long available = 0, string? currency = null, LimitStatus? limit = null, string? accountId = null) =>
        new(outcome, accountId, 0, available, currency, limit);

    /// <summary>An admitted call: its account, the price reserved under <paramref name="hold"/>, and what is left.</summary>
    public static AdmitResult Admitted(string accountId, long reserved, long available, string currency, LimitStatus? limit, long hold, int windowOffsetMinutes,
        long epoch = 0) =>
        new(AdmitOutcome.Admitted, accountId, reserved, available, currency, limit, hold, windowOffsetMinutes, epoch);
}

/// <summary>An access token and the refresh token that replaces it, as issued (the only time they are shown).</summary>
[GenerateSerializer, Immutable, Alias("mk.TokenPair")]
public sealed record TokenPair(
    [property: Id(0)] string AccessToken,
    [property: Id(1)] DateTimeOffset AccessExpiresAt,
    [property: Id(2)] string RefreshToken,
    [property: Id(3)] DateTimeOffset RefreshExpiresAt);

/// <summary>The answer to a token request: a pair, or why not.</summary>
[GenerateSerializer, Immutable, Alias("mk.TokenResult")]
public sealed record TokenResult(
    [property: Id(0)] AdmitOutcome Outcome,
    [property: Id(1)] TokenPair? Tokens);

/// <summary>One API key: its secret hash, status, entitlements and counters.</summary>
[Alias("mk.IApiKeyGrain")]
public interface IApiKeyGrain : IGrainWithStringKey
{
    /// <summary>Issues the key with a fresh secret; <paramref name="presetSecret"/> is only for seeding demo data.</summary>
    [Alias("CreateAsync")]
    Task<ApiKeyCreated> CreateAsync(ApiKeySpec spec, string? presetSecret = null);

    /// <summary>The key, or null when it was never issued.</summary>
    [Alias("GetAsync")]
    Task<ApiKeyInfo?> GetAsync();

    /// <summary>Changes the status (suspend, resume, revoke); a revoked key stays revoked.</summary>
    [Alias("SetStatusAsync")]
    Task<ApiKeyInfo?> SetStatusAsync(ApiKeyStatus status);

    /// <summary>Authenticates the secret, checks status, expiry and entitlement, and reserves the price.</summary>
    /// <remarks>
    /// Interleaves with other calls to the key while the account reserves the price, so one hot key is not capped
    /// by the round trip to its account; quota checks wait for undecided admissions near the limit, so they stay exact.
    /// </remarks>
    [AlwaysInterleave, Alias("AdmitAsync")]
    ValueTask<AdmitResult> AdmitAsync(AdmitRequest request);

    /// <summary>
    /// Grants a front door a lease to admit calls to one service from memory: the key's credentials and settings, and an
    /// allowance of calls whose quota, rate tokens and price are taken now (near a limit it shrinks to one call, so limits
    /// stay exact). The request also ends the holder's finished leases, giving back what they did not spend.
    /// </summary>
    [AlwaysInterleave, Alias("LeaseAsync")]
    ValueTask<KeyLease> LeaseAsync(KeyLeaseRequest request);

    /// <summary>Ends a holder's leases (lapsed, recalled, or its key dropped), giving back what they did not spend.</summary>
    [AlwaysInterleave, Alias("EndLeasesAsync")]
    Task EndLeasesAsync(Guid holder, IReadOnlyList<LeaseReport> ended);

    /// <summary>Verifies a secret without admitting a call (used to read one's own usage).</summary>
    [Alias("AuthenticateAsync")]
    ValueTask<ApiKeyInfo?> AuthenticateAsync(string secret);

    /// <summary>True when the secret or access token is valid for this key now (active, not expired); consumes nothing.</summary>
    [Alias("VerifyAsync")]
    ValueTask<bool> VerifyAsync(string proof, CredentialKind kind);

    /// <summary>The account wants its leased allowance back (its balance runs low); fire and forget.</summary>
    [OneWay, AlwaysInterleave, Alias("RecallLeaseAsync")]
    Task RecallLeaseAsync();

    /// <summary>Counts many settled calls at once (answered, so a batch refused by a stopping silo is sent again).</summary>
    /// <param name="epochs">
    /// The same calls by the epoch of the key activation that admitted them and by service (null from a sender that does not
    /// know them, and for batches fetched from the journal): a later activation adds another's calls to its quota counts.
    /// </param>
    /// <param name="resent">True when an earlier attempt of this delivery went unanswered (an activation that went away may have applied it).</param>
    [Alias("RecordBatchAsync")]
    Task RecordBatchAsync(IReadOnlyList<ServiceUsageDelta> usage, DeliveryId? delivery = null, IReadOnlyList<EpochCalls>? epochs = null, bool resent = false);

    /// <summary>Changes name, entitlements, expiry or limits.</summary>
    [Alias("UpdateAsync")]
    Task<ApiKeyInfo?> UpdateAsync(ApiKeyUpdate update);

    /// <summary>Issues a new secret; the current one keeps working for <paramref name="overlap"/>. Returns the new presented key.</summary>
    [Alias("RotateAsync")]
    Task<ApiKeyCreated?> RotateAsync(TimeSpan overlap);

    /// <summary>Stops a secret from working now.</summary>
    [Alias("RetireSecretAsync")]
    Task<ApiKeyInfo?> RetireSecretAsync(string secretId);

    /// <summary>Deletes the key; it is refused from then on as if it never existed.</summary>
    [Alias("DeleteAsync")]
    Task<bool> DeleteAsync();

    /// <summary>Exchanges the key's secret for an access token and a refresh token.</summary>
    [Alias("IssueTokenAsync")]
    Task<TokenResult> IssueTokenAsync(string secret);

    /// <summary>Exchanges a refresh token (<c>tokenId.secret</c>) for a new pair; concurrent refreshes of one token get the same pair.</summary>
    [Alias("RefreshTokenAsync")]
    Task<TokenResult> RefreshTokenAsync(string refreshToken);

    /// <summary>Revokes an access or refresh token (<c>tokenId.secret</c>); false when it was not valid.</summary>
    [Alias("RevokeTokenAsync")]
    Task<bool> RevokeTokenAsync(string token);
}
