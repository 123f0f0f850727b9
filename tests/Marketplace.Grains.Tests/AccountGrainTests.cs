namespace Marketplace.Grains.Tests;

[Collection(ClusterCollection.Name)]
public sealed class AccountGrainTests(ClusterFixture fixture)
{
    private IAccountGrain Account(string accountId) => fixture.Grains.GetGrain<IAccountGrain>(accountId);

    [Fact]
    public async Task Create_NewAccount_OpensEmptyAccount()
    {
        var accountId = TestIds.Account();

        var info = await Account(accountId).CreateAsync(new AccountSpec("Acme", "EUR", 25));

        Assert.Equal(accountId, info.Id);
        Assert.Equal("EUR", info.Currency);
        Assert.Equal(0, info.Balance);
        Assert.Equal(25, info.CreditLimit);
        Assert.Equal(25, info.Available);
        Assert.Equal(fixture.Time.GetUtcNow(), info.CreatedAt);
    }

    [Fact]
    public async Task Create_ExistingWithOtherCurrency_ThrowsInvalidOperation()
    {
        var accountId = await fixture.CreateAccountAsync(balance: 10);

        await Assert.ThrowsAsync<InvalidOperationException>(() => Account(accountId).CreateAsync(new AccountSpec("Acme", "USD", 0)));
        Assert.Equal("EUR", (await Account(accountId).GetAsync())!.Currency);
    }

    [Fact]
    public async Task TopUp_PositiveAmounts_IncreaseBalanceAndAreAuditedDurably()
    {
        var accountId = await fixture.CreateAccountAsync(balance: 0);

        await Account(accountId).TopUpAsync(50, "first payment");
        var info = await Account(accountId).TopUpAsync(25, "second payment");

        Assert.Equal(75, info.Balance);
        Assert.Equal(75, info.TotalToppedUp);
        Assert.Equal(75, info.Available);
        Assert.Equal(0, info.TotalCharged);

        // Top-ups are written before they are acknowledged: a new activation reads them back.
        await ClusterFixture.DeactivateAsync(Account(accountId));
        var reloaded = await Account(accountId).GetAsync();
        Assert.Equal(75, reloaded!.Balance);
        Assert.Equal(75, reloaded.TotalToppedUp);
    }

    [Theory]
    [InlineData(0L, "valid reason")]
    [InlineData(-5L, "valid reason")]
    [InlineData(1_000_000_000_001L, "valid reason")]
    [InlineData(10L, "")]
    [InlineData(10L, "   ")]
    [InlineData(10L, null)]
    public async Task TopUp_InvalidAmountOrReason_ThrowsArgumentExceptionAndLeavesBalance(long amount, string? reason)
    {
        var accountId = await fixture.CreateAccountAsync(balance: 40);

        await Assert.ThrowsAsync<ArgumentException>(() => Account(accountId).TopUpAsync(amount, reason!));

        var info = await Account(accountId).GetAsync();
        Assert.Equal(40, info!.Balance);
        Assert.Equal(40, info.TotalToppedUp);
    }

    [Fact]
    public async Task TopUp_UnknownAccount_ThrowsKeyNotFound()
    {
        await Assert.ThrowsAsync<KeyNotFoundException>(() => Account(TestIds.Account()).TopUpAsync(10, "payment"));
    }

    [Fact]
    public async Task Reserve_AmountAboveBalanceMinusReservedPlusCredit_Refused()
    {
        var accountId = await fixture.CreateAccountAsync(balance: 10, creditLimit: 5);
        var account = Account(accountId);

        var tooMuch = await account.ReserveAsync(16);
        var exact = await account.ReserveAsync(15);
        var oneMore = await account.ReserveAsync(1);

        Assert.False(tooMuch.Granted);
        Assert.Equal(15, tooMuch.Available);
        Assert.True(exact.Granted);
        Assert.Equal(0, exact.Available);
        Assert.False(oneMore.Granted);
        var info = await account.GetAsync();
        Assert.Equal(10, info!.Balance);
        Assert.Equal(15, info.Reserved);
        Assert.Equal(0, info.Available);
    }

    [Fact]
    public async Task Reserve_UnknownAccount_Refused()
    {
        var reservation = await Account(TestIds.Account()).ReserveAsync(1);

        Assert.False(reservation.Granted);
    }

    [Fact]
    public async Task Settle_WithCharge_CommitsChargeAndCountsUsage()
    {
        var accountId = await fixture.CreateAccountAsync(balance: 100);
        var serviceId = TestIds.Service();
        var account = Account(accountId);
        var reservation = await account.ReserveAsync(30);
        Assert.True(reservation.Granted);

        await account.SettleBatchAsync(new SettlementBatch(30, 30, [new ServiceUsageDelta(serviceId, 1, 1, 0, 30)], [new HoldRelease(reservation.Hold, 30)]));
        var info = (await account.GetAsync())!;

        Assert.Equal(70, info.Balance);
        Assert.Equal(0, info.Reserved);
        Assert.Equal(70, info.Available);
        Assert.Equal(30, info.TotalCharged);
        Assert.Equal(1, info.Usage.Calls);
        Assert.Equal(1, info.Usage.Charged);
        Assert.Equal(0, info.Usage.Failed);
        Assert.Equal(1, info.Usage.CallsByService[serviceId]);
    }

    [Fact]
    public async Task Settle_WithZeroCharge_ReleasesReservation()
    {
        var accountId = await fixture.CreateAccountAsync(balance: 100);
        var serviceId = TestIds.Service();
        var account = Account(accountId);
        var reservation = await account.ReserveAsync(30);
        Assert.True(reservation.Granted);

        await account.SettleBatchAsync(new SettlementBatch(30, 0, [new ServiceUsageDelta(serviceId, 1, 0, 1, 0)], [new HoldRelease(reservation.Hold, 30)]));
        var info = (await account.GetAsync())!;

        Assert.Equal(100, info.Balance);
        Assert.Equal(0, info.Reserved);
        Assert.Equal(100, info.Available);
        Assert.Equal(0, info.TotalCharged);
        Assert.Equal(0, info.Usage.Charged);
        Assert.Equal(1, info.Usage.Failed);
        Assert.Equal(1, info.Usage.CallsByService[serviceId]);
    }

    [Fact]
    public async Task SettledThroughTheJournal_ThenDeactivate_ChargeIsRebuiltFromTheJournal()
    {
        var accountId = await fixture.CreateAccountAsync(balance: 100);
        var account = Account(accountId);
        var reservation = await account.ReserveAsync(12);
        Assert.True(reservation.Granted);
        await fixture.SettleThroughJournalAsync(TestIds.Key(), TestIds.Service(),
            [new AdmitResult(AdmitOutcome.Admitted, accountId, 12, reservation.Available, "EUR", Hold: reservation.Hold)]);
        Assert.Equal(0, (await account.GetAsync())!.Reserved);

        await ClusterFixture.DeactivateAsync(account);
        var reloaded = await account.GetAsync();

        Assert.Equal(88, reloaded!.Balance);
        Assert.Equal(12, reloaded.TotalCharged);
        Assert.Equal(1, reloaded.Usage.Calls);
    }
}
