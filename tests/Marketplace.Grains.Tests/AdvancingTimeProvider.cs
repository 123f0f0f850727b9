using System.Diagnostics;

namespace Marketplace.Grains.Tests;

/// <summary>
/// A clock that runs with the system's and that a test can move forward, wall clock and timestamps alike. Unlike
/// <see cref="ManualTimeProvider"/> it does not stand still: the leasing code paces its recalls and bounds its waits by
/// this clock, and would wait forever on one that never moves. Timers are the system's: a timer due in a second fires a
/// second later whatever the clock was moved by, so moving it makes what a timer checks due, not the timer itself.
/// </summary>
public sealed class AdvancingTimeProvider(DateTimeOffset start) : TimeProvider
{
    private readonly long _startedAt = Stopwatch.GetTimestamp();
    private long _advancedTicks;

    /// <inheritdoc />
    public override DateTimeOffset GetUtcNow() =>
        start + Stopwatch.GetElapsedTime(_startedAt) + TimeSpan.FromTicks(Interlocked.Read(ref _advancedTicks));

    /// <inheritdoc />
    public override long GetTimestamp() =>
        Stopwatch.GetTimestamp() + (Interlocked.Read(ref _advancedTicks) * Stopwatch.Frequency / TimeSpan.TicksPerSecond);

    /// <summary>Moves the clock forward.</summary>
    public void Advance(TimeSpan by)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(by, TimeSpan.Zero);
        Interlocked.Add(ref _advancedTicks, by.Ticks);
    }
}
