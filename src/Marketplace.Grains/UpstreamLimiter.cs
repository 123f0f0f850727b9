using System.Collections.Concurrent;
using Microsoft.Extensions.DependencyInjection;

namespace Marketplace.Grains;

/// <summary>
/// The per-service rate limit that protects an upstream whoever calls it. Each silo enforces its share
/// (the service's rate and burst divided by the number of active silos) in memory, so the limit costs no
/// grain call; the cluster-wide total is therefore approximate by design, unlike key quotas, which are exact.
/// </summary>
public sealed class UpstreamLimiter(TimeProvider time, IServiceProvider services)
{
    private readonly ConcurrentDictionary<string, TokenBucket> _buckets = new(StringComparer.Ordinal);

    /// <summary>Takes a token for a call to the service; false (with the status for the headers) when there is none.</summary>
    public bool TryAcquire(ServiceRoute route, out LimitStatus? status)
    {
        status = null;
        if (route.UpstreamRateLimit is not { } limit)
        {
            return true;
        }

        var share = ActiveSilos();
        var local = new RateLimit(limit.PerSecond / share, Math.Max(1, limit.Burst / share));
        var now = time.GetUtcNow();
        var bucket = _buckets.GetOrAdd(route.ServiceId, _ => new TokenBucket(local, now));
        lock (bucket)
        {
            if (bucket.Limit != local)
            {
                bucket.Reconfigure(local);
            }

            if (bucket.Available(now) < 1)
            {
                status = bucket.Status("service-upstream", now);
                return false;
            }

            bucket.Take();
            return true;
        }
    }

    private int ActiveSilos()
    {
        var membership = services.GetService<IClusterMembershipService>();
        var active = membership?.CurrentSnapshot.Members.Count(m => m.Value.Status == SiloStatus.Active) ?? 1;
        return Math.Max(1, active);
    }
}
