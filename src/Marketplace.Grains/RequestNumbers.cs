namespace Marketplace.Grains;

/// <summary>
/// Numbers a sender's requests about money (<see cref="RequestId"/>) and knows which are still open, so each request can
/// tell its receiver below which number every outcome is known (what the receiver may forget). Thread-safe: a front door
/// numbers the refills of all its keys from many threads.
/// </summary>
public sealed class RequestNumbers
{
    private readonly Lock _gate = new();
    private readonly Guid _sender = Guid.NewGuid();
    private readonly SortedSet<long> _open = [];
    private long _last;

    /// <summary>Opens a request: its id, to send (and send again) until its outcome is known, then <see cref="Close"/>.</summary>
    public RequestId Open()
    {
        lock (_gate)
        {
            var sequence = ++_last;
            _open.Add(sequence);
            return new RequestId(_sender, sequence, _open.Min);
        }
    }

    /// <summary>The request's outcome is known (it was answered, or its sender gave up on it).</summary>
    public void Close(RequestId id)
    {
        lock (_gate)
        {
            _open.Remove(id.Sequence);
        }
    }
}
