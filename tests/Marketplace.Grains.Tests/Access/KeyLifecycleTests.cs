using System.Text.Json;

namespace Marketplace.Grains.Tests.Access;

[Collection(ClusterCollection.Name)]
public sealed class KeyLifecycleTests(ClusterFixture fixture)
{
    [Fact]
    public async Task Admit_RightAfterRevokeReturns_RevokedWhenAskedFromTheOtherSilo()
    {
        var accountId = await fixture.CreateAccountAsync(balance: 1_000);
        var serviceId = TestIds.Service();
        await fixture.Grains.GetGrain<IDataServiceGrain>(serviceId).UpsertAsync(
            new DataServiceSpec("Weather", TestIds.Provider(), "https://upstream.invalid/api", 1, AccessKit.Eur, null, 2000, Status: ServiceStatus.Published));
        var (keyId, secret, created) = await fixture.CreateKeyAsync(accountId, [serviceId]);

        var host = await fixture.Grains.GetGrain<IManagementGrain>(0).GetActivationAddress(fixture.Key(keyId));
        Assert.NotNull(host);
        Assert.Equal(2, fixture.Cluster.Silos.Count);
        var hostSilo = fixture.Cluster.Silos.Single(s => s.SiloAddress.Equals(host));
        var otherSilo = fixture.Cluster.Silos.Single(s => !s.SiloAddress.Equals(host));
        var fromHost = fixture.GrainsOn(hostSilo);
        var fromOther = fixture.GrainsOn(otherSilo);
        Assert.Equal(AdmitOutcome.Admitted, (await fromOther.GetGrain<IApiKeyGrain>(keyId).AdmitAsync(AccessKit.Request(secret, serviceId))).Outcome);

        await fromOther.GetGrain<IApiKeyGrain>(keyId).SetStatusAsync(ApiKeyStatus.Suspended);
        var suspendedOnHost = await fromHost.GetGrain<IApiKeyGrain>(keyId).AdmitAsync(AccessKit.Request(secret, serviceId));
        await fromOther.GetGrain<IApiKeyGrain>(keyId).SetStatusAsync(ApiKeyStatus.Active);
        var resumedOnHost = await fromHost.GetGrain<IApiKeyGrain>(keyId).AdmitAsync(AccessKit.Request(secret, serviceId));

        await fromHost.GetGrain<IApiKeyGrain>(keyId).SetStatusAsync(ApiKeyStatus.Revoked);
        var revokedOnOther = await fromOther.GetGrain<IApiKeyGrain>(keyId).AdmitAsync(AccessKit.Request(secret, serviceId));

        // The call pipeline is a stateless worker: called from the other silo, it runs there.
        var call = await fromOther.GetGrain<ICallPipelineGrain>(0).CallAsync(
            new CallRequest(serviceId, created.ApiKey, "GET", string.Empty, string.Empty, null, null, null));
        var viaClient = await fixture.Grains.GetGrain<ICallPipelineGrain>(0).CallAsync(
            new CallRequest(serviceId, created.ApiKey, "GET", string.Empty, string.Empty, null, null, null));

        Assert.Equal(AdmitOutcome.Suspended, suspendedOnHost.Outcome);
        Assert.Equal(AdmitOutcome.Admitted, resumedOnHost.Outcome);
        Assert.Equal(AdmitOutcome.Revoked, revokedOnOther.Outcome);
        Assert.Equal(CallOutcome.Rejected, call.Outcome);
        Assert.Equal(AdmitOutcome.Revoked, call.Rejection);
        Assert.Equal(0, call.Charged);
        Assert.Equal(CallOutcome.Rejected, viaClient.Outcome);
        Assert.Equal(AdmitOutcome.Revoked, viaClient.Rejection);
        Assert.Equal(2, (await fixture.Account(accountId).GetAsync())!.Reserved);
    }

    [Fact]
    public async Task Update_NewLimits_ApplyToTheNextCall()
    {
        var accountId = await fixture.CreateAccountAsync(balance: 1_000);
        var serviceId = TestIds.Service();
        var (keyId, secret) = await fixture.CreateLimitedKeyAsync(accountId, [serviceId], null);
        var key = fixture.Key(keyId);

        var unlimited = await fixture.AdmitManyAsync(keyId, secret, serviceId, 10);
        var withQuota = await key.UpdateAsync(new ApiKeyUpdate(null, null, null, new KeyLimits(null, new Quota(2, null), null, null)));
        var quoted = await fixture.AdmitManyAsync(keyId, secret, serviceId, 5);
        await key.UpdateAsync(new ApiKeyUpdate(null, null, null, new KeyLimits(new RateLimit(1, 1), null, null, null)));
        var rated = await fixture.AdmitManyAsync(keyId, secret, serviceId, 5);
        var renamed = await key.UpdateAsync(new ApiKeyUpdate("renamed", null, null, null));
        var stillRated = await fixture.AdmitAsync(keyId, secret, serviceId);
        await key.UpdateAsync(new ApiKeyUpdate(null, null, null, KeyLimits.None));
        var freed = await fixture.AdmitManyAsync(keyId, secret, serviceId, 10);

        Assert.Equal(10, unlimited.CountOf(AdmitOutcome.Admitted));
        Assert.Equal(new Quota(2, null), withQuota!.Limits!.Quota);
        Assert.Equal(2, quoted.CountOf(AdmitOutcome.Admitted));
        Assert.Equal(3, quoted.CountOf(AdmitOutcome.QuotaExhausted));
        Assert.Equal(1, rated.CountOf(AdmitOutcome.Admitted));
        Assert.Equal(4, rated.CountOf(AdmitOutcome.RateLimited));
        Assert.Equal("renamed", renamed!.Name);
        Assert.Equal(new RateLimit(1, 1), renamed.Limits!.Rate);
        Assert.Equal(AdmitOutcome.RateLimited, stillRated.Outcome);
        Assert.Equal(10, freed.CountOf(AdmitOutcome.Admitted));
    }

    [Theory]
    [InlineData("rate-per-second-zero")]
    [InlineData("rate-burst-zero")]
    [InlineData("negative-day-quota")]
    [InlineData("negative-month-quota")]
    [InlineData("window-offset-15h")]
    [InlineData("window-offset-minus-15h")]
    [InlineData("window-offset-with-seconds")]
    [InlineData("window-offset-with-milliseconds")]
    [InlineData("per-service-bad-id")]
    [InlineData("per-service-zero-rate")]
    [InlineData("per-service-negative-quota")]
    public async Task Update_InvalidLimits_ThrowsArgumentExceptionAndLeavesKeyUnchanged(string invalid)
    {
        var accountId = await fixture.CreateAccountAsync(balance: 1_000);
        var serviceId = TestIds.Service();
        var original = new KeyLimits(null, new Quota(3, null), null, TimeSpan.FromHours(1));
        var (keyId, secret) = await fixture.CreateLimitedKeyAsync(accountId, [serviceId], original);
        var key = fixture.Key(keyId);
        var before = JsonSerializer.Serialize(await key.GetAsync());
        var limits = invalid switch
        {
            "rate-per-second-zero" => new KeyLimits(new RateLimit(0, 5), null, null, null),
            "rate-burst-zero" => new KeyLimits(new RateLimit(10, 0), null, null, null),
            "negative-day-quota" => new KeyLimits(null, new Quota(-1, null), null, null),
            "negative-month-quota" => new KeyLimits(null, new Quota(null, -1), null, null),
            "window-offset-15h" => new KeyLimits(null, new Quota(100, null), null, TimeSpan.FromHours(15)),
            "window-offset-minus-15h" => new KeyLimits(null, new Quota(100, null), null, TimeSpan.FromHours(-15)),
            "window-offset-with-seconds" => new KeyLimits(null, new Quota(100, null), null, new TimeSpan(2, 0, 30)),
            "window-offset-with-milliseconds" => new KeyLimits(null, new Quota(100, null), null, new TimeSpan(0, 2, 0, 0, 500)),
            "per-service-bad-id" => new KeyLimits(null, null, new Dictionary<string, ServiceLimits> { ["Bad_Id"] = new(null, new Quota(1, null)) }, null),
            "per-service-zero-rate" => new KeyLimits(null, null, new Dictionary<string, ServiceLimits> { [serviceId] = new(new RateLimit(0, 1), null) }, null),
            "per-service-negative-quota" => new KeyLimits(null, null, new Dictionary<string, ServiceLimits> { [serviceId] = new(null, new Quota(-5, null)) }, null),
            _ => throw new ArgumentOutOfRangeException(nameof(invalid)),
        };

        await Assert.ThrowsAsync<ArgumentException>(() => key.UpdateAsync(new ApiKeyUpdate("new name", null, null, limits)));
        var info = await key.GetAsync();
        var results = await fixture.AdmitManyAsync(keyId, secret, serviceId, 5);

        Assert.Equal(before, JsonSerializer.Serialize(info));
        Assert.Equal("limited key", info!.Name);
        Assert.Equal(new Quota(3, null), info.Limits!.Quota);
        Assert.Null(info.Limits.Rate);
        Assert.Null(info.Limits.PerService);
        Assert.Equal(TimeSpan.FromHours(1), info.Limits.WindowOffset);
        Assert.Equal(3, results.CountOf(AdmitOutcome.Admitted));
        Assert.Equal(2, results.CountOf(AdmitOutcome.QuotaExhausted));
    }

    [Fact]
    public async Task Update_PerServiceEntryWithoutLimits_RefusedAsInvalidOrAppliedButNeverHalfApplied()
    {
        var accountId = await fixture.CreateAccountAsync(balance: 1_000);
        var serviceId = TestIds.Service();
        var (keyId, secret) = await fixture.CreateLimitedKeyAsync(accountId, [serviceId], new KeyLimits(null, new Quota(3, null), null, null));
        var key = fixture.Key(keyId);
        var before = JsonSerializer.Serialize(await key.GetAsync());
        var limits = new KeyLimits(null, null, new Dictionary<string, ServiceLimits> { [serviceId] = null! }, null);

        Exception? thrown = null;
        try
        {
            await key.UpdateAsync(new ApiKeyUpdate("new name", null, null, limits));
        }
        catch (Exception exception)
        {
            thrown = exception;
        }

        var info = await key.GetAsync();
        if (thrown is not null)
        {
            // Refused: nothing of the update may stick, and it must be reported as an input error.
            Assert.Equal(before, JsonSerializer.Serialize(info));
            Assert.IsType<ArgumentException>(thrown, exactMatch: false);
        }
        else
        {
            Assert.Equal("new name", info!.Name);
            Assert.Null(info.Limits?.Quota);
        }

        Assert.Equal(AdmitOutcome.Admitted, (await fixture.AdmitAsync(keyId, secret, serviceId)).Outcome);
    }

    [Fact]
    public async Task Update_InvalidLimits_KeyStateIdenticalToBefore()
    {
        var accountId = await fixture.CreateAccountAsync(balance: 1_000);
        var serviceId = TestIds.Service();
        var perService = new Dictionary<string, ServiceLimits> { [serviceId] = new(new RateLimit(5, 5), new Quota(10, 100)) };
        var (keyId, _) = await fixture.CreateLimitedKeyAsync(
            accountId, [serviceId], new KeyLimits(new RateLimit(10, 10), new Quota(20, 200), perService, TimeSpan.FromMinutes(-90)));
        var key = fixture.Key(keyId);
        var before = JsonSerializer.Serialize(await key.GetAsync());

        await Assert.ThrowsAsync<ArgumentException>(() => key.UpdateAsync(
            new ApiKeyUpdate("other", [serviceId, TestIds.Service()], null, new KeyLimits(new RateLimit(0, 1), null, null, null))));

        Assert.Equal(before, JsonSerializer.Serialize(await key.GetAsync()));
    }

    [Fact]
    public async Task Delete_Key_RefusedAsUnknownAndDetachedFromItsAccount()
    {
        var accountId = await fixture.CreateAccountAsync(balance: 1_000);
        var serviceId = TestIds.Service();
        var (keyId, secret, _) = await fixture.CreateKeyAsync(accountId, [serviceId]);
        var (otherKeyId, _, _) = await fixture.CreateKeyAsync(accountId, [serviceId]);
        var pair = (await fixture.Key(keyId).IssueTokenAsync(secret)).Tokens!;

        var deleted = await fixture.Key(keyId).DeleteAsync();

        Assert.True(deleted);
        Assert.Equal(AdmitOutcome.InvalidCredentials, (await fixture.AdmitAsync(keyId, secret, serviceId)).Outcome);
        Assert.NotEqual(AdmitOutcome.Admitted, (await fixture.AdmitWithTokenAsync(pair.AccessToken, serviceId)).Outcome);
        Assert.Null(await fixture.Key(keyId).GetAsync());
        Assert.Null(await fixture.Key(keyId).AuthenticateAsync(secret));
        Assert.NotEqual(AdmitOutcome.Admitted, (await fixture.Key(keyId).IssueTokenAsync(secret)).Outcome);
        Assert.False(await fixture.Key(keyId).DeleteAsync());
        var account = await Poll.UntilAsync(async () => (await fixture.Account(accountId).GetAsync())!, a => !a.KeyIds.Contains(keyId));
        Assert.DoesNotContain(keyId, account.KeyIds);
        Assert.Contains(otherKeyId, account.KeyIds);

        // Still gone for a fresh activation.
        await ClusterFixture.DeactivateAsync(fixture.Key(keyId));
        Assert.Null(await fixture.Key(keyId).GetAsync());
        Assert.Equal(AdmitOutcome.InvalidCredentials, (await fixture.AdmitAsync(keyId, secret, serviceId)).Outcome);
    }
}
