using System.Text.Json;
using System.Text.RegularExpressions;

namespace Marketplace.Grains.Tests;

[Collection(ClusterCollection.Name)]
public sealed class ApiKeyGrainTests(ClusterFixture fixture)
{
    private const string Eur = ClusterFixture.Currency;

    private IApiKeyGrain Key(string keyId) => fixture.Grains.GetGrain<IApiKeyGrain>(keyId);

    private IAccountGrain Account(string accountId) => fixture.Grains.GetGrain<IAccountGrain>(accountId);

    [Fact]
    public async Task Create_NewKey_ReturnsFullKeyOnceAndGetNeverExposesSecret()
    {
        var accountId = await fixture.CreateAccountAsync(balance: 10);
        var serviceId = TestIds.Service();
        var (keyId, secret, created) = await fixture.CreateKeyAsync(accountId, [serviceId, serviceId]);

        Assert.Matches(new Regex($"^mk_{keyId}\\.[A-Za-z0-9_-]{{43}}$"), created.ApiKey);
        Assert.Equal(keyId, created.Key.KeyId);
        Assert.Equal(accountId, created.Key.AccountId);
        Assert.Equal(ApiKeyStatus.Active, created.Key.Status);
        Assert.Equal([serviceId], created.Key.Services);
        Assert.Equal(fixture.Time.GetUtcNow(), created.Key.CreatedAt);
        Assert.DoesNotContain(secret, JsonSerializer.Serialize(created.Key), StringComparison.Ordinal);

        var info = await Key(keyId).GetAsync();
        Assert.NotNull(info);
        Assert.Equal(keyId, info.KeyId);
        Assert.DoesNotContain(secret, JsonSerializer.Serialize(info), StringComparison.Ordinal);

        var account = await Account(accountId).GetAsync();
        Assert.Contains(keyId, account!.KeyIds);
    }

    [Fact]
    public async Task Authenticate_RightAndWrongSecret_OnlyRightOneReturnsKey()
    {
        var accountId = await fixture.CreateAccountAsync(balance: 10);
        var (keyId, secret, _) = await fixture.CreateKeyAsync(accountId, [TestIds.Service()]);

        Assert.Equal(keyId, (await Key(keyId).AuthenticateAsync(secret))?.KeyId);
        Assert.Null(await Key(keyId).AuthenticateAsync(ApiKeySecrets.NewSecret()));
    }

    [Fact]
    public async Task Admit_RightSecret_AdmittedAndReservesPrice()
    {
        var accountId = await fixture.CreateAccountAsync(balance: 100);
        var serviceId = TestIds.Service();
        var (keyId, secret, _) = await fixture.CreateKeyAsync(accountId, [serviceId]);

        var result = await Key(keyId).AdmitAsync(new AdmitRequest(secret, serviceId, 7, Eur, "track-0001"));

        Assert.Equal(AdmitOutcome.Admitted, result.Outcome);
        Assert.Equal(accountId, result.AccountId);
        Assert.Equal(7, result.Reserved);
        Assert.Equal(93, result.Available);
        Assert.Equal(Eur, result.Currency);
        var account = await Account(accountId).GetAsync();
        Assert.Equal(100, account!.Balance);
        Assert.Equal(7, account.Reserved);
        Assert.Equal(93, account.Available);
    }

    [Fact]
    public async Task Admit_WrongSecret_InvalidCredentialsAndNothingReserved()
    {
        var accountId = await fixture.CreateAccountAsync(balance: 100);
        var serviceId = TestIds.Service();
        var (keyId, secret, _) = await fixture.CreateKeyAsync(accountId, [serviceId]);

        var wrong = await Key(keyId).AdmitAsync(new AdmitRequest(ApiKeySecrets.NewSecret(), serviceId, 7, Eur, "track-0001"));
        var truncated = await Key(keyId).AdmitAsync(new AdmitRequest(secret[..^1], serviceId, 7, Eur, "track-0002"));

        Assert.Equal(AdmitOutcome.InvalidCredentials, wrong.Outcome);
        Assert.Equal(AdmitOutcome.InvalidCredentials, truncated.Outcome);
        Assert.Null(wrong.AccountId);
        Assert.Equal(0, (await Account(accountId).GetAsync())!.Reserved);
    }

    [Fact]
    public async Task Admit_UnknownKey_InvalidCredentials()
    {
        var result = await Key(TestIds.Key()).AdmitAsync(new AdmitRequest(ApiKeySecrets.NewSecret(), TestIds.Service(), 1, Eur, "track-0001"));

        Assert.Equal(AdmitOutcome.InvalidCredentials, result.Outcome);
    }

    [Fact]
    public async Task Admit_ServiceNotInEntitlement_NotEntitled()
    {
        var accountId = await fixture.CreateAccountAsync(balance: 100);
        var (keyId, secret, _) = await fixture.CreateKeyAsync(accountId, [TestIds.Service()]);

        var result = await Key(keyId).AdmitAsync(new AdmitRequest(secret, TestIds.Service(), 1, Eur, "track-0001"));

        Assert.Equal(AdmitOutcome.NotEntitled, result.Outcome);
        Assert.Equal(0, (await Account(accountId).GetAsync())!.Reserved);
    }

    [Fact]
    public async Task Admit_SuspendedThenResumed_SuspendedThenAdmitted()
    {
        var accountId = await fixture.CreateAccountAsync(balance: 100);
        var serviceId = TestIds.Service();
        var (keyId, secret, _) = await fixture.CreateKeyAsync(accountId, [serviceId]);
        var request = new AdmitRequest(secret, serviceId, 1, Eur, "track-0001");

        Assert.Equal(ApiKeyStatus.Suspended, (await Key(keyId).SetStatusAsync(ApiKeyStatus.Suspended))!.Status);
        var suspended = await Key(keyId).AdmitAsync(request);
        Assert.Equal(ApiKeyStatus.Active, (await Key(keyId).SetStatusAsync(ApiKeyStatus.Active))!.Status);
        var resumed = await Key(keyId).AdmitAsync(request);

        Assert.Equal(AdmitOutcome.Suspended, suspended.Outcome);
        Assert.Equal(AdmitOutcome.Admitted, resumed.Outcome);
        Assert.Equal(1, (await Account(accountId).GetAsync())!.Reserved);
    }

    [Fact]
    public async Task Admit_Revoked_RevokedAndCannotBeResumed()
    {
        var accountId = await fixture.CreateAccountAsync(balance: 100);
        var serviceId = TestIds.Service();
        var (keyId, secret, _) = await fixture.CreateKeyAsync(accountId, [serviceId]);
        var request = new AdmitRequest(secret, serviceId, 1, Eur, "track-0001");

        await Key(keyId).SetStatusAsync(ApiKeyStatus.Revoked);

        Assert.Equal(AdmitOutcome.Revoked, (await Key(keyId).AdmitAsync(request)).Outcome);
        await Assert.ThrowsAsync<InvalidOperationException>(() => Key(keyId).SetStatusAsync(ApiKeyStatus.Active));
        await Assert.ThrowsAsync<InvalidOperationException>(() => Key(keyId).SetStatusAsync(ApiKeyStatus.Suspended));
        Assert.Equal(ApiKeyStatus.Revoked, (await Key(keyId).GetAsync())!.Status);
        Assert.Equal(AdmitOutcome.Revoked, (await Key(keyId).AdmitAsync(request)).Outcome);
    }

    [Fact]
    public async Task Admit_AfterExpiry_Expired()
    {
        var accountId = await fixture.CreateAccountAsync(balance: 100);
        var serviceId = TestIds.Service();
        var (keyId, secret, _) = await fixture.CreateKeyAsync(accountId, [serviceId], fixture.Time.GetUtcNow().AddHours(1));
        var request = new AdmitRequest(secret, serviceId, 1, Eur, "track-0001");

        var before = await Key(keyId).AdmitAsync(request);
        fixture.Time.Advance(TimeSpan.FromHours(2));
        var reservedBefore = (await Account(accountId).GetAsync())!.Reserved;
        var after = await Key(keyId).AdmitAsync(request);

        Assert.Equal(AdmitOutcome.Admitted, before.Outcome);
        Assert.Equal(AdmitOutcome.Expired, after.Outcome);
        Assert.Equal(reservedBefore, (await Account(accountId).GetAsync())!.Reserved);
    }

    [Fact]
    public async Task Admit_OtherCurrency_CurrencyMismatchAndNothingReserved()
    {
        var accountId = await fixture.CreateAccountAsync(balance: 100);
        var serviceId = TestIds.Service();
        var (keyId, secret, _) = await fixture.CreateKeyAsync(accountId, [serviceId]);

        var result = await Key(keyId).AdmitAsync(new AdmitRequest(secret, serviceId, 5, "USD", "track-0001"));

        Assert.Equal(AdmitOutcome.CurrencyMismatch, result.Outcome);
        Assert.Equal(0, result.Reserved);
        var account = await Account(accountId).GetAsync();
        Assert.Equal(0, account!.Reserved);
        Assert.Equal(100, account.Available);
    }

    [Fact]
    public async Task Admit_PriceZero_AdmittedWithoutTouchingBalance()
    {
        var accountId = await fixture.CreateAccountAsync(balance: 0);
        var serviceId = TestIds.Service();
        var (keyId, secret, _) = await fixture.CreateKeyAsync(accountId, [serviceId]);

        var result = await Key(keyId).AdmitAsync(new AdmitRequest(secret, serviceId, 0, Eur, "track-0001"));

        Assert.Equal(AdmitOutcome.Admitted, result.Outcome);
        Assert.Equal(0, result.Reserved);
        var account = await Account(accountId).GetAsync();
        Assert.Equal(0, account!.Balance);
        Assert.Equal(0, account.Reserved);
    }

    [Fact]
    public async Task Admit_PriceAboveAvailable_InsufficientBalance()
    {
        var accountId = await fixture.CreateAccountAsync(balance: 5);
        var serviceId = TestIds.Service();
        var (keyId, secret, _) = await fixture.CreateKeyAsync(accountId, [serviceId]);

        var result = await Key(keyId).AdmitAsync(new AdmitRequest(secret, serviceId, 6, Eur, "track-0001"));

        Assert.Equal(AdmitOutcome.InsufficientBalance, result.Outcome);
        Assert.Equal(5, result.Available);
        Assert.Equal(0, (await Account(accountId).GetAsync())!.Reserved);
    }

    [Fact]
    public async Task Create_UnknownAccount_ThrowsKeyNotFoundAndKeyNotIssued()
    {
        var keyId = TestIds.Key();

        await Assert.ThrowsAsync<KeyNotFoundException>(
            () => Key(keyId).CreateAsync(new ApiKeySpec(TestIds.Account(), "k", [TestIds.Service()], null)));
        Assert.Null(await Key(keyId).GetAsync());
    }

    [Fact]
    public async Task Create_SameKeyIdTwice_ThrowsAndKeepsFirstSecret()
    {
        var accountId = await fixture.CreateAccountAsync(balance: 100);
        var serviceId = TestIds.Service();
        var (keyId, secret, _) = await fixture.CreateKeyAsync(accountId, [serviceId]);

        await Assert.ThrowsAsync<InvalidOperationException>(
            () => Key(keyId).CreateAsync(new ApiKeySpec(accountId, "again", [serviceId], null)));
        Assert.Equal(AdmitOutcome.Admitted, (await Key(keyId).AdmitAsync(new AdmitRequest(secret, serviceId, 1, Eur, "track-0001"))).Outcome);
    }

    [Fact]
    public async Task Create_MalformedKeyId_ThrowsArgumentException()
    {
        var accountId = await fixture.CreateAccountAsync(balance: 0);

        await Assert.ThrowsAsync<ArgumentException>(
            () => Key("Not-A-Key").CreateAsync(new ApiKeySpec(accountId, "k", [TestIds.Service()], null)));
    }
}
