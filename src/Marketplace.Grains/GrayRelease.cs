using System.Text;

namespace Marketplace.Grains;

/// <summary>
/// Chooses the version that serves a call: a version pinned to the key, else one pinned to the account, else the
/// weighted choice. The weighted choice hashes key and service into one of 10,000 buckets, so a key stays on the
/// same version for as long as the weights stay the same, and the share of keys per version follows the weights.
/// </summary>
public static class GrayRelease
{
    private const int Buckets = 10_000;

    /// <summary>The version id for a key (and, once known, its account); null when the service has no version to serve.</summary>
    public static string? Choose(ServiceRoute route, string keyId, string? accountId)
    {
        if (route.Pins.Count > 0)
        {
            if (route.Pins.TryGetValue(keyId, out var pinned) || (accountId is not null && route.Pins.TryGetValue(accountId, out pinned)))
            {
                return pinned;
            }
        }

        if (route.Weights.Count == 0)
        {
            return route.Versions.Count == 1 ? route.Versions[0].Id : null;
        }

        var bucket = (int)(StableHash(keyId, route.ServiceId) % Buckets);
        var cumulative = 0;
        string? last = null;
        foreach (var (version, weight) in route.Weights.OrderBy(w => w.Key, StringComparer.Ordinal))
        {
            if (weight <= 0)
            {
                continue;
            }

            cumulative += weight * (Buckets / 100);
            last = version;
            if (bucket < cumulative)
            {
                return version;
            }
        }

        return last;
    }

    /// <summary>True when some pin names an account, so the choice must wait until the key's account is known.</summary>
    public static bool NeedsAccount(ServiceRoute route, string keyId) => route.Pins.Count > 0 && !route.Pins.ContainsKey(keyId);

    // FNV-1a over UTF-8: the same on every silo and across restarts (string.GetHashCode is randomized per process).
    private static ulong StableHash(string keyId, string serviceId)
    {
        var hash = 14695981039346656037UL;
        foreach (var b in Encoding.UTF8.GetBytes(keyId + "\n" + serviceId))
        {
            hash ^= b;
            hash *= 1099511628211UL;
        }

        // Mix the high bits down: FNV's low bits alone spread short, similar keys poorly.
        hash ^= hash >> 33;
        hash *= 0xff51afd7ed558ccdUL;
        hash ^= hash >> 33;
        return hash;
    }
}
