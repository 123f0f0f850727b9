using System.Text.RegularExpressions;

namespace Marketplace.Grains.Tests.Access;

[Collection(ClusterCollection.Name)]
public sealed class AccessTokenTests(ClusterFixture fixture)
{
    private static readonly TokenOptions Defaults = new();

    private async Task<(string KeyId, string Secret, string ServiceId, string AccountId)> NewKeyAsync()
    {
        var accountId = await fixture.CreateAccountAsync(balance: 10_000);
        var serviceId = TestIds.Service();
        var (keyId, secret, _) = await fixture.CreateKeyAsync(accountId, [serviceId]);
        return (keyId, secret, serviceId, accountId);
    }

    private async Task<TokenPair> IssueAsync(string keyId, string secret)
    {
        var result = await fixture.Key(keyId).IssueTokenAsync(secret);
        Assert.Equal(AdmitOutcome.Admitted, result.Outcome);
        Assert.NotNull(result.Tokens);
        return result.Tokens;
    }

    private Task<TokenResult> RefreshAsync(string keyId, string refreshToken) =>
        fixture.Key(keyId).RefreshTokenAsync(AccessKit.Proof(refreshToken, ApiKeySecrets.RefreshTokenPrefix));

    [Fact]
    public async Task IssueToken_RightSecret_PairWhoseAccessTokenAdmitsCalls()
    {
        var (keyId, secret, serviceId, accountId) = await NewKeyAsync();
        var now = fixture.Time.GetUtcNow();

        var pair = await IssueAsync(keyId, secret);
        var admitted = await fixture.AdmitWithTokenAsync(pair.AccessToken, serviceId);

        Assert.Matches(new Regex($"^mt_{keyId}\\.[a-z0-9]{{12}}\\.[A-Za-z0-9_-]{{43}}$"), pair.AccessToken);
        Assert.Matches(new Regex($"^mr_{keyId}\\.[a-z0-9]{{12}}\\.[A-Za-z0-9_-]{{43}}$"), pair.RefreshToken);
        Assert.Equal(now + Defaults.AccessTokenLifetime, pair.AccessExpiresAt);
        Assert.Equal(now + Defaults.RefreshTokenLifetime, pair.RefreshExpiresAt);
        Assert.Equal(AdmitOutcome.Admitted, admitted.Outcome);
        Assert.Equal(accountId, admitted.AccountId);
        Assert.Equal(1, admitted.Reserved);
        Assert.DoesNotContain(pair.AccessToken.Split('.')[^1], System.Text.Json.JsonSerializer.Serialize(await fixture.Key(keyId).GetAsync()), StringComparison.Ordinal);
    }

    [Fact]
    public async Task IssueToken_WrongSecret_InvalidCredentialsAndNoTokens()
    {
        var (keyId, secret, _, _) = await NewKeyAsync();

        var wrong = await fixture.Key(keyId).IssueTokenAsync(ApiKeySecrets.NewSecret());
        var unknownKey = await fixture.Key(TestIds.Key()).IssueTokenAsync(secret);

        Assert.Equal(AdmitOutcome.InvalidCredentials, wrong.Outcome);
        Assert.Null(wrong.Tokens);
        Assert.Equal(AdmitOutcome.InvalidCredentials, unknownKey.Outcome);
        Assert.Null(unknownKey.Tokens);
    }

    [Fact]
    public async Task IssueToken_Twice_FirstTokenKeepsWorking()
    {
        var (keyId, secret, serviceId, _) = await NewKeyAsync();

        var first = await IssueAsync(keyId, secret);
        var second = await IssueAsync(keyId, secret);

        Assert.NotEqual(first.AccessToken, second.AccessToken);
        Assert.Equal(AdmitOutcome.Admitted, (await fixture.AdmitWithTokenAsync(first.AccessToken, serviceId)).Outcome);
        Assert.Equal(AdmitOutcome.Admitted, (await fixture.AdmitWithTokenAsync(second.AccessToken, serviceId)).Outcome);
    }

    [Fact]
    public async Task Admit_AccessTokenPastItsLifetime_TokenInvalidWhileRefreshTokenStillRefreshes()
    {
        var (keyId, secret, serviceId, _) = await NewKeyAsync();
        var pair = await IssueAsync(keyId, secret);

        fixture.Time.Advance(Defaults.AccessTokenLifetime - TimeSpan.FromSeconds(1));
        var beforeExpiry = await fixture.AdmitWithTokenAsync(pair.AccessToken, serviceId);
        fixture.Time.Advance(TimeSpan.FromMinutes(1));
        var expired = await fixture.AdmitWithTokenAsync(pair.AccessToken, serviceId);
        var refreshed = await RefreshAsync(keyId, pair.RefreshToken);

        Assert.Equal(AdmitOutcome.Admitted, beforeExpiry.Outcome);
        Assert.Equal(AdmitOutcome.TokenInvalid, expired.Outcome);
        Assert.Equal(0, expired.Reserved);
        Assert.Equal(AdmitOutcome.Admitted, refreshed.Outcome);
        Assert.Equal(AdmitOutcome.Admitted, (await fixture.AdmitWithTokenAsync(refreshed.Tokens!.AccessToken, serviceId)).Outcome);
    }

    [Fact]
    public async Task RefreshToken_50ConcurrentRefreshesOfOneToken_AllGetTheSamePair()
    {
        var (keyId, secret, serviceId, _) = await NewKeyAsync();
        var pair = await IssueAsync(keyId, secret);
        var proof = AccessKit.Proof(pair.RefreshToken, ApiKeySecrets.RefreshTokenPrefix);
        var key = fixture.Key(keyId);

        var results = await Task.WhenAll(Enumerable.Range(0, 50).Select(_ => key.RefreshTokenAsync(proof)));

        Assert.All(results, r => Assert.Equal(AdmitOutcome.Admitted, r.Outcome));
        var fresh = Assert.Single(results.Select(r => r.Tokens!).Distinct());
        Assert.NotEqual(pair.AccessToken, fresh.AccessToken);
        Assert.NotEqual(pair.RefreshToken, fresh.RefreshToken);
        Assert.Equal(AdmitOutcome.Admitted, (await fixture.AdmitWithTokenAsync(fresh.AccessToken, serviceId)).Outcome);
    }

    [Fact]
    public async Task RefreshToken_OldTokenAfterGracePeriod_TokenInvalidButNewPairWorksAndOldAccessTokenStillAdmits()
    {
        var (keyId, secret, serviceId, _) = await NewKeyAsync();
        var pair = await IssueAsync(keyId, secret);

        var refreshed = (await RefreshAsync(keyId, pair.RefreshToken)).Tokens!;
        var retryWithinGrace = await RefreshAsync(keyId, pair.RefreshToken);
        fixture.Time.Advance(Defaults.RefreshGracePeriod + TimeSpan.FromSeconds(1));
        var reuse = await RefreshAsync(keyId, pair.RefreshToken);
        var oldAccess = await fixture.AdmitWithTokenAsync(pair.AccessToken, serviceId);
        var next = await RefreshAsync(keyId, refreshed.RefreshToken);

        Assert.Equal(refreshed, retryWithinGrace.Tokens);
        Assert.Equal(AdmitOutcome.TokenInvalid, reuse.Outcome);
        Assert.Null(reuse.Tokens);
        Assert.Equal(AdmitOutcome.Admitted, oldAccess.Outcome);
        Assert.Equal(AdmitOutcome.Admitted, next.Outcome);
        Assert.NotEqual(refreshed, next.Tokens);
        Assert.Equal(AdmitOutcome.Admitted, (await fixture.AdmitWithTokenAsync(refreshed.AccessToken, serviceId)).Outcome);
        Assert.Equal(AdmitOutcome.Admitted, (await fixture.AdmitWithTokenAsync(next.Tokens!.AccessToken, serviceId)).Outcome);
    }

    [Fact]
    public async Task RevokeToken_AccessToken_OnlyThatTokenRefused()
    {
        var (keyId, secret, serviceId, _) = await NewKeyAsync();
        var revoked = await IssueAsync(keyId, secret);
        var kept = await IssueAsync(keyId, secret);

        var done = await fixture.Key(keyId).RevokeTokenAsync(AccessKit.Proof(revoked.AccessToken, ApiKeySecrets.AccessTokenPrefix));
        var again = await fixture.Key(keyId).RevokeTokenAsync(AccessKit.Proof(revoked.AccessToken, ApiKeySecrets.AccessTokenPrefix));

        Assert.True(done);
        Assert.False(again);
        Assert.Equal(AdmitOutcome.TokenInvalid, (await fixture.AdmitWithTokenAsync(revoked.AccessToken, serviceId)).Outcome);
        Assert.Equal(AdmitOutcome.Admitted, (await fixture.AdmitWithTokenAsync(kept.AccessToken, serviceId)).Outcome);
        Assert.Equal(AdmitOutcome.Admitted, (await fixture.AdmitAsync(keyId, secret, serviceId)).Outcome);
        Assert.Equal(AdmitOutcome.Admitted, (await RefreshAsync(keyId, revoked.RefreshToken)).Outcome);
    }

    [Fact]
    public async Task Admit_TokensOfARevokedKey_RefusedAsRevokedImmediately()
    {
        var (keyId, secret, serviceId, _) = await NewKeyAsync();
        var first = await IssueAsync(keyId, secret);
        var second = await IssueAsync(keyId, secret);

        await fixture.Key(keyId).SetStatusAsync(ApiKeyStatus.Revoked);

        Assert.Equal(AdmitOutcome.Revoked, (await fixture.AdmitAsync(keyId, secret, serviceId)).Outcome);
        Assert.Equal(AdmitOutcome.Revoked, (await RefreshAsync(keyId, first.RefreshToken)).Outcome);
        Assert.Equal(AdmitOutcome.Revoked, (await fixture.Key(keyId).IssueTokenAsync(secret)).Outcome);
        Assert.Equal(AdmitOutcome.Revoked, (await fixture.AdmitWithTokenAsync(first.AccessToken, serviceId)).Outcome);
        Assert.Equal(AdmitOutcome.Revoked, (await fixture.AdmitWithTokenAsync(second.AccessToken, serviceId)).Outcome);
    }

    [Fact]
    public async Task Admit_TokensOfARevokedKey_NeverAdmitted()
    {
        var (keyId, secret, serviceId, accountId) = await NewKeyAsync();
        var pair = await IssueAsync(keyId, secret);

        await fixture.Key(keyId).SetStatusAsync(ApiKeyStatus.Revoked);
        var access = await fixture.AdmitWithTokenAsync(pair.AccessToken, serviceId);
        var refresh = await RefreshAsync(keyId, pair.RefreshToken);

        Assert.NotEqual(AdmitOutcome.Admitted, access.Outcome);
        Assert.NotEqual(AdmitOutcome.Admitted, refresh.Outcome);
        Assert.Null(refresh.Tokens);
        Assert.Equal(0, (await fixture.Account(accountId).GetAsync())!.Reserved);
    }

    [Fact]
    public async Task Admit_TokensOfASuspendedKey_RefusedUntilResumed()
    {
        var (keyId, secret, serviceId, _) = await NewKeyAsync();
        var pair = await IssueAsync(keyId, secret);

        await fixture.Key(keyId).SetStatusAsync(ApiKeyStatus.Suspended);
        var suspendedAccess = await fixture.AdmitWithTokenAsync(pair.AccessToken, serviceId);
        var suspendedIssue = await fixture.Key(keyId).IssueTokenAsync(secret);
        await fixture.Key(keyId).SetStatusAsync(ApiKeyStatus.Active);
        var resumedAccess = await fixture.AdmitWithTokenAsync(pair.AccessToken, serviceId);
        var resumedRefresh = await RefreshAsync(keyId, pair.RefreshToken);

        Assert.Equal(AdmitOutcome.Suspended, suspendedAccess.Outcome);
        Assert.Equal(AdmitOutcome.Suspended, suspendedIssue.Outcome);
        Assert.Equal(AdmitOutcome.Admitted, resumedAccess.Outcome);
        Assert.Equal(AdmitOutcome.Admitted, resumedRefresh.Outcome);
    }

    [Fact]
    public async Task Admit_SuspendedKey_RefreshRefusedAsSuspended()
    {
        var (keyId, secret, _, _) = await NewKeyAsync();
        var pair = await IssueAsync(keyId, secret);

        await fixture.Key(keyId).SetStatusAsync(ApiKeyStatus.Suspended);

        Assert.Equal(AdmitOutcome.Suspended, (await RefreshAsync(keyId, pair.RefreshToken)).Outcome);
    }

    [Fact]
    public async Task Tokens_PresentedAsTheOtherKind_Refused()
    {
        var (keyId, secret, serviceId, _) = await NewKeyAsync();
        var pair = await IssueAsync(keyId, secret);
        var refreshProof = AccessKit.Proof(pair.RefreshToken, ApiKeySecrets.RefreshTokenPrefix);
        var accessProof = AccessKit.Proof(pair.AccessToken, ApiKeySecrets.AccessTokenPrefix);

        // The front door does not even take a refresh token as a credential.
        Assert.False(ApiKeySecrets.TryParseCredential(pair.RefreshToken, out _, out _, out _));
        var refreshAsAccess = await fixture.Key(keyId).AdmitAsync(AccessKit.Request(refreshProof, serviceId, kind: CredentialKind.AccessToken));
        var accessAsRefresh = await fixture.Key(keyId).RefreshTokenAsync(accessProof);
        var proofAsSecret = await fixture.Key(keyId).AdmitAsync(AccessKit.Request(accessProof, serviceId));

        Assert.Equal(AdmitOutcome.TokenInvalid, refreshAsAccess.Outcome);
        Assert.Equal(AdmitOutcome.TokenInvalid, accessAsRefresh.Outcome);
        Assert.Null(accessAsRefresh.Tokens);
        Assert.Equal(AdmitOutcome.InvalidCredentials, proofAsSecret.Outcome);

        // Neither misuse spent the tokens.
        Assert.Equal(AdmitOutcome.Admitted, (await fixture.AdmitWithTokenAsync(pair.AccessToken, serviceId)).Outcome);
        Assert.Equal(AdmitOutcome.Admitted, (await RefreshAsync(keyId, pair.RefreshToken)).Outcome);
    }

    [Fact]
    public async Task Admit_AccessTokenOfAnotherKey_Refused()
    {
        var (keyA, secretA, serviceA, _) = await NewKeyAsync();
        var (keyB, _, _, _) = await NewKeyAsync();
        var pair = await IssueAsync(keyA, secretA);
        var proof = AccessKit.Proof(pair.AccessToken, ApiKeySecrets.AccessTokenPrefix);

        var elsewhere = await fixture.Key(keyB).AdmitAsync(AccessKit.Request(proof, serviceA, kind: CredentialKind.AccessToken));

        Assert.NotEqual(AdmitOutcome.Admitted, elsewhere.Outcome);
    }
}
