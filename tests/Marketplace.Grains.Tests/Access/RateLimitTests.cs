namespace Marketplace.Grains.Tests.Access;

[Collection(ClusterCollection.Name)]
public sealed class RateLimitTests(ClusterFixture fixture)
{
    [Fact]
    public async Task Admit_20ConcurrentCallsWithBurst5AndTimeFrozen_Admits5ThenRefillCappedAtBurst()
    {
        var accountId = await fixture.CreateAccountAsync(balance: 1_000);
        var serviceId = TestIds.Service();
        var (keyId, secret) = await fixture.CreateLimitedKeyAsync(accountId, [serviceId], new KeyLimits(new RateLimit(10, 5), null, null, null));

        var first = await fixture.AdmitManyAsync(keyId, secret, serviceId, 20);
        fixture.Time.Advance(TimeSpan.FromSeconds(1));
        var second = await fixture.AdmitManyAsync(keyId, secret, serviceId, 20);

        foreach (var burst in new[] { first, second })
        {
            Assert.Equal(5, burst.CountOf(AdmitOutcome.Admitted));
            Assert.Equal(15, burst.CountOf(AdmitOutcome.RateLimited));
            Assert.All(burst.Where(r => r.Outcome == AdmitOutcome.RateLimited), r =>
            {
                Assert.NotNull(r.Limit);
                Assert.Equal("rate", r.Limit.Policy);
                Assert.Equal(5, r.Limit.Limit);
                Assert.Equal(0, r.Limit.Remaining);
                Assert.True(r.Limit.ResetSeconds >= 1);
                Assert.Equal(0, r.Reserved);
            });
        }

        Assert.Equal(10, (await fixture.Account(accountId).GetAsync())!.Reserved);
    }

    [Fact]
    public async Task Admit_RateLimited_RefillsAtTheConfiguredRate()
    {
        var accountId = await fixture.CreateAccountAsync(balance: 1_000);
        var serviceId = TestIds.Service();
        var (keyId, secret) = await fixture.CreateLimitedKeyAsync(accountId, [serviceId], new KeyLimits(new RateLimit(2, 4), null, null, null));

        // Steps of a quarter second at 2 per second are exact in binary: half a token, then a whole one.
        var burst = await fixture.AdmitManyAsync(keyId, secret, serviceId, 10);
        fixture.Time.Advance(TimeSpan.FromMilliseconds(250));
        var halfToken = await fixture.AdmitAsync(keyId, secret, serviceId);
        fixture.Time.Advance(TimeSpan.FromMilliseconds(250));
        var oneToken = await fixture.AdmitManyAsync(keyId, secret, serviceId, 3);
        fixture.Time.Advance(TimeSpan.FromMilliseconds(1500));
        var threeTokens = await fixture.AdmitManyAsync(keyId, secret, serviceId, 5);

        Assert.Equal(4, burst.CountOf(AdmitOutcome.Admitted));
        Assert.Equal(AdmitOutcome.RateLimited, halfToken.Outcome);
        Assert.Equal(1, halfToken.Limit!.ResetSeconds);
        Assert.Equal(1, oneToken.CountOf(AdmitOutcome.Admitted));
        Assert.Equal(3, threeTokens.CountOf(AdmitOutcome.Admitted));
    }

    [Fact]
    public async Task Admit_PerServiceRateLimit_SeparateFromTheKeyRateLimit()
    {
        var accountId = await fixture.CreateAccountAsync(balance: 1_000);
        var slow = TestIds.Service();
        var other = TestIds.Service();
        var perService = new Dictionary<string, ServiceLimits> { [slow] = new(new RateLimit(1, 2), null) };
        var (keyId, secret) = await fixture.CreateLimitedKeyAsync(accountId, [slow, other], new KeyLimits(new RateLimit(10, 5), null, perService, null));

        var onSlow = await fixture.AdmitManyAsync(keyId, secret, slow, 10);
        var onOther = await fixture.AdmitManyAsync(keyId, secret, other, 10);

        // The service's bucket allows 2; the refused 8 took no token from the key's bucket, which has 3 left.
        Assert.Equal(2, onSlow.CountOf(AdmitOutcome.Admitted));
        Assert.Equal(8, onSlow.CountOf(AdmitOutcome.RateLimited));
        Assert.All(onSlow.Where(r => r.Outcome == AdmitOutcome.RateLimited), r =>
        {
            Assert.Equal("service-rate", r.Limit!.Policy);
            Assert.Equal(2, r.Limit.Limit);
            Assert.True(r.Limit.ResetSeconds >= 1);
        });
        Assert.Equal(3, onOther.CountOf(AdmitOutcome.Admitted));
        Assert.Equal(7, onOther.CountOf(AdmitOutcome.RateLimited));
        Assert.All(onOther.Where(r => r.Outcome == AdmitOutcome.RateLimited), r => Assert.Equal("rate", r.Limit!.Policy));
    }

    [Fact]
    public async Task Admit_PerServiceRateLimitOnly_OtherServiceUnlimited()
    {
        var accountId = await fixture.CreateAccountAsync(balance: 1_000);
        var slow = TestIds.Service();
        var other = TestIds.Service();
        var perService = new Dictionary<string, ServiceLimits> { [slow] = new(new RateLimit(1, 2), null) };
        var (keyId, secret) = await fixture.CreateLimitedKeyAsync(accountId, [slow, other], new KeyLimits(null, null, perService, null));

        var onSlow = await fixture.AdmitManyAsync(keyId, secret, slow, 10);
        var onOther = await fixture.AdmitManyAsync(keyId, secret, other, 50);

        Assert.Equal(2, onSlow.CountOf(AdmitOutcome.Admitted));
        Assert.Equal(50, onOther.CountOf(AdmitOutcome.Admitted));
    }

    [Fact]
    public async Task Admit_RateLimitedCalls_ConsumeNeitherQuotaNorBalance()
    {
        var accountId = await fixture.CreateAccountAsync(balance: 1_000);
        var serviceId = TestIds.Service();
        var (keyId, secret) = await fixture.CreateLimitedKeyAsync(
            accountId, [serviceId], new KeyLimits(new RateLimit(10, 5), new Quota(7, null), null, null));

        var first = await fixture.AdmitManyAsync(keyId, secret, serviceId, 20);
        var afterFirst = await fixture.Key(keyId).GetAsync();
        var accountAfterFirst = await fixture.Account(accountId).GetAsync();
        fixture.Time.Advance(TimeSpan.FromSeconds(1));
        var second = await fixture.AdmitManyAsync(keyId, secret, serviceId, 20);

        Assert.Equal(5, first.CountOf(AdmitOutcome.Admitted));
        Assert.Equal(15, first.CountOf(AdmitOutcome.RateLimited));
        Assert.Equal(5, Assert.Single(afterFirst!.Quotas!).Used);
        Assert.Equal(5, accountAfterFirst!.Reserved);
        Assert.Equal(995, accountAfterFirst.Available);

        // Five tokens again, but only two calls left in the quota: the 15 refused calls did not count.
        Assert.Equal(2, second.CountOf(AdmitOutcome.Admitted));
        Assert.Equal(18, second.CountOf(AdmitOutcome.QuotaExhausted));
        Assert.Equal(7, (await fixture.Account(accountId).GetAsync())!.Reserved);
    }
}
