using System.Security.Cryptography;
using System.Text;
using System.Text.RegularExpressions;

namespace Marketplace.Grains;

/// <summary>
/// Format, generation and hashing of API keys. A presented key is <c>mk_&lt;keyId&gt;.&lt;secret&gt;</c>: the key id
/// names the grain, the secret proves possession and is stored only as a salted SHA-256 hash. Secrets are 256 random
/// bits, so a fast hash is enough; a slow password hash would only add latency to every call.
/// </summary>
public static partial class ApiKeySecrets
{
    private const string Prefix = "mk_";

    /// <summary>Prefix of access tokens: <c>mt_&lt;keyId&gt;.&lt;tokenId&gt;.&lt;secret&gt;</c>.</summary>
    public const string AccessTokenPrefix = "mt_";

    /// <summary>Prefix of refresh tokens: <c>mr_&lt;keyId&gt;.&lt;tokenId&gt;.&lt;secret&gt;</c>.</summary>
    public const string RefreshTokenPrefix = "mr_";

    /// <summary>
    /// Splits a presented credential (key or access token) into key id, kind and the part the key grain verifies
    /// (the secret, or <c>tokenId.secret</c>); false when it is not well formed.
    /// </summary>
    public static bool TryParseCredential(string? presented, out string keyId, out CredentialKind kind, out string proof)
    {
        kind = CredentialKind.KeySecret;
        if (TryParse(presented, out keyId, out proof))
        {
            return true;
        }

        kind = CredentialKind.AccessToken;
        return TryParseToken(presented, AccessTokenPrefix, out keyId, out proof);
    }

    /// <summary>Splits a token (<paramref name="prefix"/> + <c>keyId.tokenId.secret</c>) into key id and <c>tokenId.secret</c>.</summary>
    public static bool TryParseToken(string? presented, string prefix, out string keyId, out string proof)
    {
        keyId = string.Empty;
        proof = string.Empty;
        if (presented is null || presented.Length > 250 || !presented.StartsWith(prefix, StringComparison.Ordinal))
        {
            return false;
        }

        var parts = presented[prefix.Length..].Split('.');
        if (parts.Length != 3 || !KeyIdRegex().IsMatch(parts[0]) || !TokenIdRegex().IsMatch(parts[1]) || !SecretRegex().IsMatch(parts[2]))
        {
            return false;
        }

        keyId = parts[0];
        proof = parts[1] + "." + parts[2];
        return true;
    }

    /// <summary>Splits <c>tokenId.secret</c>.</summary>
    public static bool TrySplitProof(string proof, out string tokenId, out string secret)
    {
        var dot = proof.IndexOf('.');
        tokenId = dot < 0 ? string.Empty : proof[..dot];
        secret = dot < 0 ? string.Empty : proof[(dot + 1)..];
        return dot > 0 && TokenIdRegex().IsMatch(tokenId) && SecretRegex().IsMatch(secret);
    }

    /// <summary>A new random token or secret id (12 characters of [a-z0-9]).</summary>
    public static string NewTokenId() => RandomNumberGenerator.GetString("abcdefghijklmnopqrstuvwxyz0123456789", 12);

    /// <summary>A token as the caller presents it.</summary>
    public static string FormatToken(string prefix, string keyId, string tokenId, string secret) => $"{prefix}{keyId}.{tokenId}.{secret}";

    /// <summary>Splits a presented key into key id and secret; false when it is not well formed.</summary>
    public static bool TryParse(string? presented, out string keyId, out string secret)
    {
        keyId = string.Empty;
        secret = string.Empty;
        if (presented is null || presented.Length > 200 || !presented.StartsWith(Prefix, StringComparison.Ordinal))
        {
            return false;
        }

        var dot = presented.IndexOf('.', Prefix.Length);
        if (dot < 0)
        {
            return false;
        }

        var id = presented[Prefix.Length..dot];
        var sec = presented[(dot + 1)..];
        if (!KeyIdRegex().IsMatch(id) || !SecretRegex().IsMatch(sec))
        {
            return false;
        }

        keyId = id;
        secret = sec;
        return true;
    }

    /// <summary>True when <paramref name="keyId"/> could name a key.</summary>
    public static bool IsValidKeyId(string? keyId) => keyId is not null && KeyIdRegex().IsMatch(keyId);

    /// <summary>True when <paramref name="secret"/> has the shape of a secret.</summary>
    public static bool IsValidSecret(string? secret) => secret is not null && SecretRegex().IsMatch(secret);

    /// <summary>A new random key id (16 characters of [a-z0-9]).</summary>
    public static string NewKeyId()
    {
        const string alphabet = "abcdefghijklmnopqrstuvwxyz0123456789";
        return RandomNumberGenerator.GetString(alphabet, 16);
    }

    /// <summary>A new random secret (256 bits, base64url).</summary>
    public static string NewSecret() => Base64Url(RandomNumberGenerator.GetBytes(32));

    /// <summary>The key as the caller presents it.</summary>
    public static string Format(string keyId, string secret) => $"{Prefix}{keyId}.{secret}";

    /// <summary>A new random salt.</summary>
    public static byte[] NewSalt() => RandomNumberGenerator.GetBytes(16);

    /// <summary>SHA-256 of salt and secret.</summary>
    public static byte[] Hash(byte[] salt, string secret)
    {
        var secretBytes = Encoding.UTF8.GetBytes(secret);
        var buffer = new byte[salt.Length + secretBytes.Length];
        salt.CopyTo(buffer, 0);
        secretBytes.CopyTo(buffer, salt.Length);
        return SHA256.HashData(buffer);
    }

    /// <summary>The salt of a token's hash: token secrets are 256 random bits, so the token id is salt enough.</summary>
    public static byte[] TokenSalt(string tokenId) => Encoding.ASCII.GetBytes(tokenId);

    /// <summary>Constant-time check of a secret against a stored hash.</summary>
    public static bool Verify(byte[] salt, byte[] expectedHash, string secret) =>
        CryptographicOperations.FixedTimeEquals(Hash(salt, secret), expectedHash);

    private static string Base64Url(byte[] bytes) =>
        Convert.ToBase64String(bytes).TrimEnd('=').Replace('+', '-').Replace('/', '_');

    [GeneratedRegex("^[a-z0-9]{4,32}\\z", RegexOptions.CultureInvariant)]
    private static partial Regex KeyIdRegex();

    [GeneratedRegex("^[A-Za-z0-9_-]{16,128}\\z", RegexOptions.CultureInvariant)]
    private static partial Regex SecretRegex();

    [GeneratedRegex("^[a-z0-9]{12}\\z", RegexOptions.CultureInvariant)]
    private static partial Regex TokenIdRegex();
}
