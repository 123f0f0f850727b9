namespace Marketplace.Grains;

/// <summary>
/// An upstream's answer body not read yet: a pass-through version's answer to a caller that takes it as a stream (the
/// HTTP front door), copied to the caller as it arrives instead of being held in memory whole. Whoever gets it copies
/// and disposes it; the version's timeout bounds the whole answer, the copy included.
/// </summary>
public sealed class UpstreamBody : IAsyncDisposable
{
    private readonly HttpResponseMessage _response;
    private readonly TimeSpan _remaining;
    private readonly TimeProvider _time;

    internal UpstreamBody(HttpResponseMessage response, TimeSpan remaining, TimeProvider time)
    {
        _response = response;
        _remaining = remaining <= TimeSpan.Zero ? TimeSpan.FromMilliseconds(1) : remaining;
        _time = time;
    }

    /// <summary>The length the upstream announced, if it did.</summary>
    public long? Length => _response.Content.Headers.ContentLength;

    /// <summary>
    /// Copies the body to <paramref name="destination"/>; stops once what was left of the version's timeout when the headers
    /// came has passed since the copy began (the call's record is queued first, which may wait while the journal is full),
    /// or at the caller's cancellation.
    /// </summary>
    public async Task CopyToAsync(Stream destination, CancellationToken cancellationToken)
    {
        using var deadline = new CancellationTokenSource(_remaining, _time);
        using var linked = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken, deadline.Token);
        await using var body = await _response.Content.ReadAsStreamAsync(linked.Token);
        await body.CopyToAsync(destination, 64 * 1024, linked.Token);
    }

    /// <inheritdoc />
    public ValueTask DisposeAsync()
    {
        _response.Dispose();
        return ValueTask.CompletedTask;
    }
}
