namespace Marketplace;

/// <summary>Where a data service is in its life.</summary>
public enum ServiceStatus
{
    /// <summary>Being prepared: invisible to consumers, calls refused as unknown.</summary>
    Draft = 0,

    /// <summary>Listed in the catalog and callable.</summary>
    Published = 1,

    /// <summary>Temporarily closed: listed as suspended, calls answered 503.</summary>
    Suspended = 2,

    /// <summary>Closed for good: not listed, calls refused as unknown, no change accepted any more.</summary>
    Retired = 3,
}

/// <summary>Which calls of a service are charged.</summary>
public enum ChargeRule
{
    /// <summary>Calls the upstream answered 2xx.</summary>
    PerSuccess = 0,

    /// <summary>Every call sent to the upstream, whatever it answered (also errors and timeouts).</summary>
    PerCall = 1,

    /// <summary>2xx answers that carry data according to the version's <see cref="HitRule"/>.</summary>
    PerHit = 2,
}

/// <summary>One documented parameter or response field of a data service.</summary>
[GenerateSerializer, Immutable, Alias("mk.ServiceField")]
public sealed record ServiceField(
    [property: Id(0)] string Name,
    [property: Id(1)] string Type,
    [property: Id(2)] string? Description = null,
    [property: Id(3)] bool Required = false);

/// <summary>What an admin or the owning provider sends to publish or change a data service's catalog entry.</summary>
/// <remarks>
/// <see cref="UpstreamBaseUrl"/> and <see cref="TimeoutMs"/> are a shorthand for a service with one pass-through version:
/// when the base URL is not empty, version <c>v1</c> is set to pass calls through to it, and gets all the traffic while
/// no release names any version. Services with adapters or several versions manage them with the version calls.
/// </remarks>
[GenerateSerializer, Immutable, Alias("mk.DataServiceSpec")]
public sealed record DataServiceSpec(
    [property: Id(0)] string Name,
    [property: Id(1)] string ProviderId,
    [property: Id(2)] string UpstreamBaseUrl,
    [property: Id(3)] long PricePerCall,
    [property: Id(4)] string Currency,
    [property: Id(5)] string? Description,
    [property: Id(6)] int TimeoutMs,
    [property: Id(7)] RateLimit? UpstreamRateLimit = null,
    [property: Id(8)] string? Category = null,
    [property: Id(9)] ChargeRule ChargeRule = ChargeRule.PerSuccess,
    [property: Id(10)] ServiceStatus? Status = null,
    [property: Id(11)] IReadOnlyList<ServiceField>? Parameters = null,
    [property: Id(12)] IReadOnlyList<ServiceField>? ResponseFields = null);

/// <summary>When a 2xx answer counts as a hit: the JSON field at <see cref="Field"/> (dotted path) is present and
/// truthy (not null, false, 0, "" or empty), or, with <see cref="EqualsValue"/>, its text equals that value.</summary>
[GenerateSerializer, Immutable, Alias("mk.HitRule")]
public sealed record HitRule(
    [property: Id(0)] string Field,
    [property: Id(1)] string? EqualsValue = null);

/// <summary>How a version protects its upstream and the marketplace (per silo).</summary>
[GenerateSerializer, Immutable, Alias("mk.ProtectionSpec")]
public sealed record ProtectionSpec(
    [property: Id(0)] int MaxConcurrency = 2000,
    [property: Id(1)] double FailureRatio = 0.5,
    [property: Id(2)] int MinimumThroughput = 20,
    [property: Id(3)] int SamplingSeconds = 10,
    [property: Id(4)] int BreakSeconds = 5,
    [property: Id(5)] int Retries = 0,
    [property: Id(6)] bool Idempotent = false)
{
    /// <summary>The settings a version without its own uses.</summary>
    public static ProtectionSpec Default { get; } = new();
}

/// <summary>One version of a data service: the adapter that reaches its upstream, and its protection.</summary>
[GenerateSerializer, Immutable, Alias("mk.ServiceVersionSpec")]
public sealed record ServiceVersionSpec(
    [property: Id(0)] string BaseUrl,
    [property: Id(1)] int TimeoutMs = 10_000,
    [property: Id(2)] string? Method = null,
    [property: Id(3)] string? PathTemplate = null,
    [property: Id(4)] IReadOnlyDictionary<string, string>? ParameterMap = null,
    [property: Id(5)] IReadOnlyDictionary<string, string>? Headers = null,
    [property: Id(6)] IReadOnlyDictionary<string, string>? SecretHeaders = null,
    [property: Id(7)] IReadOnlyDictionary<string, string>? ResponseFields = null,
    [property: Id(8)] HitRule? Hit = null,
    [property: Id(9)] ProtectionSpec? Protection = null);

/// <summary>A version as admins and providers read it: secret header values are never shown.</summary>
[GenerateSerializer, Immutable, Alias("mk.ServiceVersionInfo")]
public sealed record ServiceVersionInfo(
    [property: Id(0)] string Id,
    [property: Id(1)] int Revision,
    [property: Id(2)] ServiceVersionSpec Spec,
    [property: Id(3)] DateTimeOffset UpdatedAt);

/// <summary>The gray release: traffic weights per version (summing to 100) and versions pinned to keys or accounts.</summary>
[GenerateSerializer, Immutable, Alias("mk.ReleaseSpec")]
public sealed record ReleaseSpec(
    [property: Id(0)] IReadOnlyDictionary<string, int> Weights,
    [property: Id(1)] IReadOnlyDictionary<string, string>? Pins = null);

/// <summary>The release in force, with its number (each change or rollback makes a new one).</summary>
[GenerateSerializer, Immutable, Alias("mk.ReleaseInfo")]
public sealed record ReleaseInfo(
    [property: Id(0)] IReadOnlyDictionary<string, int> Weights,
    [property: Id(1)] IReadOnlyDictionary<string, string> Pins,
    [property: Id(2)] int Number,
    [property: Id(3)] DateTimeOffset? SetAt);

/// <summary>A data service as admins and its provider see it.</summary>
[GenerateSerializer, Immutable, Alias("mk.DataServiceInfo")]
public sealed record DataServiceInfo(
    [property: Id(0)] string Id,
    [property: Id(1)] string Name,
    [property: Id(2)] string ProviderId,
    [property: Id(3)] string UpstreamBaseUrl,
    [property: Id(4)] long PricePerCall,
    [property: Id(5)] string Currency,
    [property: Id(6)] string? Description,
    [property: Id(7)] int TimeoutMs,
    [property: Id(8)] int Revision,
    [property: Id(9)] DateTimeOffset CreatedAt,
    [property: Id(10)] DateTimeOffset UpdatedAt,
    [property: Id(11)] ServiceCounters Counters,
    [property: Id(12)] RateLimit? UpstreamRateLimit = null,
    [property: Id(13)] string? Category = null,
    [property: Id(14)] ChargeRule ChargeRule = ChargeRule.PerSuccess,
    [property: Id(15)] ServiceStatus Status = ServiceStatus.Draft,
    [property: Id(16)] IReadOnlyList<ServiceField>? Parameters = null,
    [property: Id(17)] IReadOnlyList<ServiceField>? ResponseFields = null,
    [property: Id(18)] IReadOnlyList<ServiceVersionInfo>? Versions = null,
    [property: Id(19)] ReleaseInfo? Release = null);

/// <summary>Per-service call counters, kept in the service grain's memory.</summary>
[GenerateSerializer, Immutable, Alias("mk.ServiceCounters")]
public sealed record ServiceCounters(
    [property: Id(0)] long Calls,
    [property: Id(1)] long Succeeded,
    [property: Id(2)] long Failed,
    [property: Id(3)] long Revenue);

/// <summary>A version as the call path needs it (secret header values still encrypted).</summary>
[GenerateSerializer, Immutable, Alias("mk.VersionRoute")]
public sealed record VersionRoute(
    [property: Id(0)] string Id,
    [property: Id(1)] int Revision,
    [property: Id(2)] ServiceVersionSpec Spec);

/// <summary>The routing data the call path needs; cached by front doors and refreshed when <see cref="Revision"/> changes.</summary>
[GenerateSerializer, Immutable, Alias("mk.ServiceRoute")]
public sealed record ServiceRoute(
    [property: Id(0)] string ServiceId,
    [property: Id(2)] long PricePerCall,
    [property: Id(3)] string Currency,
    [property: Id(5)] int Revision,
    [property: Id(6)] RateLimit? UpstreamRateLimit,
    [property: Id(7)] ServiceStatus Status,
    [property: Id(8)] ChargeRule ChargeRule,
    [property: Id(9)] IReadOnlyList<VersionRoute> Versions,
    [property: Id(10)] IReadOnlyDictionary<string, int> Weights,
    [property: Id(11)] IReadOnlyDictionary<string, string> Pins);

/// <summary>One data service: its catalog entry, price, versions, release, protection and counters.</summary>
/// <remarks>
/// Every change takes the acting provider: null for an admin, otherwise the provider the caller authenticated as;
/// a provider acting on another provider's service gets <see cref="KeyNotFoundException"/>, as if it did not exist.
/// Invalid input throws <see cref="ArgumentException"/> and changes nothing.
/// </remarks>
[Alias("mk.IDataServiceGrain")]
public interface IDataServiceGrain : IGrainWithStringKey
{
    /// <summary>Creates the service, or changes its catalog entry when it exists (bumping its revision).</summary>
    [Alias("UpsertAsync")]
    Task<DataServiceInfo> UpsertAsync(DataServiceSpec spec);

    /// <summary>The service, or null when it was never created.</summary>
    [Alias("GetAsync")]
    Task<DataServiceInfo?> GetAsync();

    /// <summary>The service when <paramref name="actingProviderId"/> may see it (null: an admin), else null.</summary>
    [Alias("GetAsAsync")]
    Task<DataServiceInfo?> GetAsAsync(string? actingProviderId);

    /// <summary>Creates or changes a version's adapter and protection.</summary>
    [Alias("UpsertVersionAsync")]
    Task<DataServiceInfo> UpsertVersionAsync(string versionId, ServiceVersionSpec spec, string? actingProviderId);

    /// <summary>Removes a version that takes no traffic and no pin.</summary>
    [Alias("DeleteVersionAsync")]
    Task<DataServiceInfo> DeleteVersionAsync(string versionId, string? actingProviderId);

    /// <summary>Sets the gray release (weights and pins) in one step.</summary>
    [Alias("SetReleaseAsync")]
    Task<DataServiceInfo> SetReleaseAsync(ReleaseSpec release, string? actingProviderId);

    /// <summary>Puts back the release before the current one.</summary>
    [Alias("RollbackAsync")]
    Task<DataServiceInfo> RollbackAsync(string? actingProviderId);

    /// <summary>Moves the service to another status (draft → published ⇄ suspended → retired).</summary>
    [Alias("SetStatusAsync")]
    Task<DataServiceInfo> SetStatusAsync(ServiceStatus status, string? actingProviderId);

    /// <summary>The routing data, or null when the service does not exist.</summary>
    [Alias("GetRouteAsync")]
    ValueTask<ServiceRoute?> GetRouteAsync();

    /// <summary>Adds one settled call to the counters; fire and forget.</summary>
    [OneWay, Alias("RecordAsync")]
    Task RecordAsync(bool succeeded, long charged);

    /// <summary>Adds many settled calls to the counters (answered, so a batch refused by a stopping silo is sent again).</summary>
    [Alias("RecordBatchAsync")]
    Task RecordBatchAsync(ServiceUsageDelta usage, DeliveryId? delivery = null);
}

/// <summary>A catalog line: what consumers browse.</summary>
[GenerateSerializer, Immutable, Alias("mk.CatalogEntry")]
public sealed record CatalogEntry(
    [property: Id(0)] string Id,
    [property: Id(1)] string Name,
    [property: Id(2)] string ProviderId,
    [property: Id(3)] string? Category,
    [property: Id(4)] string? Description,
    [property: Id(5)] long PricePerCall,
    [property: Id(6)] string Currency,
    [property: Id(7)] ChargeRule ChargeRule,
    [property: Id(8)] ServiceStatus Status,
    [property: Id(9)] IReadOnlyList<ServiceField>? Parameters = null,
    [property: Id(10)] IReadOnlyList<ServiceField>? ResponseFields = null);

/// <summary>A catalog search: text in the name (or id), a category, a provider, statuses; paged from 1.</summary>
[GenerateSerializer, Immutable, Alias("mk.CatalogQuery")]
public sealed record CatalogQuery(
    [property: Id(0)] string? Search = null,
    [property: Id(1)] string? Category = null,
    [property: Id(2)] string? ProviderId = null,
    [property: Id(3)] IReadOnlyList<ServiceStatus>? Statuses = null,
    [property: Id(4)] int Page = 1,
    [property: Id(5)] int PageSize = 20);

/// <summary>One page of catalog entries, sorted by name then id.</summary>
[GenerateSerializer, Immutable, Alias("mk.CatalogPage")]
public sealed record CatalogPage(
    [property: Id(0)] IReadOnlyList<CatalogEntry> Items,
    [property: Id(1)] int Page,
    [property: Id(2)] int PageSize,
    [property: Id(3)] int Total);

/// <summary>The searchable catalog: one line per service, kept current by the service grains.</summary>
[Alias("mk.ICatalogGrain")]
public interface ICatalogGrain : IGrainWithStringKey
{
    /// <summary>The key of the one catalog grain.</summary>
    const string Default = "default";

    /// <summary>Adds or replaces a service's line.</summary>
    [Alias("PutAsync")]
    Task PutAsync(CatalogEntry entry);

    /// <summary>Entries matching the query.</summary>
    [Alias("SearchAsync")]
    Task<CatalogPage> SearchAsync(CatalogQuery query);
}
