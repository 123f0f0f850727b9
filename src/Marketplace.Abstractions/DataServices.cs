namespace Marketplace;

/// <summary>What an admin sends to publish or change a data service.</summary>
[GenerateSerializer, Immutable, Alias("mk.DataServiceSpec")]
public sealed record DataServiceSpec(
    [property: Id(0)] string Name,
    [property: Id(1)] string ProviderId,
    [property: Id(2)] string UpstreamBaseUrl,
    [property: Id(3)] long PricePerCall,
    [property: Id(4)] string Currency,
    [property: Id(5)] string? Description,
    [property: Id(6)] int TimeoutMs,
    [property: Id(7)] RateLimit? UpstreamRateLimit = null);

/// <summary>A data service as admins and consumers see it.</summary>
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
    [property: Id(12)] RateLimit? UpstreamRateLimit = null);

/// <summary>Per-service call counters, kept in the service grain's memory.</summary>
[GenerateSerializer, Immutable, Alias("mk.ServiceCounters")]
public sealed record ServiceCounters(
    [property: Id(0)] long Calls,
    [property: Id(1)] long Succeeded,
    [property: Id(2)] long Failed,
    [property: Id(3)] long Revenue);

/// <summary>The routing data the call path needs; cached by front doors and refreshed when <see cref="Revision"/> changes.</summary>
[GenerateSerializer, Immutable, Alias("mk.ServiceRoute")]
public sealed record ServiceRoute(
    [property: Id(0)] string ServiceId,
    [property: Id(1)] string UpstreamBaseUrl,
    [property: Id(2)] long PricePerCall,
    [property: Id(3)] string Currency,
    [property: Id(4)] int TimeoutMs,
    [property: Id(5)] int Revision,
    [property: Id(6)] RateLimit? UpstreamRateLimit = null);

/// <summary>One data service: its catalog entry, price, upstream and counters.</summary>
[Alias("mk.IDataServiceGrain")]
public interface IDataServiceGrain : IGrainWithStringKey
{
    /// <summary>Creates the service, or changes it when it exists (bumping its revision).</summary>
    [Alias("UpsertAsync")]
    Task<DataServiceInfo> UpsertAsync(DataServiceSpec spec);

    /// <summary>The service, or null when it was never created.</summary>
    [Alias("GetAsync")]
    Task<DataServiceInfo?> GetAsync();

    /// <summary>The routing data, or null when the service does not exist.</summary>
    [Alias("GetRouteAsync")]
    ValueTask<ServiceRoute?> GetRouteAsync();

    /// <summary>Adds one settled call to the counters; fire and forget.</summary>
    [OneWay, Alias("RecordAsync")]
    Task RecordAsync(bool succeeded, long charged);

    /// <summary>Adds many settled calls to the counters; fire and forget.</summary>
    [OneWay, Alias("RecordBatchAsync")]
    Task RecordBatchAsync(ServiceUsageDelta usage);
}
