namespace Marketplace.Grains.Tests;

/// <summary>
/// A clock that only moves when a test calls <see cref="Advance"/>. Only the wall clock is faked: timers and
/// timestamps stay those of <see cref="TimeProvider.System"/>, so Orleans' own timers keep running.
/// </summary>
public sealed class ManualTimeProvider(DateTimeOffset start) : TimeProvider
{
    private readonly Lock _gate = new();
    private DateTimeOffset _now = start;

    /// <inheritdoc />
    public override DateTimeOffset GetUtcNow()
    {
        lock (_gate)
        {
            return _now;
        }
    }

    /// <summary>Moves the clock forward.</summary>
    public void Advance(TimeSpan by)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(by, TimeSpan.Zero);
        lock (_gate)
        {
            _now += by;
        }
    }
}
