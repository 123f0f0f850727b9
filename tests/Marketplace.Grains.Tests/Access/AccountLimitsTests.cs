namespace Marketplace.Grains.Tests.Access;

[Collection(ClusterCollection.Name)]
public sealed class AccountLimitsTests(ClusterFixture fixture)
{
    [Fact]
    public async Task Admit_ConcurrentCallsOverThreeKeys_AccountMonthlyCapExactThenResetsNextMonth()
    {
        var accountId = await fixture.CreateCappedAccountAsync(balance: 10_000, monthlyCallCap: 30);
        var serviceId = TestIds.Service();
        var keys = new List<(string KeyId, string Secret)>();
        for (var i = 0; i < 3; i++)
        {
            keys.Add(await fixture.CreateLimitedKeyAsync(accountId, [serviceId], null));
        }

        Task<AdmitResult[]> Burst() => Task.WhenAll(Enumerable.Range(0, 300).Select(i =>
            fixture.Key(keys[i % 3].KeyId).AdmitAsync(AccessKit.Request(keys[i % 3].Secret, serviceId, i)).AsTask()));

        var thisMonth = await Burst();
        var capped = await fixture.Account(accountId).GetAsync();
        fixture.Time.AdvanceTo(fixture.Time.NextUtcMonth());
        var rolled = await fixture.Account(accountId).GetAsync();
        var nextMonth = await Burst();

        Assert.Equal(30, thisMonth.CountOf(AdmitOutcome.Admitted));
        Assert.Equal(270, thisMonth.CountOf(AdmitOutcome.AccountCapReached));
        Assert.Equal(30, capped!.CallsThisMonth);
        Assert.Equal(30, capped.MonthlyCallCap);
        Assert.Equal(30, capped.Reserved);
        Assert.Equal(0, rolled!.CallsThisMonth);
        Assert.Equal(30, nextMonth.CountOf(AdmitOutcome.Admitted));
        Assert.Equal(270, nextMonth.CountOf(AdmitOutcome.AccountCapReached));
        Assert.Equal(30, (await fixture.Account(accountId).GetAsync())!.CallsThisMonth);
    }

    [Fact]
    public async Task Admit_KeyQuotaRefusals_DoNotCountAgainstTheAccountCap()
    {
        var accountId = await fixture.CreateCappedAccountAsync(balance: 10_000, monthlyCallCap: 10);
        var serviceId = TestIds.Service();
        var (quotaKey, quotaSecret) = await fixture.CreateLimitedKeyAsync(accountId, [serviceId], new KeyLimits(null, new Quota(4, null), null, null));
        var (freeKey, freeSecret) = await fixture.CreateLimitedKeyAsync(accountId, [serviceId], null);

        var limited = await fixture.AdmitManyAsync(quotaKey, quotaSecret, serviceId, 50);
        var free = await fixture.AdmitManyAsync(freeKey, freeSecret, serviceId, 50);

        Assert.Equal(4, limited.CountOf(AdmitOutcome.Admitted));
        Assert.Equal(46, limited.CountOf(AdmitOutcome.QuotaExhausted));
        Assert.Equal(6, free.CountOf(AdmitOutcome.Admitted));
        Assert.Equal(44, free.CountOf(AdmitOutcome.AccountCapReached));
    }

    [Fact]
    public async Task Admit_AccountCapRefusals_DoNotConsumeTheKeyQuota()
    {
        var accountId = await fixture.CreateCappedAccountAsync(balance: 10_000, monthlyCallCap: 5);
        var serviceId = TestIds.Service();
        var (keyId, secret) = await fixture.CreateLimitedKeyAsync(accountId, [serviceId], new KeyLimits(null, new Quota(10, null), null, null));

        var results = await fixture.AdmitManyAsync(keyId, secret, serviceId, 20);

        Assert.Equal(5, results.CountOf(AdmitOutcome.Admitted));
        Assert.Equal(15, results.CountOf(AdmitOutcome.AccountCapReached));
        Assert.Equal(5, Assert.Single((await fixture.Key(keyId).GetAsync())!.Quotas!).Used);
    }

    [Fact]
    public async Task Adjust_BeyondAvailable_ThrowsAndLeavesBalanceAndLedgerUnchanged()
    {
        var accountId = await fixture.CreateAccountAsync(balance: 100, creditLimit: 20);
        var account = fixture.Account(accountId);

        await Assert.ThrowsAsync<InvalidOperationException>(() => account.AdjustAsync(-121, "too much"));
        var untouched = await account.GetAsync();
        var debited = await account.AdjustAsync(-120, "chargeback");
        await Assert.ThrowsAsync<InvalidOperationException>(() => account.AdjustAsync(-1, "one more"));
        var afterRefused = await account.GetAsync();
        var credited = await account.AdjustAsync(50, "goodwill credit");
        var ledger = await account.GetLedgerAsync();

        Assert.Equal(100, untouched!.Balance);
        Assert.Equal(120, untouched.Available);
        Assert.Equal(-20, debited.Balance);
        Assert.Equal(0, debited.Available);
        Assert.Equal(-20, afterRefused!.Balance);
        Assert.Equal(30, credited.Balance);
        Assert.Equal(50, credited.Available);
        Assert.Equal(100, credited.TotalToppedUp);
        var now = fixture.Time.GetUtcNow();
        Assert.Equal(
            [
                new LedgerEntry(now, 100, "test funding", 100),
                new LedgerEntry(now, -120, "chargeback", -20),
                new LedgerEntry(now, 50, "goodwill credit", 30),
            ],
            ledger.Select(entry => entry with { OperationId = null }));
        Assert.All(ledger, entry => Assert.False(string.IsNullOrEmpty(entry.OperationId)));
    }

    [Fact]
    public async Task Adjust_WithPricesReserved_CannotDebitWhatCallsInFlightHold()
    {
        var accountId = await fixture.CreateAccountAsync(balance: 100);
        var account = fixture.Account(accountId);
        var serviceId = TestIds.Service();
        var (keyId, secret) = await fixture.CreateLimitedKeyAsync(accountId, [serviceId], null);
        Assert.Equal(AdmitOutcome.Admitted, (await fixture.AdmitAsync(keyId, secret, serviceId, price: 60)).Outcome);

        await Assert.ThrowsAsync<InvalidOperationException>(() => account.AdjustAsync(-41, "too much"));
        var unchanged = await account.GetAsync();
        var debited = await account.AdjustAsync(-40, "correction");
        var refused = await fixture.AdmitAsync(keyId, secret, serviceId, price: 1);

        Assert.Equal(100, unchanged!.Balance);
        Assert.Single(await account.GetLedgerAsync(), e => e.Reason == "correction" && e.Amount == -40 && e.BalanceAfter == 60);
        Assert.Equal(60, debited.Balance);
        Assert.Equal(0, debited.Available);
        Assert.Equal(AdmitOutcome.InsufficientBalance, refused.Outcome);
    }

    [Fact]
    public async Task Adjust_ConcurrentDebits_NeverTakeTheBalanceBelowTheCreditLimit()
    {
        var accountId = await fixture.CreateAccountAsync(balance: 100, creditLimit: 50);
        var account = fixture.Account(accountId);

        var attempts = await Task.WhenAll(Enumerable.Range(0, 40).Select(async i =>
        {
            try
            {
                await account.AdjustAsync(-7, $"debit {i}");
                return true;
            }
            catch (InvalidOperationException)
            {
                return false;
            }
        }));

        var info = await account.GetAsync();
        Assert.Equal(21, attempts.Count(ok => ok));
        Assert.Equal(100 - (21 * 7), info!.Balance);
        Assert.True(info.Balance >= -50);
        Assert.Equal(22, (await account.GetLedgerAsync()).Count);
    }
}
