namespace Marketplace.Grains;

/// <summary>
/// What an account holds for calls in flight and for keys' leases, grouped into holds by the time they were made, so
/// that money whose release never comes (its front door crashed before settling, or the key activation holding a
/// lease died with its silo) is released after a bounded time instead of staying reserved while the account lives.
/// </summary>
/// <remarks>
/// Every reservation names the hold it was made in; its settlement or returned lease names it again and releases from
/// that hold only. A hold takes reservations for <c>timeout / 10</c> and expires <paramref name="timeout"/> after it
/// stopped taking them, so a reservation lives at least <paramref name="timeout"/> and at most 1.1 × it. A release
/// naming a hold that has expired (or another activation's hold) releases nothing: the money is already free.
/// Hold ids start at a random number per book, so a settlement meant for a previous activation matches no hold here.
/// </remarks>
internal sealed class ReservationBook
{
    private readonly TimeSpan _timeout;
    private readonly TimeSpan _holdSpan;
    private readonly List<Hold> _holds = [];
    private long _lastId;

    public ReservationBook(TimeSpan timeout)
    {
        ArgumentOutOfRangeException.ThrowIfLessThanOrEqual(timeout, TimeSpan.Zero);
        _timeout = timeout;
        _holdSpan = timeout / 10;
        _lastId = Random.Shared.NextInt64(1, long.MaxValue / 2);
    }

    /// <summary>Everything held.</summary>
    public long Total { get; private set; }

    /// <summary>Holds <paramref name="amount"/> and returns the id of the hold that carries it.</summary>
    public long Add(long amount, DateTimeOffset now)
    {
        var hold = _holds.Count > 0 && now < _holds[^1].ClosesAt ? _holds[^1] : Open(now);
        hold.Outstanding += amount;
        Total += amount;
        return hold.Id;
    }

    /// <summary>Releases up to <paramref name="amount"/> from hold <paramref name="holdId"/>; returns what was released.</summary>
    /// <remarks>Hold id 0 (a sender that names no hold) releases from the oldest holds first.</remarks>
    public long Release(long holdId, long amount)
    {
        if (amount <= 0)
        {
            return 0;
        }

        if (holdId == 0)
        {
            var released = 0L;
            foreach (var hold in _holds)
            {
                released += Take(hold, amount - released);
                if (released == amount)
                {
                    break;
                }
            }

            return released;
        }

        foreach (var hold in _holds)
        {
            if (hold.Id == holdId)
            {
                return Take(hold, amount);
            }
        }

        return 0;
    }

    /// <summary>True when <paramref name="holdId"/> names a hold of this book that has not expired.</summary>
    public bool IsLive(long holdId)
    {
        foreach (var hold in _holds)
        {
            if (hold.Id == holdId)
            {
                return true;
            }
        }

        return false;
    }

    /// <summary>Drops the holds older than the timeout; returns how many, and in <paramref name="released"/> what they still held.</summary>
    public int Expire(DateTimeOffset now, out long released)
    {
        released = 0;
        var count = 0;
        while (count < _holds.Count && now >= _holds[count].ClosesAt + _timeout)
        {
            released += _holds[count].Outstanding;
            count++;
        }

        if (count > 0)
        {
            _holds.RemoveRange(0, count);
            Total -= released;
        }

        return count;
    }

    private Hold Open(DateTimeOffset now)
    {
        var hold = new Hold(++_lastId, now + _holdSpan);
        _holds.Add(hold);
        return hold;
    }

    private long Take(Hold hold, long amount)
    {
        var taken = Math.Min(amount, hold.Outstanding);
        hold.Outstanding -= taken;
        Total -= taken;
        return taken;
    }

    private sealed class Hold(long id, DateTimeOffset closesAt)
    {
        public long Id { get; } = id;

        public DateTimeOffset ClosesAt { get; } = closesAt;

        public long Outstanding { get; set; }
    }
}
