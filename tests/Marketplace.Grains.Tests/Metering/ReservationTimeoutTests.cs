using Microsoft.Extensions.DependencyInjection;
using Orleans.Hosting;
using Orleans.TestingHost;

namespace Marketplace.Grains.Tests.Metering;

/// <summary>A two-silo cluster with leasing on (32 calls), the default reservation timeout and its own manual clock.</summary>
public sealed class ReservationTimeoutClusterFixture : TwoSiloCluster<ReservationTimeoutClusterFixture.SiloConfigurator>
{
    public static ManualTimeProvider SharedTime { get; } = new(DateTimeOffset.FromUnixTimeMilliseconds(DateTimeOffset.UtcNow.ToUnixTimeMilliseconds()));

    public ManualTimeProvider Time => SharedTime;

    public sealed class SiloConfigurator : ISiloConfigurator
    {
        public void Configure(ISiloBuilder siloBuilder)
        {
            siloBuilder.AddMemoryGrainStorage(StorageNames.Marketplace);
            siloBuilder.Services.AddMarketplaceGrains();
            siloBuilder.Services.AddSingleton<TimeProvider>(SharedTime);
            siloBuilder.Services.Configure<MeteringOptions>(o => o.LeaseCalls = 32);
        }
    }
}

/// <summary>
/// Money held for a call whose settlement never comes (its front door crashed) or leased to a key activation that died
/// is given back after <see cref="MeteringOptions.ReservationTimeout"/>, and never sooner.
/// </summary>
public sealed class ReservationTimeoutTests(ReservationTimeoutClusterFixture fixture) : IClassFixture<ReservationTimeoutClusterFixture>
{
    private static readonly TimeSpan Timeout = new MeteringOptions().ReservationTimeout;

    // A hold takes reservations for a tenth of the timeout and expires a timeout later.
    private static readonly TimeSpan Expiry = Timeout + (Timeout / 10);

    [Fact]
    public async Task Admission_NeverSettled_IsReleasedAfterTheTimeout_AndALateSettlementStillChargesOnce()
    {
        var (account, keys, serviceId) = await CreateAsync(balance: 100, keyCount: 1);
        var (keyId, secret) = keys[0];

        // Price 30 with 100 in the account: no lease (it would need 16 times the leased amount), a plain reservation.
        var admitted = await fixture.Grains.GetGrain<IApiKeyGrain>(keyId).AdmitAsync(new AdmitRequest(secret, serviceId, 30, "EUR", "t1"));
        Assert.Equal(AdmitOutcome.Admitted, admitted.Outcome);
        Assert.NotEqual(0, admitted.Hold);

        // The front door that admitted it dies: no settlement. Just before the timeout the money is still held.
        fixture.Time.Advance(Timeout - TimeSpan.FromSeconds(1));
        Assert.Equal(30, (await account.GetAsync())!.Reserved);

        fixture.Time.Advance(Expiry - Timeout + TimeSpan.FromSeconds(2));
        var released = (await account.GetAsync())!;
        Assert.Equal(0, released.Reserved);
        Assert.Equal(100, released.Available);

        // A new call holds 30; the old call's settlement arriving now charges it but must not free the new call's hold.
        var next = await fixture.Grains.GetGrain<IApiKeyGrain>(keyId).AdmitAsync(new AdmitRequest(secret, serviceId, 30, "EUR", "t2"));
        Assert.Equal(AdmitOutcome.Admitted, next.Outcome);
        await account.SettleBatchAsync(new SettlementBatch(30, 30, [new ServiceUsageDelta(serviceId, 1, 1, 0, 30)], [new HoldRelease(admitted.Hold, 30)]));
        var after = (await Poll.UntilAsync(() => account.GetAsync(), a => a!.Balance != 100))!;
        Assert.Equal(70, after.Balance);
        Assert.Equal(30, after.Reserved);
        Assert.Equal(40, after.Available);
    }

    [Fact]
    public async Task LeaseOfADeadKeyActivation_StopsBlockingRefusals_AfterTheTimeout()
    {
        var (account, keys, serviceId) = await CreateAsync(balance: 10_000, keyCount: 1);
        var (keyId, secret) = keys[0];

        // A key activation that took a lease and died with its silo: it never hands the lease back, not even when recalled
        // (this key id has no grain state, so a recall reaches nobody who holds anything).
        var ghost = await account.ReserveWithLeaseAsync(new LeaseRequest(TestIds.Key(), 1, [], 32, 0));
        Assert.True(ghost.Granted);
        Assert.Equal(32, ghost.Lease);

        // Asking for more than is available while a lease is out: the account recalls it and says "retry".
        var available = (await account.GetAsync())!.Available;
        var blocked = await account.ReserveWithLeaseAsync(new LeaseRequest(keyId, available + 1, [], 0, 0));
        Assert.False(blocked.Granted);
        Assert.True(blocked.Retry);

        fixture.Time.Advance(Expiry + TimeSpan.FromSeconds(1));

        // The dead lessee's hold expired: its 33 are free again and nothing is recalled any more, so a refusal is final at once.
        var info = (await account.GetAsync())!;
        Assert.Equal(0, info.Reserved);
        Assert.Equal(10_000, info.Available);
        var refused = await account.ReserveWithLeaseAsync(new LeaseRequest(keyId, 10_001, [], 0, 0));
        Assert.False(refused.Granted);
        Assert.False(refused.Retry);

        var admitted = await fixture.Grains.GetGrain<IApiKeyGrain>(keyId).AdmitAsync(new AdmitRequest(secret, serviceId, 10_000, "EUR", "all"));
        Assert.Equal(AdmitOutcome.Admitted, admitted.Outcome);
    }

    [Fact]
    public async Task BusyKey_RenewsALeaseOlderThanAFifthOfTheTimeout_SoItsHoldNeverExpiresUnderIt()
    {
        var (account, keys, serviceId) = await CreateAsync(balance: 1_000_000, keyCount: 1);
        var (keyId, secret) = keys[0];
        var key = fixture.Grains.GetGrain<IApiKeyGrain>(keyId);

        var first = await key.AdmitAsync(new AdmitRequest(secret, serviceId, 1, "EUR", "first"));
        Assert.Equal(AdmitOutcome.Admitted, first.Outcome);
        Assert.Equal(1 + 32, (await account.GetAsync())!.Reserved);

        // The lease covers 31 more calls. Once it is older than a fifth of the timeout the key hands it back (its timer
        // runs every second even while calls keep it busy), so a later call is reserved in a newer hold. Without the
        // renewal, the next 31 calls would all come from the old hold.
        fixture.Time.Advance((Timeout / 5) + TimeSpan.FromSeconds(1));
        var holds = new HashSet<long> { first.Hold };
        for (var i = 0; i < 31 && holds.Count == 1; i++)
        {
            var next = await key.AdmitAsync(new AdmitRequest(secret, serviceId, 1, "EUR", "n" + i));
            Assert.Equal(AdmitOutcome.Admitted, next.Outcome);
            holds.Add(next.Hold);
            if (holds.Count == 1)
            {
                // Poll for the key's one-second timer; a call every 100 ms keeps the lease "in use".
                await Task.Delay(100, TestContext.Current.CancellationToken);
            }
        }

        Assert.Equal(2, holds.Count);
    }

    private async Task<(IAccountGrain Account, List<(string KeyId, string Secret)> Keys, string ServiceId)> CreateAsync(long balance, int keyCount)
    {
        var accountId = TestIds.Account();
        var serviceId = TestIds.Service();
        var account = fixture.Grains.GetGrain<IAccountGrain>(accountId);
        await account.CreateAsync(new AccountSpec("a", "EUR", 0));
        await account.TopUpAsync(balance, "test");
        var keys = new List<(string, string)>();
        for (var i = 0; i < keyCount; i++)
        {
            var keyId = TestIds.Key();
            var created = await fixture.Grains.GetGrain<IApiKeyGrain>(keyId).CreateAsync(new ApiKeySpec(accountId, "k", [serviceId], null));
            keys.Add((keyId, created.ApiKey[(created.ApiKey.IndexOf('.') + 1)..]));
        }

        return (account, keys, serviceId);
    }
}
