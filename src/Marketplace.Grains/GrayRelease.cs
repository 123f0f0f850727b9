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
    public static string? Choose(ServiceRoute route, string keyId, string? accountId) =>
        Choose(route, Order(route.Weights), keyId, accountId);

    /// <summary>The weights in the order the choice walks them (by version id); compute once per route.</summary>
    public static KeyValuePair<string, int>[] Order(IReadOnlyDictionary<string, int> weights)
    {
        var ordered = weights.ToArray();
        Array.Sort(ordered, (a, b) => string.CompareOrdinal(a.Key, b.Key));
        return ordered;
    }

    /// <summary><see cref="Choose(ServiceRoute, string, string?)"/> with the weights already ordered by <see cref="Order"/>.</summary>
    public static string? Choose(ServiceRoute route, KeyValuePair<string, int>[] orderedWeights, string keyId, string? accountId)
    {
        if (route.Pins.Count > 0)
        {
            if (route.Pins.TryGetValue(keyId, out var pinned) || (accountId is not null && route.Pins.TryGetValue(accountId, out pinned)))
            {
                return pinned;
            }
        }

        if (orderedWeights.Length == 0)
        {
            return route.Versions.Count == 1 ? route.Versions[0].Id : null;
        }

        var bucket = (int)(StableHash(keyId, route.ServiceId) % Buckets);
        var cumulative = 0;
        string? last = null;
        foreach (var (version, weight) in orderedWeights)
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

    // FNV-1a over the UTF-8 of "keyId\nserviceId": the same on every silo and across restarts (string.GetHashCode is
    // randomized per process).
    private static ulong StableHash(string keyId, string serviceId)
    {
        var hash = 14695981039346656037UL;
        hash = Fnv(hash, keyId);
        hash = (hash ^ (byte)'\n') * 1099511628211UL;
        hash = Fnv(hash, serviceId);

        // Mix the high bits down: FNV's low bits alone spread short, similar keys poorly.
        hash ^= hash >> 33;
        hash *= 0xff51afd7ed558ccdUL;
        hash ^= hash >> 33;
        return hash;
    }

    private static ulong Fnv(ulong hash, string text)
    {
        Span<byte> buffer = stackalloc byte[256];
        var bytes = text.Length * 3 <= buffer.Length ? buffer[..Encoding.UTF8.GetBytes(text, buffer)] : Encoding.UTF8.GetBytes(text);
        foreach (var b in bytes)
        {
            hash ^= b;
            hash *= 1099511628211UL;
        }

        return hash;
    }
}
