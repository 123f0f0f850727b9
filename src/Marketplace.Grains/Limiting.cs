namespace Marketplace.Grains;

/// <summary>
/// A token bucket kept in a grain's memory. Not stored: after a crash a bucket starts full, which can only
/// let through one extra burst; quotas, which are stored, are what bound usage over time.
/// </summary>
public sealed class TokenBucket(RateLimit limit, DateTimeOffset now)
{
    private double _tokens = limit.Burst;
    private DateTimeOffset _updated = now;

    /// <summary>The limit this bucket enforces.</summary>
    public RateLimit Limit { get; private set; } = limit;

    /// <summary>Tokens available at <paramref name="now"/>.</summary>
    public double Available(DateTimeOffset now)
    {
        Refill(now);
        return _tokens;
    }

    /// <summary>Takes tokens, which <see cref="Available"/> said were there.</summary>
    public void Take(int count = 1) => _tokens -= count;

    /// <summary>Gives back tokens taken for calls that were then refused or not spent.</summary>
    public void Refund(int count = 1) => _tokens = Math.Min(Limit.Burst, _tokens + count);

    /// <summary>Applies a changed limit, keeping the tokens already earned (capped at the new burst).</summary>
    public void Reconfigure(RateLimit limit)
    {
        Limit = limit;
        _tokens = Math.Min(_tokens, limit.Burst);
    }

    /// <summary>Where the caller stands, for the RateLimit headers.</summary>
    public LimitStatus Status(string policy, DateTimeOffset now)
    {
        var tokens = Available(now);
        var window = (long)Math.Ceiling(Limit.Burst / Limit.PerSecond);
        var reset = tokens >= 1 ? 0 : Math.Max(1, (long)Math.Ceiling((1 - tokens) / Limit.PerSecond));
        return new LimitStatus(policy, Limit.Burst, (long)Math.Floor(tokens), Math.Max(1, window), reset);
    }

    private void Refill(DateTimeOffset now)
    {
        var elapsed = (now - _updated).TotalSeconds;
        if (elapsed > 0)
        {
            _tokens = Math.Min(Limit.Burst, _tokens + (elapsed * Limit.PerSecond));
            _updated = now;
        }
    }
}

/// <summary>Quota windows: days and months in UTC shifted by the key's window offset.</summary>
public static class QuotaWindows
{
    /// <summary>Start of the day that contains <paramref name="now"/>.</summary>
    public static DateTimeOffset DayStart(DateTimeOffset now, TimeSpan offset)
    {
        var local = now.ToOffset(offset);
        return new DateTimeOffset(local.Year, local.Month, local.Day, 0, 0, 0, offset).ToUniversalTime();
    }

    /// <summary>Start of the month that contains <paramref name="now"/>.</summary>
    public static DateTimeOffset MonthStart(DateTimeOffset now, TimeSpan offset)
    {
        var local = now.ToOffset(offset);
        return new DateTimeOffset(local.Year, local.Month, 1, 0, 0, 0, offset).ToUniversalTime();
    }

    /// <summary>Start of the next window after <paramref name="start"/>.</summary>
    public static DateTimeOffset Next(string window, DateTimeOffset start, TimeSpan offset) =>
        window == Day ? start.AddDays(1) : start.ToOffset(offset).AddMonths(1).ToUniversalTime();

    /// <summary>Name of the daily window.</summary>
    public const string Day = "day";

    /// <summary>Name of the monthly window.</summary>
    public const string Month = "month";
}
