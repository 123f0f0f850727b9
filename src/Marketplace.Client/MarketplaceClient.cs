namespace Marketplace.Client;

/// <summary>
/// Typed calls into the marketplace for internal .NET services. Calls run through the same pipeline as HTTP
/// callers (authentication, entitlement, balance, forwarding, charging), inside the cluster.
/// </summary>
public sealed class MarketplaceClient(IGrainFactory grains)
{
    /// <summary>Calls a data service with a consumer's API key.</summary>
    /// <param name="pathAndQuery">The part after the service id, e.g. <c>/verify?number=%2B4930123456</c>.</param>
    public Task<CallResult> CallAsync(string serviceId, string apiKey, string pathAndQuery, string method = "GET",
        byte[]? body = null, string? contentType = null, string? trackId = null)
    {
        ArgumentException.ThrowIfNullOrEmpty(serviceId);
        ArgumentException.ThrowIfNullOrEmpty(apiKey);
        var query = pathAndQuery.IndexOf('?', StringComparison.Ordinal);
        var path = query < 0 ? pathAndQuery : pathAndQuery[..query];
        var queryString = query < 0 ? string.Empty : pathAndQuery[query..];

        // The pipeline grain is a stateless worker: the call runs on whichever silo receives it, with no hot spot.
        return grains.GetGrain<ICallPipelineGrain>(0).CallAsync(new CallRequest(serviceId, apiKey, method, path, queryString, contentType, body, trackId));
    }
}
