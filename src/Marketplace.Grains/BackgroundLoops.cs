using System.Collections.Concurrent;

namespace Marketplace.Grains;

/// <summary>
/// Heartbeats of this process's background loops (settlement batcher, call-log flusher, ...), for the readiness check.
/// A loop registers with the longest silence it may keep, beats after each successful cycle and reports a failed one;
/// it is unhealthy while it has not beaten within that bound or its last cycle failed.
/// </summary>
public sealed class BackgroundLoops(TimeProvider time)
{
    private readonly ConcurrentDictionary<string, Loop> _loops = new(StringComparer.Ordinal);

    /// <summary>
    /// Registers a loop (or renews its registration, e.g. when a hosted service restarts) and counts it as having just
    /// beaten, so it has <paramref name="maxSilence"/> for its first cycle.
    /// </summary>
    public void Register(string name, TimeSpan maxSilence)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(name);
        ArgumentOutOfRangeException.ThrowIfLessThanOrEqual(maxSilence, TimeSpan.Zero);
        _loops[name] = new Loop(maxSilence, time.GetUtcNow());
    }

    /// <summary>Removes a loop that stopped on purpose (e.g. turned off by configuration).</summary>
    public void Unregister(string name) => _loops.TryRemove(name, out _);

    /// <summary>Records a successful cycle; clears an earlier failure.</summary>
    public void Beat(string name) => Get(name).Beat(time.GetUtcNow());

    /// <summary>Records a failed cycle; the loop stays unhealthy until its next <see cref="Beat"/>.</summary>
    public void Failed(string name, Exception exception)
    {
        ArgumentNullException.ThrowIfNull(exception);
        Get(name).Fail(time.GetUtcNow(), exception);
    }

    /// <summary>Every registered loop as of now, ordered by name.</summary>
    public IReadOnlyList<LoopStatus> Snapshot()
    {
        var now = time.GetUtcNow();
        var statuses = new List<LoopStatus>(_loops.Count);
        foreach (var (name, loop) in _loops)
        {
            statuses.Add(loop.Status(name, now));
        }

        statuses.Sort((a, b) => string.CompareOrdinal(a.Name, b.Name));
        return statuses;
    }

    private Loop Get(string name) =>
        _loops.TryGetValue(name, out var loop)
            ? loop
            : throw new InvalidOperationException($"Background loop '{name}' is not registered; call Register first.");

    private sealed class Loop(TimeSpan maxSilence, DateTimeOffset registeredAt)
    {
        private readonly Lock _gate = new();
        private DateTimeOffset _lastBeat = registeredAt;
        private DateTimeOffset? _failedAt;
        private string? _failure;

        public void Beat(DateTimeOffset now)
        {
            lock (_gate)
            {
                _lastBeat = now;
                _failedAt = null;
                _failure = null;
            }
        }

        public void Fail(DateTimeOffset now, Exception exception)
        {
            lock (_gate)
            {
                _failedAt = now;
                _failure = $"{exception.GetType().Name}: {exception.Message}";
            }
        }

        public LoopStatus Status(string name, DateTimeOffset now)
        {
            lock (_gate)
            {
                var silence = now - _lastBeat;
                string? problem = null;
                if (_failure is not null)
                {
                    problem = $"last cycle failed at {_failedAt:O} ({_failure})";
                }
                else if (silence > maxSilence)
                {
                    problem = $"no cycle for {silence.TotalSeconds:0.#} s (allowed {maxSilence.TotalSeconds:0.#} s)";
                }

                return new LoopStatus(name, _lastBeat, maxSilence, problem);
            }
        }
    }
}

/// <summary>The health of one background loop.</summary>
/// <param name="Name">The loop's registered name.</param>
/// <param name="LastBeat">When it last completed a cycle (or registered).</param>
/// <param name="MaxSilence">The longest it may go without a cycle.</param>
/// <param name="Problem">Why it is unhealthy, or null when it is healthy.</param>
public sealed record LoopStatus(string Name, DateTimeOffset LastBeat, TimeSpan MaxSilence, string? Problem)
{
    /// <summary>True while the loop beats within its bound and its last cycle did not fail.</summary>
    public bool IsHealthy => Problem is null;
}
