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
/// <para>What a previous activation held is unknown to a new one, yet keys still spend its leases and front doors still
/// settle its calls. So a new book can <see cref="Withhold"/> the most the previous one may have held: settlements the
/// previous book never received that name its holds come out of that amount, and what is left of it ends when every hold
/// the previous book could have made has expired.</para>
/// </remarks>
internal sealed class ReservationBook
{
    private readonly TimeSpan _timeout;
    private readonly TimeSpan _holdSpan;
    private readonly List<Hold> _holds = [];
    private readonly long _firstId;
    private long _lastId;
    private DateTimeOffset _withheldUntil;

    public ReservationBook(TimeSpan timeout)
    {
        ArgumentOutOfRangeException.ThrowIfLessThanOrEqual(timeout, TimeSpan.Zero);
        _timeout = timeout;
        _holdSpan = timeout / 10;
        _firstId = Random.Shared.NextInt64(1, long.MaxValue / 2);
        _lastId = _firstId;
    }

    /// <summary>Everything held, <see cref="Withheld"/> included.</summary>
    public long Total { get; private set; }

    /// <summary>What is still withheld for a previous book's holds.</summary>
    public long Withheld { get; private set; }

    /// <summary>
    /// Holds <paramref name="amount"/> (the most a previous book may still have held) for that book's holds, until every hold
    /// it made before <paramref name="now"/> has expired: <c>timeout × 1.1</c>.
    /// </summary>
    public void Withhold(long amount, DateTimeOffset now)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(amount);
        Total += amount - Withheld;
        Withheld = amount;
        _withheldUntil = now + _holdSpan + _timeout;
    }

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

    /// <summary>
    /// Releases up to <paramref name="amount"/> from what is withheld when <paramref name="holdId"/> names a previous book's
    /// hold (nothing for this book's own). Only for a release the previous book cannot have applied: a settlement it never
    /// received. (A key's returned lease may have reached the previous book, its answer lost: it releases nothing here.)
    /// </summary>
    public long ReleasePrevious(long holdId, long amount) =>
        amount > 0 && holdId != 0 && !IsOwn(holdId) ? TakeWithheld(amount) : 0;

    // Ids this book gave out (expired ones included); any other id is a previous book's.
    private bool IsOwn(long holdId) => holdId > _firstId && holdId <= _lastId;

    private long TakeWithheld(long amount)
    {
        var taken = Math.Min(amount, Withheld);
        Withheld -= taken;
        Total -= taken;
        return taken;
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

        if (Withheld > 0 && now >= _withheldUntil)
        {
            released += Withheld;
            Total -= Withheld;
            Withheld = 0;
            count++;
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
