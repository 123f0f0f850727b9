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
    [property: Id(3)] DateTimeOffset? ExpiresAt);

/// <summary>An API key as admins and its owner see it. Never carries the secret.</summary>
[GenerateSerializer, Immutable, Alias("mk.ApiKeyInfo")]
public sealed record ApiKeyInfo(
    [property: Id(0)] string KeyId,
    [property: Id(1)] string AccountId,
    [property: Id(2)] string Name,
    [property: Id(3)] ApiKeyStatus Status,
    [property: Id(4)] IReadOnlyList<string> Services,
    [property: Id(5)] DateTimeOffset? ExpiresAt,
    [property: Id(6)] DateTimeOffset CreatedAt,
    [property: Id(7)] UsageCounters Usage);

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
}

/// <summary>A call asking to be let in: credentials, target and the price to reserve.</summary>
[GenerateSerializer, Immutable, Alias("mk.AdmitRequest")]
public sealed record AdmitRequest(
    [property: Id(0)] string Secret,
    [property: Id(1)] string ServiceId,
    [property: Id(2)] long Price,
    [property: Id(3)] string Currency,
    [property: Id(4)] string TrackId);

/// <summary>The key grain's decision on an <see cref="AdmitRequest"/>.</summary>
[GenerateSerializer, Immutable, Alias("mk.AdmitResult")]
public sealed record AdmitResult(
    [property: Id(0)] AdmitOutcome Outcome,
    [property: Id(1)] string? AccountId,
    [property: Id(2)] long Reserved,
    [property: Id(3)] long Available,
    [property: Id(4)] string? Currency);

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
    [Alias("AdmitAsync")]
    ValueTask<AdmitResult> AdmitAsync(AdmitRequest request);

    /// <summary>Verifies a secret without admitting a call (used to read one's own usage).</summary>
    [Alias("AuthenticateAsync")]
    ValueTask<ApiKeyInfo?> AuthenticateAsync(string secret);

    /// <summary>Counts a settled call; fire and forget.</summary>
    [OneWay, Alias("RecordAsync")]
    Task RecordAsync(string serviceId, bool succeeded, bool charged);
}
