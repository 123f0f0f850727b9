using System.Text;
using System.Text.Json;

namespace Marketplace.Client;

/// <summary>
/// Typed calls into the marketplace for internal .NET services. Calls run through the same pipeline as HTTP callers
/// (authentication, entitlement, rate limits, quotas, balance, forwarding, charging, call log), inside the cluster.
/// </summary>
public sealed class MarketplaceClient(IGrainFactory grains)
{
    /// <summary>Calls a data service with a consumer's API key (or access token).</summary>
    /// <param name="serviceId">The data service, e.g. <c>phone-verify</c>.</param>
    /// <param name="apiKey">The consumer's credential: <c>mk_&lt;keyId&gt;.&lt;secret&gt;</c> or an access token.</param>
    /// <param name="pathAndQuery">The part after the service id, e.g. <c>/verify?number=%2B4930123456</c>.</param>
    /// <param name="method">The HTTP method the upstream gets.</param>
    /// <param name="body">The request body, if any.</param>
    /// <param name="contentType">The body's content type.</param>
    /// <param name="trackId">A TrackId to use (8-64 characters of <c>[A-Za-z0-9._-]</c>); a new one when null.</param>
    /// <param name="idempotencyKey">A retry with the same key gets the first call's answer, without a second charge.</param>
    public Task<CallResult> CallAsync(string serviceId, string apiKey, string pathAndQuery, string method = "GET",
        byte[]? body = null, string? contentType = null, string? trackId = null, string? idempotencyKey = null)
    {
        ArgumentException.ThrowIfNullOrEmpty(serviceId);
        ArgumentException.ThrowIfNullOrEmpty(apiKey);
        ArgumentNullException.ThrowIfNull(pathAndQuery);
        var query = pathAndQuery.IndexOf('?', StringComparison.Ordinal);
        var path = query < 0 ? pathAndQuery : pathAndQuery[..query];
        var queryString = query < 0 ? string.Empty : pathAndQuery[query..];

        // The pipeline grain is a stateless worker: the call runs on whichever silo receives it, with no hot spot.
        return grains.GetGrain<ICallPipelineGrain>(0).CallAsync(
            new CallRequest(serviceId, apiKey, method, path, queryString, contentType, body, trackId, idempotencyKey));
    }

    /// <summary>A client bound to one API key, for services that always call with the same credential.</summary>
    public MarketplaceKeyClient WithKey(string apiKey)
    {
        ArgumentException.ThrowIfNullOrEmpty(apiKey);
        return new MarketplaceKeyClient(this, apiKey);
    }
}

/// <summary><see cref="MarketplaceClient"/> with one consumer's API key.</summary>
public sealed class MarketplaceKeyClient(MarketplaceClient client, string apiKey)
{
    /// <summary>A GET of <paramref name="pathAndQuery"/> on the data service.</summary>
    public Task<CallResult> GetAsync(string serviceId, string pathAndQuery, string? trackId = null, string? idempotencyKey = null) =>
        client.CallAsync(serviceId, apiKey, pathAndQuery, trackId: trackId, idempotencyKey: idempotencyKey);

    /// <summary>A POST of a JSON body to <paramref name="pathAndQuery"/> on the data service.</summary>
    public Task<CallResult> PostJsonAsync<T>(string serviceId, string pathAndQuery, T body, string? trackId = null, string? idempotencyKey = null) =>
        client.CallAsync(serviceId, apiKey, pathAndQuery, "POST", JsonSerializer.SerializeToUtf8Bytes(body, CallResults.Json), "application/json",
            trackId, idempotencyKey);
}

/// <summary>Reading a <see cref="CallResult"/>.</summary>
public static class CallResults
{
    /// <summary>The JSON settings used to read and write bodies (web defaults: camelCase, case-insensitive).</summary>
    public static readonly JsonSerializerOptions Json = new(JsonSerializerDefaults.Web);

    /// <summary>True when the upstream answered 2xx.</summary>
    public static bool IsSuccess(this CallResult result) => result.Outcome == CallOutcome.Succeeded;

    /// <summary>The body as UTF-8 text (empty when there is none).</summary>
    public static string BodyText(this CallResult result) => result.Body is { } body ? Encoding.UTF8.GetString(body) : string.Empty;

    /// <summary>The upstream's JSON body as <typeparamref name="T"/>; default when there is no body.</summary>
    public static T? ReadJson<T>(this CallResult result) =>
        result.Body is { Length: > 0 } body ? JsonSerializer.Deserialize<T>(body, Json) : default;
}
