namespace Marketplace.Grains;

/// <summary>
/// How many calls a lease may carry: what a front door wants, but never so much of what is left that a limit could be
/// reached with calls lying unspent in other front doors' leases.
/// </summary>
/// <remarks>
/// A lease asked for ahead of need takes at most a quarter of a quota's room above its tail, so all leases together never
/// reach into the tail; in the tail (the last sixteenth of the quota, at most 64 calls) only a waiting caller gets a call,
/// one at a time. A refusal at the limit therefore finds at most the calls of leases granted above the tail still out,
/// and the key recalls them before it refuses. Rate tokens are leased at most half of what the bucket holds.
/// </remarks>
public static class KeyLeaseSizing
{
    /// <summary>Calls a quota with <paramref name="left"/> calls still free lets a lease take.</summary>
    public static int QuotaCalls(long left, long limit, bool waiting)
    {
        if (left <= 0)
        {
            return 0;
        }

        var tail = Math.Clamp(limit / 16, 1, 64);
        var ahead = Math.Max(0, (left - tail) / 4);
        return (int)Math.Min(int.MaxValue, waiting ? Math.Max(1, ahead) : ahead);
    }

    /// <summary>Calls a token bucket holding <paramref name="tokens"/> lets a lease take (no bucket: no bound).</summary>
    public static int RateCalls(double? tokens, bool waiting)
    {
        if (tokens is not { } available)
        {
            return int.MaxValue;
        }

        var whole = (int)Math.Min(int.MaxValue, Math.Floor(available));
        if (whole < 1)
        {
            return 0;
        }

        return waiting ? Math.Max(1, whole / 2) : whole / 2;
    }
}
