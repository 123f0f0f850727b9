using System.Collections.Concurrent;

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
}

/// <summary>
/// Routing data of data services, cached per process so a call does not wait on the service grain. An entry older
/// than half of <see cref="MaxAge"/> is refreshed in the background while calls keep using it; one older than
/// <see cref="MaxAge"/> (a service nobody called for a while) is fetched before the call goes on. So a change made on
/// any silo is in force everywhere within <see cref="MaxAge"/>, and a busy service never waits on its grain.
/// Versions are compiled into adapters only when their revision changes.
/// </summary>
public sealed class ServiceRouteCache(IGrainFactory grains, TimeProvider time, UpstreamSecrets secrets)
{
    private const int MaxEntries = 20_000;

    private readonly ConcurrentDictionary<string, Entry> _entries = new(StringComparer.Ordinal);

    /// <summary>How long a cached route is used before it must be fetched again.</summary>
    public TimeSpan MaxAge { get; init; } = TimeSpan.FromSeconds(1);

    /// <summary>The route of a service, or null when no such service exists.</summary>
    public ValueTask<CompiledRoute?> GetAsync(string serviceId)
    {
        if (_entries.TryGetValue(serviceId, out var entry))
        {
            var age = time.GetUtcNow() - entry.FetchedAt;
            if (age < MaxAge)
            {
                if (age >= MaxAge / 2 && Interlocked.CompareExchange(ref entry.Refreshing, 1, 0) == 0)
                {
                    _ = RefreshInBackgroundAsync(serviceId);
                }

                return ValueTask.FromResult(entry.Compiled);
            }
        }

        return FetchAsync(serviceId);
    }

    /// <summary>Forgets a service's route so the next call fetches it.</summary>
    public void Invalidate(string serviceId) => _entries.TryRemove(serviceId, out _);

    private async Task RefreshInBackgroundAsync(string serviceId)
    {
        try
        {
            await FetchAsync(serviceId);
        }
        catch (Exception)
        {
            // The entry stays as it was; once it is too old the next call fetches it and sees the error.
            if (_entries.TryGetValue(serviceId, out var entry))
            {
                Interlocked.Exchange(ref entry.Refreshing, 0);
            }
        }
    }

    private async ValueTask<CompiledRoute?> FetchAsync(string serviceId)
    {
        var route = await grains.GetGrain<IDataServiceGrain>(serviceId).GetRouteAsync();
        if (_entries.Count >= MaxEntries)
        {
            // Unknown ids are cached too; a flood of them must not grow memory without bound.
            _entries.Clear();
        }

        var previous = _entries.TryGetValue(serviceId, out var old) ? old.Compiled : null;
        var compiled = route is null ? null : Compile(route, previous);
        _entries[serviceId] = new Entry(compiled, time.GetUtcNow());
        return compiled;
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

    private sealed class Entry(CompiledRoute? compiled, DateTimeOffset fetchedAt)
    {
        public CompiledRoute? Compiled { get; } = compiled;

        public DateTimeOffset FetchedAt { get; } = fetchedAt;

        public int Refreshing;
    }
}
