using System.Collections.Concurrent;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;

namespace Marketplace.Grains;

/// <summary>A service's route with its versions compiled into adapters, as the call path uses it.</summary>
public sealed class CompiledRoute(ServiceRoute route, IReadOnlyDictionary<string, UpstreamAdapter> adapters)
{
    /// <summary>The route as the service grain gave it.</summary>
    public ServiceRoute Route { get; } = route;

    /// <summary>Adapters by version id.</summary>
    public IReadOnlyDictionary<string, UpstreamAdapter> Adapters { get; } = adapters;

    /// <summary>The release weights in the order the gray release walks them.</summary>
    public KeyValuePair<string, int>[] OrderedWeights { get; } = GrayRelease.Order(route.Weights);

    /// <summary>
    /// The longest a call to this service may take, over its versions: each attempt's timeout times the attempts its
    /// protection allows (retries only for idempotent versions), with room for the retries' back-off and for admission
    /// and settlement around them. An Idempotency-Key stays claimed this long for a call still running.
    /// </summary>
    public TimeSpan LongestCall { get; } = Longest(route);

    private static readonly TimeSpan RetryBackoffAllowance = TimeSpan.FromSeconds(2);
    private static readonly TimeSpan AroundTheUpstream = TimeSpan.FromSeconds(30);

    private static TimeSpan Longest(ServiceRoute route)
    {
        var longest = TimeSpan.Zero;
        foreach (var version in route.Versions)
        {
            var protection = version.Spec.Protection ?? ProtectionSpec.Default;
            var retries = protection.Idempotent ? Math.Max(0, protection.Retries) : 0;
            var call = (TimeSpan.FromMilliseconds(version.Spec.TimeoutMs) * (retries + 1)) + (RetryBackoffAllowance * retries);
            longest = call > longest ? call : longest;
        }

        return longest + AroundTheUpstream;
    }
}

/// <summary>
/// Routing data of data services, cached per process so a call does not wait on the service grain, and so a service
/// keeps serving while the silo holding its grain hangs or dies.
/// <list type="bullet">
/// <item>Younger than half of <see cref="RoutingOptions.MaxAge"/>: used as it is.</item>
/// <item>Older: one refetch per service starts in the background, shared by every caller; calls go on with the route
/// they have until it is <see cref="RoutingOptions.MaxAge"/> old.</item>
/// <item>Older than <see cref="RoutingOptions.MaxAge"/> (a service nobody called for a while): a call waits up to
/// <see cref="RoutingOptions.RefetchPatience"/> for that refetch, so a change made on any node is in force within
/// <see cref="RoutingOptions.MaxAge"/> while the grain answers; when the grain does not answer in time, or its last
/// refetch failed, the call goes on with the last known route, up to <see cref="RoutingOptions.MaxStaleness"/>.</item>
/// <item>An unreachable grain is asked again at most once per <see cref="RoutingOptions.MaxAge"/>, never once per call.</item>
/// </list>
/// Versions are compiled into adapters only when their revision changes.
/// </summary>
public sealed partial class ServiceRouteCache(
    IRouteSource source, TimeProvider time, UpstreamSecrets secrets, IOptions<RoutingOptions> options, ILogger<ServiceRouteCache> logger)
{
    private const int MaxEntries = 20_000;

    private readonly ConcurrentDictionary<string, Entry> _entries = new(StringComparer.Ordinal);
    private readonly RoutingOptions _options = options.Value;

    /// <summary>How long a cached route is used before it must be fetched again.</summary>
    public TimeSpan MaxAge => _options.MaxAge;

    /// <summary>
    /// The route of a service, or null when no such service exists. Throws <see cref="ClusterUnavailableException"/>
    /// when there is no route younger than <see cref="RoutingOptions.MaxStaleness"/> and the grain cannot be reached.
    /// </summary>
    public ValueTask<CompiledRoute?> GetAsync(string serviceId)
    {
        var now = time.GetUtcNow();
        if (_entries.TryGetValue(serviceId, out var entry) && entry.Known is { } known)
        {
            var age = now - known.FetchedAt;
            if (age < _options.MaxAge / 2)
            {
                return ValueTask.FromResult(known.Compiled);
            }

            var refetch = Refetch(serviceId, entry, now);
            if (age < _options.MaxAge)
            {
                return ValueTask.FromResult(known.Compiled);
            }

            return WaitOrStaleAsync(serviceId, entry, known, refetch, now);
        }

        if (entry is null)
        {
            if (_entries.Count >= MaxEntries)
            {
                // Unknown ids are cached too; a flood of them must not grow memory without bound.
                _entries.Clear();
            }

            entry = _entries.GetOrAdd(serviceId, static _ => new Entry());
        }

        // Nothing known yet: every caller waits for the same first fetch (bounded by the grain call timeout); after a
        // failed one, calls are refused until the next attempt is due.
        return Refetch(serviceId, entry, now) is { } first
            ? new ValueTask<CompiledRoute?>(first)
            : ValueTask.FromException<CompiledRoute?>(new ClusterUnavailableException(
                "The data service's route cannot be fetched: the marketplace node holding it does not answer."));
    }

    /// <summary>Forgets a service's route so the next call fetches it.</summary>
    public void Invalidate(string serviceId) => _entries.TryRemove(serviceId, out _);

    private async ValueTask<CompiledRoute?> WaitOrStaleAsync(string serviceId, Entry entry, Known known, Task<CompiledRoute?>? refetch, DateTimeOffset now)
    {
        if (refetch is not null && !entry.Unreachable(now, _options.RefetchPatience))
        {
            try
            {
                return await refetch.WaitAsync(_options.RefetchPatience, time);
            }
            catch (Exception exception) when (exception is TimeoutException || HotPathCalls.IsClusterFault(exception))
            {
                // The grain is slow or gone: go on with the route this node has, within the staleness bound.
            }
        }

        if (now - known.FetchedAt < _options.MaxStaleness)
        {
            return known.Compiled;
        }

        LogTooStale(logger, serviceId, (now - known.FetchedAt).TotalSeconds);
        throw new ClusterUnavailableException(
            $"The data service's route could not be refreshed for {_options.MaxStaleness.TotalSeconds:0} s: the marketplace node holding it does not answer.");
    }

    // The shared refetch of a service: the one in flight, or a new one. Null while the last one failed less than MaxAge
    // ago (an unreachable grain is not asked once per call), unless nothing else is known.
    private Task<CompiledRoute?>? Refetch(string serviceId, Entry entry, DateTimeOffset now)
    {
        lock (entry.Gate)
        {
            if (entry.InFlight is { } inFlight)
            {
                return inFlight;
            }

            if (entry.FailedAt is { } failedAt && now - failedAt < _options.MaxAge)
            {
                return null;
            }

            entry.RefetchStartedAt = now;
            var fetch = FetchAsync(serviceId, entry);
            entry.InFlight = fetch.IsCompleted ? null : fetch;

            // A background refetch nobody waits for must not leave an unobserved exception behind.
            _ = fetch.ContinueWith(static done => _ = done.Exception, CancellationToken.None,
                TaskContinuationOptions.OnlyOnFaulted | TaskContinuationOptions.ExecuteSynchronously, TaskScheduler.Default);
            return fetch;
        }
    }

    private async Task<CompiledRoute?> FetchAsync(string serviceId, Entry entry)
    {
        try
        {
            var route = await source.GetRouteAsync(serviceId);
            var compiled = route is null ? null : Compile(route, entry.Known?.Compiled);
            lock (entry.Gate)
            {
                if (entry.FailedAt is not null)
                {
                    LogReachableAgain(logger, serviceId);
                }

                entry.Known = new Known(compiled, time.GetUtcNow());
                entry.FailedAt = null;
                entry.InFlight = null;
            }

            return compiled;
        }
        catch (Exception exception)
        {
            lock (entry.Gate)
            {
                if (entry.FailedAt is null)
                {
                    LogUnreachable(logger, exception, serviceId, entry.Known is null ? "none" : $"{(time.GetUtcNow() - entry.Known.FetchedAt).TotalSeconds:0.0} s old");
                }

                entry.FailedAt = time.GetUtcNow();
                entry.InFlight = null;
            }

            throw;
        }
    }

    private CompiledRoute Compile(ServiceRoute route, CompiledRoute? previous)
    {
        if (previous is not null && previous.Route.Revision == route.Revision)
        {
            return previous;
        }

        var adapters = new Dictionary<string, UpstreamAdapter>(StringComparer.Ordinal);
        foreach (var version in route.Versions)
        {
            adapters[version.Id] = previous?.Adapters.GetValueOrDefault(version.Id) is { } same && same.Revision == version.Revision
                ? same
                : new UpstreamAdapter(route.ServiceId, version, secrets);
        }

        return new CompiledRoute(route, adapters);
    }

    [LoggerMessage(Level = LogLevel.Warning, Message = "Route of {ServiceId} cannot be refreshed (last known route: {Known}); calls go on with the last known route")]
    private static partial void LogUnreachable(ILogger logger, Exception exception, string serviceId, string known);

    [LoggerMessage(Level = LogLevel.Information, Message = "Route of {ServiceId} refreshed again")]
    private static partial void LogReachableAgain(ILogger logger, string serviceId);

    [LoggerMessage(Level = LogLevel.Error, Message = "Route of {ServiceId} is {AgeSeconds:0} s old and cannot be refreshed; its calls are refused")]
    private static partial void LogTooStale(ILogger logger, string serviceId, double ageSeconds);

    // A route as fetched, and when.
    private sealed record Known(CompiledRoute? Compiled, DateTimeOffset FetchedAt);

    private sealed class Entry
    {
        private Known? _known;

        public Lock Gate { get; } = new();

        public Known? Known
        {
            get => Volatile.Read(ref _known);
            set => Volatile.Write(ref _known, value);
        }

        // Guarded by the entry's lock.
        public Task<CompiledRoute?>? InFlight { get; set; }

        public DateTimeOffset RefetchStartedAt { get; set; }

        public DateTimeOffset? FailedAt { get; set; }

        // The grain is taken for unreachable once its last refetch failed, or the one in flight has taken longer than a
        // call is willing to wait: calls then go on with the last known route without waiting at all.
        public bool Unreachable(DateTimeOffset now, TimeSpan patience)
        {
            lock (Gate)
            {
                return FailedAt is not null || (InFlight is not null && now - RefetchStartedAt >= patience);
            }
        }
    }
}
