namespace Marketplace.Grains;

/// <summary>
/// The answers a grain gave to requests about money, per sender (<see cref="RequestId"/>), so that a request sent again
/// after its answer was lost is answered as the first time and applied once.
/// </summary>
/// <remarks>
/// <para>The window is bounded by the senders, not by traffic: each request says below which number its sender knows every
/// outcome (<see cref="RequestId.Resolved"/>), the answers below it are forgotten and a late copy of such a request is
/// stale. So per sender only the requests it still has open are remembered (a key's few asks and returns to its account,
/// a front door's refills in flight). A sender silent for <see cref="Retention"/> (its activation or process is gone) is
/// forgotten whole; that is far longer than a sender resends (about a minute) and than Orleans lets a message live (its
/// response timeout), so no copy of its requests can still arrive.</para>
/// <para>Kept in memory, with what it guards: an account's holds and a key's leases live only in their activation. A request
/// sent again to a new activation finds neither its first answer nor that answer's effect (whose holds and leases died with
/// the old activation: hold and lease ids start at random, so nothing names them again), and is applied there once.
/// Used from one grain activation, so no locks.</para>
/// </remarks>
public sealed class RequestMemory<T>
{
    /// <summary>How long a silent sender is remembered.</summary>
    public static readonly TimeSpan Retention = TimeSpan.FromMinutes(10);

    private const int PruneAbove = 32;
    private readonly Dictionary<Guid, Sender> _senders = [];

    /// <summary>Senders remembered now (for tests).</summary>
    public int Senders => _senders.Count;

    /// <summary>Answers remembered now (for tests).</summary>
    public int Answers => _senders.Values.Sum(sender => sender.Answers.Count);

    /// <summary>Whether <paramref name="id"/> is new, a repeat (then <paramref name="answer"/> is the first answer), or stale.</summary>
    public RequestSeen Check(RequestId id, DateTimeOffset now, out T? answer)
    {
        answer = default;
        if (!_senders.TryGetValue(id.Sender, out var sender))
        {
            if (_senders.Count >= PruneAbove)
            {
                foreach (var (senderId, old) in _senders)
                {
                    if (now - old.SeenAt > Retention)
                    {
                        _senders.Remove(senderId);
                    }
                }
            }

            sender = new Sender();
            _senders[id.Sender] = sender;
        }

        sender.SeenAt = now;
        sender.Resolve(id.Resolved);
        if (id.Sequence < sender.Floor)
        {
            return RequestSeen.Stale;
        }

        if (sender.Answers.TryGetValue(id.Sequence, out var first))
        {
            answer = first;
            return RequestSeen.Repeat;
        }

        return RequestSeen.New;
    }

    /// <summary>Remembers the answer to a new request (checked first with <see cref="Check"/>).</summary>
    public void Remember(RequestId id, T answer)
    {
        if (_senders.TryGetValue(id.Sender, out var sender) && id.Sequence >= sender.Floor)
        {
            sender.Answers[id.Sequence] = answer;
        }
    }

    /// <summary>Forgets the answer to <paramref name="id"/>, so a repeat is applied anew (its first run failed and changed nothing).</summary>
    public void Forget(RequestId id)
    {
        if (_senders.TryGetValue(id.Sender, out var sender))
        {
            sender.Answers.Remove(id.Sequence);
        }
    }

    private sealed class Sender
    {
        public Dictionary<long, T> Answers { get; } = [];

        public long Floor { get; private set; }

        public DateTimeOffset SeenAt { get; set; }

        public void Resolve(long resolved)
        {
            if (resolved <= Floor)
            {
                return;
            }

            Floor = resolved;
            if (Answers.Count > 0)
            {
                foreach (var sequence in Answers.Keys)
                {
                    if (sequence < resolved)
                    {
                        Answers.Remove(sequence);
                    }
                }
            }
        }
    }
}
