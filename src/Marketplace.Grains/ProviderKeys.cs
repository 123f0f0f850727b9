namespace Marketplace.Grains;

/// <summary>The shape of provider keys: <c>mp_&lt;providerId&gt;.&lt;secret&gt;</c>.</summary>
public static class ProviderKeys
{
    /// <summary>Prefix of every provider key.</summary>
    public const string Prefix = "mp_";

    /// <summary>The key as the provider presents it.</summary>
    public static string Format(string providerId, string secret) => $"{Prefix}{providerId}.{secret}";

    /// <summary>Splits a presented key into provider id and secret; false when it is not well formed.</summary>
    public static bool TryParse(string? presented, out string providerId, out string secret)
    {
        providerId = string.Empty;
        secret = string.Empty;
        if (presented is null || presented.Length > 200 || !presented.StartsWith(Prefix, StringComparison.Ordinal))
        {
            return false;
        }

        var dot = presented.IndexOf('.', Prefix.Length);
        if (dot < 0 || !Ids.IsValid(presented[Prefix.Length..dot]) || !ApiKeySecrets.IsValidSecret(presented[(dot + 1)..]))
        {
            return false;
        }

        providerId = presented[Prefix.Length..dot];
        secret = presented[(dot + 1)..];
        return true;
    }
}
