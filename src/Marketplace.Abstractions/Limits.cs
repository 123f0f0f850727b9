namespace Marketplace;

/// <summary>A token bucket: <see cref="PerSecond"/> calls refill per second, up to <see cref="Burst"/> at once.</summary>
[GenerateSerializer, Immutable, Alias("mk.RateLimit")]
public sealed record RateLimit(
    [property: Id(0)] double PerSecond,
    [property: Id(1)] int Burst);

/// <summary>Call quotas per day and per month; null means unlimited.</summary>
[GenerateSerializer, Immutable, Alias("mk.Quota")]
public sealed record Quota(
    [property: Id(0)] long? PerDay,
    [property: Id(1)] long? PerMonth);

/// <summary>Limits that apply to one key's calls to one data service.</summary>
[GenerateSerializer, Immutable, Alias("mk.ServiceLimits")]
public sealed record ServiceLimits(
    [property: Id(0)] RateLimit? Rate,
    [property: Id(1)] Quota? Quota);

/// <summary>A key's limits: over all its calls, and per data service.</summary>
/// <param name="WindowOffset">Where quota days and months start, as an offset from UTC (default 0: UTC midnight and the 1st).</param>
[GenerateSerializer, Immutable, Alias("mk.KeyLimits")]
public sealed record KeyLimits(
    [property: Id(0)] RateLimit? Rate,
    [property: Id(1)] Quota? Quota,
    [property: Id(2)] IReadOnlyDictionary<string, ServiceLimits>? PerService,
    [property: Id(3)] TimeSpan? WindowOffset)
{
    /// <summary>No limits.</summary>
    public static KeyLimits None { get; } = new(null, null, null, null);
}

/// <summary>Where a limited caller stands: the tightest limit that applies, for the RateLimit headers.</summary>
/// <param name="Policy">Name of the limit (<c>rate</c>, <c>day</c>, <c>month</c>, <c>service-rate</c>, ...).</param>
/// <param name="Limit">Calls allowed per window (the burst for a rate limit).</param>
/// <param name="Remaining">Calls left in the window.</param>
/// <param name="WindowSeconds">Length of the window.</param>
/// <param name="ResetSeconds">Seconds until the window resets (or a token refills, for a rate limit).</param>
[GenerateSerializer, Immutable, Alias("mk.LimitStatus")]
public sealed record LimitStatus(
    [property: Id(0)] string Policy,
    [property: Id(1)] long Limit,
    [property: Id(2)] long Remaining,
    [property: Id(3)] long WindowSeconds,
    [property: Id(4)] long ResetSeconds);
