using System.Security.Cryptography;
using Microsoft.Extensions.Options;

namespace Marketplace.Grains.Tests.DataServices;

public sealed class UpstreamSecretsTests
{
    private static UpstreamSecrets Secrets(string? key) => new(Options.Create(new SecretsOptions { Key = key }));

    private static string NewKey() => Convert.ToBase64String(RandomNumberGenerator.GetBytes(32));

    [Fact]
    public void EncryptDecrypt_SameKeyAndHeader_RoundTrips()
    {
        var secrets = Secrets(NewKey());

        var first = secrets.Encrypt("Authorization", "Bearer s3cret-ü");
        var second = secrets.Encrypt("Authorization", "Bearer s3cret-ü");

        Assert.True(secrets.Enabled);
        Assert.StartsWith("enc1:", first, StringComparison.Ordinal);
        Assert.DoesNotContain("s3cret", first, StringComparison.Ordinal);
        Assert.NotEqual(first, second);
        Assert.Equal("Bearer s3cret-ü", secrets.Decrypt("Authorization", first));
        Assert.Equal("Bearer s3cret-ü", secrets.Decrypt("authorization", second));
    }

    [Fact]
    public void Decrypt_AnotherKey_Null()
    {
        var stored = Secrets(NewKey()).Encrypt("Authorization", "Bearer s3cret");

        Assert.Null(Secrets(NewKey()).Decrypt("Authorization", stored));
        Assert.Null(Secrets(null).Decrypt("Authorization", stored));
    }

    [Fact]
    public void Decrypt_TamperedValue_Null()
    {
        var secrets = Secrets(NewKey());
        var stored = secrets.Encrypt("Authorization", "Bearer s3cret");
        var data = Convert.FromBase64String(stored["enc1:".Length..]);

        for (var i = 0; i < data.Length; i++)
        {
            var tampered = (byte[])data.Clone();
            tampered[i] ^= 0x01;
            Assert.Null(secrets.Decrypt("Authorization", "enc1:" + Convert.ToBase64String(tampered)));
        }

        Assert.Null(secrets.Decrypt("Authorization", "enc1:" + Convert.ToBase64String(data[..^1])));
        Assert.Null(secrets.Decrypt("Authorization", "enc1:not base64!"));
        Assert.Null(secrets.Decrypt("Authorization", "Bearer s3cret"));
        Assert.Equal("Bearer s3cret", secrets.Decrypt("Authorization", stored));
    }

    [Fact]
    public void Decrypt_UnderAnotherHeaderName_Null()
    {
        var secrets = Secrets(NewKey());
        var stored = secrets.Encrypt("X-Api-Key", "k-123");

        Assert.Null(secrets.Decrypt("Authorization", stored));
        Assert.Equal("k-123", secrets.Decrypt("X-Api-Key", stored));
    }

    [Fact]
    public void Encrypt_NoKeyConfigured_ThrowsArgumentException()
    {
        var secrets = Secrets(null);

        Assert.False(secrets.Enabled);
        Assert.Throws<ArgumentException>(() => secrets.Encrypt("Authorization", "Bearer s3cret"));
    }

    [Theory]
    [InlineData("c2hvcnQ=")]
    [InlineData("not base64 at all")]
    public void Constructor_KeyNotThirtyTwoBytes_ThrowsOptionsValidation(string key) =>
        Assert.Throws<OptionsValidationException>(() => Secrets(key));
}
