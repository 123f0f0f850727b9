using Microsoft.Extensions.DependencyInjection;
using Orleans.TestingHost;

namespace Marketplace.Grains.Tests.Access;

/// <summary>Helpers shared by the access tests: limited keys, bursts of admissions, tokens and the manual clock.</summary>
internal static class AccessKit
{
    public const string Eur = ClusterFixture.Currency;

    /// <summary>Issues a key with limits and a fresh id; returns its id and secret.</summary>
    public static async Task<(string KeyId, string Secret)> CreateLimitedKeyAsync(
        this ClusterFixture fixture, string accountId, IReadOnlyList<string> services, KeyLimits? limits)
    {
        var keyId = TestIds.Key();
        var created = await fixture.Key(keyId).CreateAsync(new ApiKeySpec(accountId, "limited key", services, null, limits));
        Assert.True(ApiKeySecrets.TryParse(created.ApiKey, out var parsedId, out var secret));
        Assert.Equal(keyId, parsedId);
        return (keyId, secret);
    }

    /// <summary>Opens an account with a monthly call cap and tops it up.</summary>
    public static async Task<string> CreateCappedAccountAsync(this ClusterFixture fixture, long balance, long monthlyCallCap)
    {
        var accountId = TestIds.Account();
        var account = fixture.Account(accountId);
        await account.CreateAsync(new AccountSpec("Capped account", Eur, 0, monthlyCallCap));
        await account.TopUpAsync(balance, "test funding");
        return accountId;
    }

    public static IApiKeyGrain Key(this ClusterFixture fixture, string keyId) => fixture.Grains.GetGrain<IApiKeyGrain>(keyId);

    public static IAccountGrain Account(this ClusterFixture fixture, string accountId) => fixture.Grains.GetGrain<IAccountGrain>(accountId);

    public static AdmitRequest Request(string proof, string serviceId, int i = 0, long price = 1, CredentialKind kind = CredentialKind.KeySecret) =>
        new(proof, serviceId, price, Eur, $"track-{i:D6}", kind);

    /// <summary>One admission with the key's secret.</summary>
    public static async Task<AdmitResult> AdmitAsync(this ClusterFixture fixture, string keyId, string secret, string serviceId, long price = 1) =>
        await fixture.Key(keyId).AdmitAsync(Request(secret, serviceId, price: price));

    /// <summary><paramref name="count"/> admissions with the key's secret, all issued at once.</summary>
    public static Task<AdmitResult[]> AdmitManyAsync(
        this ClusterFixture fixture, string keyId, string secret, string serviceId, int count, long price = 1)
    {
        var key = fixture.Key(keyId);
        return Task.WhenAll(Enumerable.Range(0, count).Select(i => key.AdmitAsync(Request(secret, serviceId, i, price)).AsTask()));
    }

    /// <summary>Presents an access token the way the call pipeline does: parse it, then admit at the key it names.</summary>
    public static async Task<AdmitResult> AdmitWithTokenAsync(this ClusterFixture fixture, string accessToken, string serviceId)
    {
        Assert.True(ApiKeySecrets.TryParseCredential(accessToken, out var keyId, out var kind, out var proof));
        Assert.Equal(CredentialKind.AccessToken, kind);
        return await fixture.Key(keyId).AdmitAsync(Request(proof, serviceId, kind: kind));
    }

    /// <summary>The <c>tokenId.secret</c> part of a presented token.</summary>
    public static string Proof(string token, string prefix)
    {
        Assert.True(ApiKeySecrets.TryParseToken(token, prefix, out _, out var proof));
        return proof;
    }

    public static int CountOf(this IEnumerable<AdmitResult> results, AdmitOutcome outcome) => results.Count(r => r.Outcome == outcome);

    /// <summary>Moves the clock forward to exactly <paramref name="target"/>.</summary>
    public static void AdvanceTo(this ManualTimeProvider time, DateTimeOffset target)
    {
        var by = target - time.GetUtcNow();
        Assert.True(by >= TimeSpan.Zero, $"Cannot move the clock back to {target:O}.");
        time.Advance(by);
    }

    /// <summary>The next UTC midnight after now.</summary>
    public static DateTimeOffset NextUtcMidnight(this ManualTimeProvider time) =>
        new(time.GetUtcNow().UtcDateTime.Date.AddDays(1), TimeSpan.Zero);

    /// <summary>The first instant of the next UTC month.</summary>
    public static DateTimeOffset NextUtcMonth(this ManualTimeProvider time)
    {
        var now = time.GetUtcNow().UtcDateTime;
        return new DateTimeOffset(now.Year, now.Month, 1, 0, 0, 0, TimeSpan.Zero).AddMonths(1);
    }

    /// <summary>A grain factory that calls from inside <paramref name="silo"/>.</summary>
    public static IGrainFactory GrainsOn(this ClusterFixture fixture, SiloHandle silo) =>
        fixture.Cluster.GetSiloServiceProvider(silo.SiloAddress).GetRequiredService<IGrainFactory>();
}
