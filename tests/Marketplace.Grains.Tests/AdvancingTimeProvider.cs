namespace Marketplace.Grains.Tests;

/// <summary>
/// A wall clock that runs with the system's and that a test can move forward. Unlike <see cref="ManualTimeProvider"/> it
/// does not stand still: the leasing code paces its recalls and bounds its waits by the wall clock, and would wait forever
/// on a clock that never moves. Timers and timestamps are the system's.
/// </summary>
public sealed class AdvancingTimeProvider(DateTimeOffset start) : TimeProvider
{
    private readonly long _startedAt = TimeProvider.System.GetTimestamp();
    private long _advancedTicks;

    /// <inheritdoc />
    public override DateTimeOffset GetUtcNow() =>
        start + TimeProvider.System.GetElapsedTime(_startedAt) + TimeSpan.FromTicks(Interlocked.Read(ref _advancedTicks));

    /// <summary>Moves the clock forward.</summary>
    public void Advance(TimeSpan by)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(by, TimeSpan.Zero);
        Interlocked.Add(ref _advancedTicks, by.Ticks);
    }
}
