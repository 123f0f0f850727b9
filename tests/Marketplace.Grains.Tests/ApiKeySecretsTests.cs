namespace Marketplace.Grains.Tests;

public sealed class ApiKeySecretsTests
{
    private const string ValidSecret = "abcdefghijklmnopqrstuvwxyzABCDEF0123456789_-x";

    [Fact]
    public void TryParse_FormattedNewKey_RoundTrips()
    {
        for (var i = 0; i < 50; i++)
        {
            var keyId = ApiKeySecrets.NewKeyId();
            var secret = ApiKeySecrets.NewSecret();

            Assert.True(ApiKeySecrets.TryParse(ApiKeySecrets.Format(keyId, secret), out var parsedId, out var parsedSecret));
            Assert.Equal(keyId, parsedId);
            Assert.Equal(secret, parsedSecret);
        }
    }

    [Theory]
    [InlineData(null)]
    [InlineData("")]
    [InlineData("abcd1234." + ValidSecret)]
    [InlineData("MK_abcd1234." + ValidSecret)]
    [InlineData("mk_abcd1234")]
    [InlineData("mk_abcd1234" + ValidSecret)]
    [InlineData("mk_." + ValidSecret)]
    [InlineData("mk_abc." + ValidSecret)]
    [InlineData("mk_ABCD1234." + ValidSecret)]
    [InlineData("mk_abcd-1234." + ValidSecret)]
    [InlineData("mk_abcdefghijklmnopqrstuvwxyz0123456." + ValidSecret)]
    [InlineData("mk_abcd1234.")]
    [InlineData("mk_abcd1234.tooshort")]
    [InlineData("mk_abcd1234.abcdefghij klmnopqrstuv")]
    [InlineData("mk_abcd1234.abcdefghij+klmnopqrstuv")]
    [InlineData("mk_abcd1234." + ValidSecret + ".extra")]
    [InlineData("mk_abcd1234." + ValidSecret + "\n")]
    [InlineData("mk_abcd1234\n." + ValidSecret)]
    public void TryParse_MalformedKey_ReturnsFalse(string? presented)
    {
        Assert.False(ApiKeySecrets.TryParse(presented, out var keyId, out var secret));
        Assert.Equal(string.Empty, keyId);
        Assert.Equal(string.Empty, secret);
    }

    [Fact]
    public void TryParse_TooLong_ReturnsFalse()
    {
        Assert.True(ApiKeySecrets.TryParse("mk_abcd1234." + new string('a', 128), out _, out _));
        Assert.False(ApiKeySecrets.TryParse("mk_abcd1234." + new string('a', 129), out _, out _));
        Assert.False(ApiKeySecrets.TryParse("mk_abcd1234." + new string('a', 300), out _, out _));
    }

    [Fact]
    public void NewKeyIdAndSecret_AreValidAndUnique()
    {
        var ids = Enumerable.Range(0, 200).Select(_ => ApiKeySecrets.NewKeyId()).ToList();
        var secrets = Enumerable.Range(0, 200).Select(_ => ApiKeySecrets.NewSecret()).ToList();

        Assert.All(ids, id => Assert.True(ApiKeySecrets.IsValidKeyId(id) && id.Length == 16, id));
        Assert.All(secrets, s => Assert.True(ApiKeySecrets.IsValidSecret(s) && s.Length == 43, s));
        Assert.Equal(ids.Count, ids.Distinct().Count());
        Assert.Equal(secrets.Count, secrets.Distinct().Count());
    }

    [Fact]
    public void Verify_OnlyRightSecret_IsTrue()
    {
        var salt = ApiKeySecrets.NewSalt();
        var secret = ApiKeySecrets.NewSecret();
        var hash = ApiKeySecrets.Hash(salt, secret);

        Assert.True(ApiKeySecrets.Verify(salt, hash, secret));
        Assert.False(ApiKeySecrets.Verify(salt, hash, ApiKeySecrets.NewSecret()));
        Assert.False(ApiKeySecrets.Verify(salt, hash, secret[..^1]));
        Assert.False(ApiKeySecrets.Verify(salt, hash, secret + "x"));
        Assert.False(ApiKeySecrets.Verify(salt, hash, string.Empty));
        Assert.False(ApiKeySecrets.Verify(ApiKeySecrets.NewSalt(), hash, secret));
    }

    [Fact]
    public void Hash_SameSecretDifferentSalts_Differ()
    {
        var secret = ApiKeySecrets.NewSecret();
        var salt1 = ApiKeySecrets.NewSalt();
        var salt2 = ApiKeySecrets.NewSalt();

        Assert.NotEqual(salt1, salt2);
        Assert.NotEqual(ApiKeySecrets.Hash(salt1, secret), ApiKeySecrets.Hash(salt2, secret));
        Assert.Equal(ApiKeySecrets.Hash(salt1, secret), ApiKeySecrets.Hash(salt1, secret));
        Assert.Equal(32, ApiKeySecrets.Hash(salt1, secret).Length);
    }
}
