using System.Security.Cryptography;
using System.Text;
using Microsoft.Extensions.Options;

namespace Marketplace.Grains;

/// <summary>Where the key that encrypts providers' upstream credentials comes from.</summary>
public sealed class SecretsOptions
{
    /// <summary>Configuration section these options bind to.</summary>
    public const string Section = "Secrets";

    /// <summary>
    /// Base64 of 32 random bytes (e.g. <c>openssl rand -base64 32</c>), the same on every silo and front door.
    /// Needed only when a service version has secret headers; without it such versions are refused.
    /// </summary>
    public string? Key { get; set; }
}

/// <summary>
/// Encrypts and decrypts secret header values of service versions (AES-GCM, the header name as associated data), so
/// grain storage and the wire between silos carry only ciphertext; the plain value exists only in the process that
/// sends it to the upstream.
/// </summary>
public sealed class UpstreamSecrets(IOptions<SecretsOptions> options)
{
    private const string Prefix = "enc1:";
    private const int NonceBytes = 12;
    private const int TagBytes = 16;

    private readonly byte[]? _key = ParseKey(options.Value.Key);

    /// <summary>True when a key is configured.</summary>
    public bool Enabled => _key is not null;

    /// <summary>The ciphertext of a header value.</summary>
    public string Encrypt(string headerName, string value)
    {
        var key = _key ?? throw new ArgumentException("Secret headers need Secrets:Key (base64 of 32 bytes) configured on every silo.");
        var plain = Encoding.UTF8.GetBytes(value);
        var output = new byte[NonceBytes + plain.Length + TagBytes];
        var nonce = output.AsSpan(0, NonceBytes);
        RandomNumberGenerator.Fill(nonce);
        using var aes = new AesGcm(key, TagBytes);
        aes.Encrypt(nonce, plain, output.AsSpan(NonceBytes, plain.Length), output.AsSpan(NonceBytes + plain.Length), Associated(headerName));
        return Prefix + Convert.ToBase64String(output);
    }

    /// <summary>The plain header value, or null when it cannot be decrypted here (no key, another key, tampered).</summary>
    public string? Decrypt(string headerName, string stored)
    {
        if (_key is null || !stored.StartsWith(Prefix, StringComparison.Ordinal))
        {
            return null;
        }

        try
        {
            var data = Convert.FromBase64String(stored[Prefix.Length..]);
            if (data.Length < NonceBytes + TagBytes)
            {
                return null;
            }

            var length = data.Length - NonceBytes - TagBytes;
            var plain = new byte[length];
            using var aes = new AesGcm(_key, TagBytes);
            aes.Decrypt(data.AsSpan(0, NonceBytes), data.AsSpan(NonceBytes, length), data.AsSpan(NonceBytes + length), plain, Associated(headerName));
            return Encoding.UTF8.GetString(plain);
        }
        catch (Exception exception) when (exception is FormatException or CryptographicException)
        {
            return null;
        }
    }

    private static byte[] Associated(string headerName) => Encoding.UTF8.GetBytes(headerName.ToLowerInvariant());

    private static byte[]? ParseKey(string? key)
    {
        if (string.IsNullOrWhiteSpace(key))
        {
            return null;
        }

        var bytes = Convert.TryFromBase64String(key.Trim(), new byte[64], out var written) ? written : -1;
        if (bytes != 32)
        {
            throw new OptionsValidationException(SecretsOptions.Section, typeof(SecretsOptions), ["Secrets:Key must be base64 of exactly 32 bytes."]);
        }

        return Convert.FromBase64String(key.Trim());
    }
}
