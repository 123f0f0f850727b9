namespace Marketplace;

/// <summary>What an admin sends to register a provider (a data seller).</summary>
[GenerateSerializer, Immutable, Alias("mk.ProviderSpec")]
public sealed record ProviderSpec(
    [property: Id(0)] string Name,
    [property: Id(1)] string? ContactEmail);

/// <summary>A registered provider.</summary>
[GenerateSerializer, Immutable, Alias("mk.ProviderInfo")]
public sealed record ProviderInfo(
    [property: Id(0)] string Id,
    [property: Id(1)] string Name,
    [property: Id(2)] string? ContactEmail,
    [property: Id(3)] DateTimeOffset CreatedAt);

/// <summary>A data seller: owns data services.</summary>
[Alias("mk.IProviderGrain")]
public interface IProviderGrain : IGrainWithStringKey
{
    /// <summary>Creates the provider, or updates its name and contact when it exists.</summary>
    [Alias("UpsertAsync")]
    Task<ProviderInfo> UpsertAsync(ProviderSpec spec);

    /// <summary>The provider, or null when it was never created.</summary>
    [Alias("GetAsync")]
    Task<ProviderInfo?> GetAsync();

    /// <summary>
    /// Issues a provider key (<c>mp_&lt;providerId&gt;.&lt;secret&gt;</c>), shown only in this answer. The provider keeps at
    /// most two: issuing a third retires the oldest, so a key can be replaced without downtime.
    /// </summary>
    [Alias("IssueKeyAsync")]
    Task<string> IssueKeyAsync();

    /// <summary>Retires every provider key.</summary>
    [Alias("RevokeKeysAsync")]
    Task RevokeKeysAsync();

    /// <summary>True when <paramref name="secret"/> is one of the provider's keys.</summary>
    [Alias("AuthenticateAsync")]
    Task<bool> AuthenticateAsync(string secret);
}
