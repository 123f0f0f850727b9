namespace Marketplace.Grains.Tests.Access;

[Collection(ClusterCollection.Name)]
public sealed class KeyQuotaTests(ClusterFixture fixture)
{
    private static KeyLimits DailyQuota(long perDay, TimeSpan? offset = null) => new(null, new Quota(perDay, null), null, offset);

    [Fact]
    public async Task Admit_2000ConcurrentCallsWithDailyQuota50_AdmitsExactly50AndRefusesTheRestWithDayStatus()
    {
        var accountId = await fixture.CreateAccountAsync(balance: 1_000_000);
        var serviceId = TestIds.Service();
        var (keyId, secret) = await fixture.CreateLimitedKeyAsync(accountId, [serviceId], DailyQuota(50));
        var expectedReset = (long)Math.Ceiling((fixture.Time.NextUtcMidnight() - fixture.Time.GetUtcNow()).TotalSeconds);

        var results = await fixture.AdmitManyAsync(keyId, secret, serviceId, 2000);

        Assert.Equal(50, results.CountOf(AdmitOutcome.Admitted));
        Assert.Equal(1950, results.CountOf(AdmitOutcome.QuotaExhausted));
        Assert.All(results.Where(r => r.Outcome == AdmitOutcome.QuotaExhausted), r =>
        {
            Assert.NotNull(r.Limit);
            Assert.Equal("day", r.Limit.Policy);
            Assert.Equal(50, r.Limit.Limit);
            Assert.Equal(0, r.Limit.Remaining);
            Assert.Equal(86_400, r.Limit.WindowSeconds);
            Assert.True(r.Limit.ResetSeconds > 0);
            Assert.Equal(Math.Max(1, expectedReset), r.Limit.ResetSeconds);
            Assert.Equal(0, r.Reserved);
        });

        // Admitted calls report how many are left: 49 .. 0, once each.
        Assert.Equal(
            Enumerable.Range(0, 50).Select(n => (long)n),
            results.Where(r => r.Outcome == AdmitOutcome.Admitted).Select(r => r.Limit!.Remaining).Order());
        Assert.Equal(50, (await fixture.Account(accountId).GetAsync())!.Reserved);
        var usage = Assert.Single((await fixture.Key(keyId).GetAsync())!.Quotas!);
        Assert.Equal(new QuotaUsage("day", null, new DateTimeOffset(fixture.Time.GetUtcNow().UtcDateTime.Date, TimeSpan.Zero), 50, 50), usage);
    }

    [Fact]
    public async Task Admit_PerServiceDailyQuotaOnOneOfTwoServices_ExactForThatServiceOtherUnaffected()
    {
        var accountId = await fixture.CreateAccountAsync(balance: 1_000_000);
        var limited = TestIds.Service();
        var free = TestIds.Service();
        var limits = new KeyLimits(null, null, new Dictionary<string, ServiceLimits> { [limited] = new(null, new Quota(20, null)) }, null);
        var (keyId, secret) = await fixture.CreateLimitedKeyAsync(accountId, [limited, free], limits);
        var key = fixture.Key(keyId);

        var results = await Task.WhenAll(Enumerable.Range(0, 600).Select(async i =>
        {
            var serviceId = i % 2 == 0 ? limited : free;
            return (ServiceId: serviceId, Result: await key.AdmitAsync(AccessKit.Request(secret, serviceId, i)));
        }));

        var onLimited = results.Where(r => r.ServiceId == limited).Select(r => r.Result).ToList();
        var onFree = results.Where(r => r.ServiceId == free).Select(r => r.Result).ToList();
        Assert.Equal(20, onLimited.CountOf(AdmitOutcome.Admitted));
        Assert.Equal(280, onLimited.CountOf(AdmitOutcome.QuotaExhausted));
        Assert.All(onLimited.Where(r => r.Outcome == AdmitOutcome.QuotaExhausted), r =>
        {
            Assert.Equal("service-day", r.Limit!.Policy);
            Assert.Equal(20, r.Limit.Limit);
            Assert.Equal(0, r.Limit.Remaining);
        });
        Assert.Equal(300, onFree.CountOf(AdmitOutcome.Admitted));
        Assert.Equal(320, (await fixture.Account(accountId).GetAsync())!.Reserved);
        var usage = Assert.Single((await key.GetAsync())!.Quotas!);
        Assert.Equal(limited, usage.ServiceId);
        Assert.Equal(20, usage.Used);
        Assert.Equal(20, usage.Limit);
    }

    [Fact]
    public async Task Admit_ConcurrentCallsWithMonthlyQuota_AdmitsExactlyTheQuota()
    {
        var accountId = await fixture.CreateAccountAsync(balance: 1_000_000);
        var serviceId = TestIds.Service();
        var (keyId, secret) = await fixture.CreateLimitedKeyAsync(accountId, [serviceId], new KeyLimits(null, new Quota(null, 30), null, null));
        var now = fixture.Time.GetUtcNow();
        var monthSeconds = (long)(fixture.Time.NextUtcMonth() - new DateTimeOffset(now.Year, now.Month, 1, 0, 0, 0, TimeSpan.Zero)).TotalSeconds;

        var results = await fixture.AdmitManyAsync(keyId, secret, serviceId, 500);

        Assert.Equal(30, results.CountOf(AdmitOutcome.Admitted));
        Assert.Equal(470, results.CountOf(AdmitOutcome.QuotaExhausted));
        Assert.All(results.Where(r => r.Outcome == AdmitOutcome.QuotaExhausted), r =>
        {
            Assert.Equal("month", r.Limit!.Policy);
            Assert.Equal(30, r.Limit.Limit);
            Assert.Equal(0, r.Limit.Remaining);
            Assert.Equal(monthSeconds, r.Limit.WindowSeconds);
            Assert.True(r.Limit.ResetSeconds > 0);
        });
        Assert.Equal(30, (await fixture.Account(accountId).GetAsync())!.Reserved);
    }

    [Fact]
    public async Task Admit_CallsRefusedForBalance_DoNotConsumeQuota()
    {
        var accountId = await fixture.CreateAccountAsync(balance: 10);
        var serviceId = TestIds.Service();
        var (keyId, secret) = await fixture.CreateLimitedKeyAsync(accountId, [serviceId], DailyQuota(50));

        var poor = await fixture.AdmitManyAsync(keyId, secret, serviceId, 100);

        Assert.Equal(10, poor.CountOf(AdmitOutcome.Admitted));
        Assert.Equal(90, poor.CountOf(AdmitOutcome.InsufficientBalance));
        Assert.Equal(10, Assert.Single((await fixture.Key(keyId).GetAsync())!.Quotas!).Used);

        await fixture.Account(accountId).TopUpAsync(1_000, "more funding");
        var funded = await fixture.AdmitManyAsync(keyId, secret, serviceId, 100);

        Assert.Equal(40, funded.CountOf(AdmitOutcome.Admitted));
        Assert.Equal(60, funded.CountOf(AdmitOutcome.QuotaExhausted));
        Assert.Equal(50, Assert.Single((await fixture.Key(keyId).GetAsync())!.Quotas!).Used);
        Assert.Equal(50, (await fixture.Account(accountId).GetAsync())!.Reserved);
    }

    [Fact]
    public async Task Admit_DailyQuotaUsedUp_AdmittedAgainFromTheNextUtcMidnight()
    {
        var accountId = await fixture.CreateAccountAsync(balance: 1_000);
        var serviceId = TestIds.Service();
        var (keyId, secret) = await fixture.CreateLimitedKeyAsync(accountId, [serviceId], DailyQuota(3));
        var midnight = fixture.Time.NextUtcMidnight();

        var today = await fixture.AdmitManyAsync(keyId, secret, serviceId, 5);
        fixture.Time.AdvanceTo(midnight - TimeSpan.FromSeconds(1));
        var lastSecond = await fixture.AdmitAsync(keyId, secret, serviceId);
        fixture.Time.AdvanceTo(midnight);
        var tomorrow = await fixture.AdmitManyAsync(keyId, secret, serviceId, 5);

        Assert.Equal(3, today.CountOf(AdmitOutcome.Admitted));
        Assert.Equal(AdmitOutcome.QuotaExhausted, lastSecond.Outcome);
        Assert.Equal(1, lastSecond.Limit!.ResetSeconds);
        Assert.Equal(3, tomorrow.CountOf(AdmitOutcome.Admitted));
        Assert.Equal(2, tomorrow.CountOf(AdmitOutcome.QuotaExhausted));
        var usage = Assert.Single((await fixture.Key(keyId).GetAsync())!.Quotas!);
        Assert.Equal(midnight, usage.WindowStart);
        Assert.Equal(3, usage.Used);
    }

    [Fact]
    public async Task Admit_WindowOffsetPlusTwoHours_DayStartsAt2200UtcNotAtMidnight()
    {
        var accountId = await fixture.CreateAccountAsync(balance: 1_000);
        var serviceId = TestIds.Service();
        var (shifted, shiftedSecret) = await fixture.CreateLimitedKeyAsync(accountId, [serviceId], DailyQuota(2, TimeSpan.FromHours(2)));
        var (utc, utcSecret) = await fixture.CreateLimitedKeyAsync(accountId, [serviceId], DailyQuota(2));

        // The next 22:00 UTC that leaves a few seconds to spend the quota before it.
        var now = fixture.Time.GetUtcNow();
        var boundary = new DateTimeOffset(now.UtcDateTime.Date.AddHours(22), TimeSpan.Zero);
        if (boundary - now < TimeSpan.FromSeconds(3))
        {
            boundary = boundary.AddDays(1);
        }

        fixture.Time.AdvanceTo(boundary - TimeSpan.FromSeconds(2));
        var shiftedBefore = await fixture.AdmitManyAsync(shifted, shiftedSecret, serviceId, 3);
        var utcBefore = await fixture.AdmitManyAsync(utc, utcSecret, serviceId, 3);
        fixture.Time.AdvanceTo(boundary - TimeSpan.FromSeconds(1));
        var shiftedLastSecond = await fixture.AdmitAsync(shifted, shiftedSecret, serviceId);
        fixture.Time.AdvanceTo(boundary);
        var shiftedAfter = await fixture.AdmitManyAsync(shifted, shiftedSecret, serviceId, 3);
        var utcAfter = await fixture.AdmitAsync(utc, utcSecret, serviceId);

        Assert.Equal(2, shiftedBefore.CountOf(AdmitOutcome.Admitted));
        Assert.Equal(2, shiftedBefore.Single(r => r.Outcome == AdmitOutcome.QuotaExhausted).Limit!.ResetSeconds);
        Assert.Equal(2, utcBefore.CountOf(AdmitOutcome.Admitted));
        Assert.Equal(AdmitOutcome.QuotaExhausted, shiftedLastSecond.Outcome);
        Assert.Equal(1, shiftedLastSecond.Limit!.ResetSeconds);
        Assert.Equal(2, shiftedAfter.CountOf(AdmitOutcome.Admitted));
        Assert.Equal(1, shiftedAfter.CountOf(AdmitOutcome.QuotaExhausted));
        Assert.Equal(AdmitOutcome.QuotaExhausted, utcAfter.Outcome);
        Assert.Equal(boundary, Assert.Single((await fixture.Key(shifted).GetAsync())!.Quotas!).WindowStart);
    }

    [Fact]
    public async Task Admit_QuotaPartlyUsedThenKeyDeactivated_CountersSurviveAndOnlyTheRestIsAdmitted()
    {
        var accountId = await fixture.CreateAccountAsync(balance: 1_000);
        var serviceId = TestIds.Service();
        var (keyId, secret) = await fixture.CreateLimitedKeyAsync(accountId, [serviceId], DailyQuota(5));
        for (var i = 0; i < 3; i++)
        {
            var admitted = await fixture.AdmitAsync(keyId, secret, serviceId);
            Assert.Equal(AdmitOutcome.Admitted, admitted.Outcome);
            await fixture.SettleThroughJournalAsync(keyId, serviceId, [admitted]);
        }

        await ClusterFixture.DeactivateAsync(fixture.Key(keyId));
        var reloaded = Assert.Single((await fixture.Key(keyId).GetAsync())!.Quotas!);
        var results = await fixture.AdmitManyAsync(keyId, secret, serviceId, 10);

        Assert.Equal(3, reloaded.Used);
        Assert.Equal(2, results.CountOf(AdmitOutcome.Admitted));
        Assert.Equal(8, results.CountOf(AdmitOutcome.QuotaExhausted));
    }
}
