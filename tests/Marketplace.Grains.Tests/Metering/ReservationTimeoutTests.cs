using Microsoft.Extensions.DependencyInjection;
using Orleans.Hosting;
using Orleans.Storage;
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
    public async Task AccountActivationLost_WhileAKeyHoldsALease_TheNewActivationWithholdsIt_SoTheBalanceNeverGoesPastItsLimit()
    {
        // Price 100, a lease of 32 calls: 3,300 held for a key (granted only with 16 times the lease available).
        var (account, _, serviceId) = await CreateAsync(balance: 100_000, keyCount: 1);
        var lessee = await account.ReserveWithLeaseAsync(new LeaseRequest(TestIds.Key(), 100, [], 32, 0));
        Assert.True(lessee.Granted);
        Assert.Equal(3_200, lessee.Lease);

        // The ceiling of the account's holds was stored before the lease was granted: a killed silo loses nothing more.
        var stored = await ReadStoredAsync(account);
        Assert.InRange(stored.ReservedCeiling, 3_300, 100_000);

        // The account's activation is lost (its silo killed, or the grain moved: either way its holds are gone with it) while
        // the key still holds the lease. The new activation withholds what the old one may have held.
        await ClusterFixture.DeactivateAsync(account);
        var moved = (await account.GetAsync())!;
        Assert.Equal(stored.ReservedCeiling, moved.Withheld);
        Assert.Equal(moved.Withheld, moved.Reserved);
        Assert.Equal(100_000 - moved.Withheld, moved.Available);

        // Everything available is spent elsewhere; then the key spends its lease (its calls settle naming the old hold).
        var rest = await account.ReserveAsync(moved.Available);
        Assert.True(rest.Granted);
        Assert.False((await account.ReserveAsync(1)).Granted);
        await account.SettleBatchAsync(new SettlementBatch(3_300, 3_300, [new ServiceUsageDelta(serviceId, 33, 33, 0, 3_300)],
            [new HoldRelease(lessee.Hold, 3_300)], new DeliveryId(Guid.NewGuid(), 1)));
        await account.SettleBatchAsync(new SettlementBatch(moved.Available, moved.Available, [new ServiceUsageDelta(serviceId, 1, 1, 0, moved.Available)],
            [new HoldRelease(rest.Hold, moved.Available)], new DeliveryId(Guid.NewGuid(), 1)));

        // Never past the limit (0): both were covered, and what the old activation's settlement released came off the withheld
        // amount, which keeps only the ceiling's margin.
        var settled = (await account.GetAsync())!;
        Assert.Equal(100_000 - 3_300 - moved.Available, settled.Balance);
        Assert.True(settled.Balance >= 0, $"balance {settled.Balance}: overdrawn");
        Assert.Equal(moved.Withheld - 3_300, settled.Withheld);
        Assert.Equal(settled.Withheld, settled.Reserved);
        Assert.Equal(settled.Balance - settled.Withheld, settled.Available);

        // A returned lease naming the old activation's hold releases nothing: it may have reached the old activation before.
        await account.ReturnLeaseAsync(TestIds.Key(), [new HoldRelease(lessee.Hold, 100)], 0);
        Assert.Equal(settled.Withheld, (await account.GetAsync())!.Withheld);

        // What is left ends once every hold the old activation could have made has expired.
        fixture.Time.Advance(Expiry + TimeSpan.FromSeconds(1));
        var expired = (await account.GetAsync())!;
        Assert.Equal(0, expired.Withheld);
        Assert.Equal(0, expired.Reserved);
        Assert.Equal(settled.Balance, expired.Available);
    }

    [Fact]
    public async Task HoldCeiling_IsRaisedWithFewWrites_AndLoweredOnceTheHoldsShrink()
    {
        var (account, _, _) = await CreateAsync(balance: 1_000_000, keyCount: 1);

        // Holds growing call by call (calls in flight): the ceiling goes a quarter above what is needed each time, so 200
        // holds of 10 are covered by about log(200) / log(1.25) raises, not 200 writes. Each grant is within what is stored.
        var versions = new HashSet<string>();
        var holds = new List<long>();
        for (var i = 0; i < 200; i++)
        {
            var reservation = await account.ReserveAsync(10);
            Assert.True(reservation.Granted);
            holds.Add(reservation.Hold);
            var stored = await ReadStoredGrainStateAsync(account);
            Assert.True(stored.State!.ReservedCeiling >= (i + 1) * 10, $"{(i + 1) * 10} held with a stored ceiling of {stored.State.ReservedCeiling}");
            versions.Add(stored.ETag!);
        }

        Assert.InRange(versions.Count, 2, 30);

        // Everything settles. The ceiling is reviewed once a minute against the most held over the last two, so it stays while
        // the busy minute is one of them and comes down at the third review.
        await account.SettleBatchAsync(new SettlementBatch(2_000, 0, [], [.. holds.Select(hold => new HoldRelease(hold, 10)).DistinctBy(r => r.Hold)
            .Select(r => new HoldRelease(r.Hold, 10 * holds.Count(h => h == r.Hold)))], new DeliveryId(Guid.NewGuid(), 1)));
        Assert.Equal(0, (await account.GetAsync())!.Reserved);
        var peak = (await ReadStoredAsync(account)).ReservedCeiling;
        for (var minute = 1; minute <= 3; minute++)
        {
            fixture.Time.Advance(TimeSpan.FromMinutes(1));
            Assert.True((await account.ReserveAsync(10)).Granted);
            if (minute < 3)
            {
                Assert.Equal(peak, (await ReadStoredAsync(account)).ReservedCeiling);
            }
        }

        // Lowered in memory (written behind, no write before it): a new activation withholds a quarter above the 30 now held.
        await ClusterFixture.DeactivateAsync(account);
        Assert.InRange((await account.GetAsync())!.Withheld, 30, 38);
    }

    private async Task<AccountState> ReadStoredAsync(IAccountGrain account) => (await ReadStoredGrainStateAsync(account)).State!;

    private async Task<GrainState<AccountState>> ReadStoredGrainStateAsync(IAccountGrain account)
    {
        var silo = (InProcessSiloHandle)fixture.Cluster.Primary!;
        var storage = silo.ServiceProvider.GetRequiredKeyedService<IGrainStorage>(StorageNames.Marketplace);
        var state = new GrainState<AccountState>();
        await storage.ReadStateAsync("account", account.GetGrainId(), state);
        return state;
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
