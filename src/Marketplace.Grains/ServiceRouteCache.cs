using System.Collections.Concurrent;

namespace Marketplace.Grains;

/// <summary>
/// Routing data of data services, cached per process so a call does not wait on the service grain.
/// Entries are refreshed from the grain once they are older than <see cref="MaxAge"/>.
/// </summary>
public sealed class ServiceRouteCache(IGrainFactory grains, TimeProvider time)
{
    private const int MaxEntries = 20_000;

    private readonly ConcurrentDictionary<string, Entry> _entries = new(StringComparer.Ordinal);

    /// <summary>How long a cached route is used before it is fetched again.</summary>
    public TimeSpan MaxAge { get; init; } = TimeSpan.FromSeconds(1);

    /// <summary>The route of a service, or null when no such service exists.</summary>
    public ValueTask<ServiceRoute?> GetAsync(string serviceId)
    {
        if (_entries.TryGetValue(serviceId, out var entry) && time.GetUtcNow() - entry.FetchedAt < MaxAge)
        {
            return ValueTask.FromResult(entry.Route);
        }

        return FetchAsync(serviceId);
    }

    /// <summary>Forgets a service's route so the next call fetches it.</summary>
    public void Invalidate(string serviceId) => _entries.TryRemove(serviceId, out _);

    private async ValueTask<ServiceRoute?> FetchAsync(string serviceId)
    {
        var route = await grains.GetGrain<IDataServiceGrain>(serviceId).GetRouteAsync();
        if (_entries.Count >= MaxEntries)
        {
            // Unknown ids are cached too; a flood of them must not grow memory without bound.
            _entries.Clear();
        }

        _entries[serviceId] = new Entry(route, time.GetUtcNow());
        return route;
    }

    private sealed record Entry(ServiceRoute? Route, DateTimeOffset FetchedAt);
}
