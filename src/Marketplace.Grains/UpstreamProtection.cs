using System.Collections.Concurrent;
using System.Threading.RateLimiting;
using Polly;
using Polly.CircuitBreaker;
using Polly.Retry;
using Polly.Timeout;

namespace Marketplace.Grains;

/// <summary>
/// Per-silo protection of each service version: a concurrency limit (calls beyond it are shed before admission),
/// and a Polly pipeline of retry (idempotent upstreams only), circuit breaker and timeout around the upstream call.
/// A guard lives as long as its version's revision, so weight changes and rollbacks keep the breaker's state.
/// </summary>
public sealed class UpstreamProtection(TimeProvider time)
{
    private readonly ConcurrentDictionary<string, VersionGuard> _guards = new(StringComparer.Ordinal);

    /// <summary>The guard of a version, created or renewed when the version changed.</summary>
    public VersionGuard For(UpstreamAdapter adapter)
    {
        // An adapter lives exactly as long as its version revision, so it can hold on to its guard.
        if (adapter.Guard is { Retired: false } cached)
        {
            return cached;
        }

        var key = adapter.ServiceId + "/" + adapter.Id;
        if (_guards.TryGetValue(key, out var guard) && guard.Revision == adapter.Revision)
        {
            adapter.Guard = guard;
            return guard;
        }

        var fresh = new VersionGuard(adapter, time);
        var stored = _guards.AddOrUpdate(key, fresh, (_, existing) => existing.Revision == adapter.Revision ? existing : fresh);
        if (!ReferenceEquals(stored, fresh))
        {
            fresh.Dispose();
        }
        else if (guard is not null)
        {
            guard.Retire();
        }

        adapter.Guard = stored;
        return stored;
    }

    /// <summary>Breaker states of every guarded version on this silo, for health and metrics.</summary>
    public IReadOnlyDictionary<string, CircuitState> BreakerStates() =>
        _guards.ToDictionary(g => g.Key, g => g.Value.Breaker, StringComparer.Ordinal);
}

/// <summary>The protection of one version revision on this silo.</summary>
public sealed class VersionGuard : IDisposable
{
    private readonly ConcurrencyLimiter _limiter;
    private readonly CircuitBreakerStateProvider _breaker = new();
    private readonly TimeProvider _time;
    private long _openUntilTicks;

    internal VersionGuard(UpstreamAdapter adapter, TimeProvider time)
    {
        _time = time;
        Revision = adapter.Revision;
        var protection = adapter.Protection;
        _limiter = new ConcurrencyLimiter(new ConcurrencyLimiterOptions { PermitLimit = protection.MaxConcurrency, QueueLimit = 0 });

        var failures = new PredicateBuilder<UpstreamAnswer>()
            .Handle<HttpRequestException>()
            .Handle<TimeoutRejectedException>()
            .Handle<InvalidDataException>()
            .Handle<IOException>()
            .HandleResult(answer => answer.Status >= 500);
        var builder = new ResiliencePipelineBuilder<UpstreamAnswer> { TimeProvider = time };
        if (protection.Idempotent && protection.Retries > 0)
        {
            builder.AddRetry(new RetryStrategyOptions<UpstreamAnswer>
            {
                ShouldHandle = failures,
                MaxRetryAttempts = protection.Retries,
                Delay = TimeSpan.FromMilliseconds(50),
                BackoffType = DelayBackoffType.Exponential,
                UseJitter = true,
            });
        }

        var breakFor = TimeSpan.FromSeconds(protection.BreakSeconds);
        builder.AddCircuitBreaker(new CircuitBreakerStrategyOptions<UpstreamAnswer>
        {
            ShouldHandle = failures,
            FailureRatio = protection.FailureRatio,
            MinimumThroughput = protection.MinimumThroughput,
            SamplingDuration = TimeSpan.FromSeconds(protection.SamplingSeconds),
            BreakDuration = breakFor,
            StateProvider = _breaker,
            OnOpened = _ =>
            {
                Interlocked.Exchange(ref _openUntilTicks, (_time.GetUtcNow() + breakFor).UtcTicks);
                return default;
            },
        });
        builder.AddTimeout(TimeSpan.FromMilliseconds(adapter.Spec.TimeoutMs));
        Pipeline = builder.Build();
    }

    /// <summary>The version revision this guard protects.</summary>
    public int Revision { get; }

    /// <summary>Retry (idempotent only) → circuit breaker → timeout, around one upstream call.</summary>
    public ResiliencePipeline<UpstreamAnswer> Pipeline { get; }

    /// <summary>The breaker's state.</summary>
    public CircuitState Breaker => _breaker.CircuitState;

    /// <summary>True while the breaker refuses calls, with the seconds until it lets a probe through.</summary>
    public bool IsOpen(out int retryAfterSeconds)
    {
        retryAfterSeconds = 0;
        if (_breaker.CircuitState == CircuitState.HalfOpen)
        {
            // One probe is in flight; every other call is shed until it tells whether the upstream is back.
            retryAfterSeconds = 1;
            return true;
        }

        if (_breaker.CircuitState is not (CircuitState.Open or CircuitState.Isolated))
        {
            return false;
        }

        var remaining = new DateTimeOffset(Interlocked.Read(ref _openUntilTicks), TimeSpan.Zero) - _time.GetUtcNow();
        if (remaining <= TimeSpan.Zero && _breaker.CircuitState == CircuitState.Open)
        {
            // The break is over: the next call goes through the pipeline, which lets it probe (half-open).
            return false;
        }

        retryAfterSeconds = Math.Max(1, (int)Math.Ceiling(remaining.TotalSeconds));
        return true;
    }

    /// <summary>A concurrency permit, or null when the version's limit on this silo is reached.</summary>
    public RateLimitLease? TryEnter()
    {
        var lease = _limiter.AttemptAcquire();
        if (lease.IsAcquired)
        {
            return lease;
        }

        lease.Dispose();
        return null;
    }

    /// <summary>True once a newer revision of the version has its own guard.</summary>
    public bool Retired { get; private set; }

    // Calls still holding permits of this guard finish normally; new calls use the newer guard.
    internal void Retire() => Retired = true;

    /// <inheritdoc />
    public void Dispose() => _limiter.Dispose();
}
