namespace Marketplace.Grains;

/// <summary>
/// One admitted call whose pass-through answer goes straight to the caller's connection (<see cref="ICallerConnection"/>):
/// where it goes upstream, how the upstream request is filled, and the call's result for the status the upstream answers,
/// whose headers (charge, balance, limits) the caller gets before the answer's body.
/// </summary>
public sealed class PassThroughCall(UpstreamAdapter adapter, CallRequest request, string trackId, Uri destination, Func<int, CallResult> answered)
{
    /// <summary>The upstream address.</summary>
    public Uri Destination => destination;

    /// <summary>The version's base address.</summary>
    public string BaseUrl => adapter.Spec.BaseUrl;

    /// <summary>True for a status whose answer the caller gets as the upstream sent it (2xx and 4xx); others become the marketplace's problem answers.</summary>
    public static bool PassesStatus(int status) => status is >= 200 and < 300 or >= 400 and < 500;

    /// <summary>The body the upstream gets (the caller's, fields renamed when the version maps parameters), or null.</summary>
    public byte[]? Body => adapter.BodyFor(request);

    /// <summary>
    /// Fills the upstream request the forwarder made: method, TrackId and the version's headers, never the caller's; and
    /// the content headers of the body the forwarder sends (<see cref="Body"/>, given to it as the caller's).
    /// </summary>
    public void Fill(HttpRequestMessage message, long? bodyLength)
    {
        adapter.FillHeaders(message, request, trackId);
        if (message.Content is { } content && bodyLength is { } length)
        {
            UpstreamAdapter.DescribeBody(content.Headers, request, length);
        }
    }

    /// <summary>The call's result when the upstream answers <paramref name="status"/>.</summary>
    public CallResult Answered(int status) => answered(status);
}
