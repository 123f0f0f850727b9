using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Time.Testing;

namespace Marketplace.Grains.Tests;

/// <summary>
/// Front doors admitting from leases of API keys (<see cref="KeyLeaseCache"/>), each built as a front door builds it, with
/// its own holder id, against a two-silo cluster that leases balances: limits stay exact over two front doors, a change
/// reaches them by push or by the lease lapsing, and a front door that vanishes gives its allowance back.
/// </summary>
[Collection(LeasingClusterFixture.Collection)]
public sealed class FrontDoorLeaseTests(LeasingClusterFixture fixture) : IClassFixture<LeasingClusterFixture>, IDisposable
{
    private const string Currency = TestFrontDoors.Currency;
    private readonly TestFrontDoors _doors = new(fixture.Grains);

    [Fact]
    public async Task TwoFrontDoors_ThousandsOfCallsOverADayQuota_AdmitExactlyTheQuota()
    {
        const int quota = 700;
        var (_, keyId, secret, serviceId) = await CreateAsync(balance: 1_000_000, price: 1, new KeyLimits(null, new Quota(quota, null), null, null));
        var doors = new[] { FrontDoor(), FrontDoor() };

        var results = await Task.WhenAll(Enumerable.Range(0, 4_000).Select(i =>
            doors[i % 2].AdmitAsync(keyId, secret, CredentialKind.KeySecret, serviceId, 1, Currency).AsTask()));

        Assert.Equal(quota, results.Count(r => r.Outcome == AdmitOutcome.Admitted));
        Assert.Equal(4_000 - quota, results.Count(r => r.Outcome == AdmitOutcome.QuotaExhausted));
        Assert.All(results.Where((r, i) => i % 2 == 0), r => Assert.NotEqual(AdmitOutcome.InvalidCredentials, r.Outcome));
        Assert.True(results.Where((r, i) => i % 2 == 0).Any(r => r.Outcome == AdmitOutcome.Admitted), "the first front door admitted nothing");
        Assert.True(results.Where((r, i) => i % 2 == 1).Any(r => r.Outcome == AdmitOutcome.Admitted), "the second front door admitted nothing");

        var key = await fixture.Grains.GetGrain<IApiKeyGrain>(keyId).GetAsync();
        Assert.Equal(quota, key!.Quotas!.Single(q => q.Window == "day" && q.ServiceId is null).Used);
    }

    [Fact]
    public async Task TwoFrontDoors_ThousandsOfCallsOverTheBalance_AdmitExactlyWhatItCovers()
    {
        const long balance = 3_000;
        const long price = 7;
        var (_, keyId, secret, serviceId) = await CreateAsync(balance, price, null);
        var doors = new[] { FrontDoor(), FrontDoor() };

        var results = await Task.WhenAll(Enumerable.Range(0, 1_000).Select(i =>
            doors[i % 2].AdmitAsync(keyId, secret, CredentialKind.KeySecret, serviceId, price, Currency).AsTask()));

        Assert.Equal(balance / price, results.Count(r => r.Outcome == AdmitOutcome.Admitted));
        Assert.Equal(1_000 - (balance / price), results.Count(r => r.Outcome == AdmitOutcome.InsufficientBalance));
        Assert.All(results.Where(r => r.Outcome == AdmitOutcome.Admitted), r => Assert.Equal(price, r.Reserved));
    }

    [Fact]
    public async Task Revocation_PushedToAnotherFrontDoor_RefusedThereWithoutWaitingForTheLease()
    {
        var (_, keyId, secret, serviceId) = await CreateAsync(balance: 1_000, price: 1, null);
        var time = new FakeTimeProvider(DateTimeOffset.UtcNow);
        var door = FrontDoor(time);
        Assert.Equal(AdmitOutcome.Admitted, (await door.AdmitAsync(keyId, secret, CredentialKind.KeySecret, serviceId, 1, Currency)).Outcome);

        await fixture.Grains.GetGrain<IApiKeyGrain>(keyId).SetStatusAsync(ApiKeyStatus.Revoked);

        // The front door's clock does not move: only the push can end its lease.
        var outcome = await Poll.UntilAsync(
            async () => (await door.AdmitAsync(keyId, secret, CredentialKind.KeySecret, serviceId, 1, Currency)).Outcome,
            o => o == AdmitOutcome.Revoked);
        Assert.Equal(AdmitOutcome.Revoked, outcome);
    }

    [Fact]
    public async Task Revocation_PushLost_RefusedOnceTheLeaseLapses()
    {
        var (_, keyId, secret, serviceId) = await CreateAsync(balance: 1_000, price: 1, null);
        var time = new FakeTimeProvider(DateTimeOffset.UtcNow);
        var door = FrontDoor(time, push: false);
        for (var i = 0; i < 8; i++)
        {
            Assert.Equal(AdmitOutcome.Admitted, (await door.AdmitAsync(keyId, secret, CredentialKind.KeySecret, serviceId, 1, Currency)).Outcome);
        }

        await fixture.Grains.GetGrain<IApiKeyGrain>(keyId).SetStatusAsync(ApiKeyStatus.Suspended);
        time.Advance(new LeaseOptions().Lifetime);

        Assert.Equal(AdmitOutcome.Suspended, (await door.AdmitAsync(keyId, secret, CredentialKind.KeySecret, serviceId, 1, Currency)).Outcome);
    }

    [Fact]
    public async Task NewSecret_NotInTheLeasedCredentials_IsCheckedByTheKey()
    {
        var (_, keyId, secret, serviceId) = await CreateAsync(balance: 1_000, price: 1, null);
        var door = FrontDoor(new FakeTimeProvider(DateTimeOffset.UtcNow));
        Assert.Equal(AdmitOutcome.Admitted, (await door.AdmitAsync(keyId, secret, CredentialKind.KeySecret, serviceId, 1, Currency)).Outcome);

        var rotated = await fixture.Grains.GetGrain<IApiKeyGrain>(keyId).RotateAsync(TimeSpan.FromHours(1));
        var newSecret = rotated!.ApiKey[(rotated.ApiKey.IndexOf('.') + 1)..];

        Assert.Equal(AdmitOutcome.Admitted, (await door.AdmitAsync(keyId, newSecret, CredentialKind.KeySecret, serviceId, 1, Currency)).Outcome);
        Assert.Equal(AdmitOutcome.InvalidCredentials, (await door.AdmitAsync(keyId, newSecret + "x", CredentialKind.KeySecret, serviceId, 1, Currency)).Outcome);
    }

    [Fact]
    public async Task FrontDoorGone_WithUnspentAllowance_TheKeyTakesItBackCountingWhatItsJournalSettled()
    {
        var (_, keyId, secret, serviceId) = await CreateAsync(balance: 1_000_000, price: 1, new KeyLimits(null, new Quota(100_000, null), null, null));
        var door = FrontDoor();
        const int spent = 40;
        for (var i = 0; i < spent; i++)
        {
            Assert.Equal(AdmitOutcome.Admitted, (await door.AdmitAsync(keyId, secret, CredentialKind.KeySecret, serviceId, 1, Currency)).Outcome);
        }

        // The front door vanishes holding what it leased: it never reports. Its journal had settled what it spent.
        var holder = door.Holder;
        door.Dispose();
        var key = fixture.Grains.GetGrain<IApiKeyGrain>(keyId);
        Assert.True(DayUsed(await key.GetAsync()) > spent, "the front door held no unspent allowance");
        await key.RecordBatchAsync([new ServiceUsageDelta(serviceId, spent, spent, 0, spent)], new DeliveryId(holder, 1));

        var used = await PollLongAsync(async () => DayUsed(await key.GetAsync()), u => u == spent);
        Assert.Equal(spent, used);
    }

    [Fact]
    public async Task FrontDoorGone_BetweenCommittingABatchAndSettlingIt_TheKeyFetchesTheBatch_CountsItsCallsAndChargesTheAccount()
    {
        const int delivered = 10;
        const int committedOnly = 30;
        var (accountId, keyId, secret, serviceId) = await CreateAsync(balance: 1_000_000, price: 1, new KeyLimits(null, new Quota(100_000, null), null, null));
        var services = FrontDoorServices(time: null, push: true);
        var door = services.GetRequiredService<KeyLeaseCache>();
        var journal = services.GetRequiredService<MemoryJournal>();
        var admitted = new List<AdmitResult>();
        for (var i = 0; i < delivered + committedOnly; i++)
        {
            var result = await door.AdmitAsync(keyId, secret, CredentialKind.KeySecret, serviceId, 1, Currency);
            Assert.Equal(AdmitOutcome.Admitted, result.Outcome);
            admitted.Add(result);
        }

        // The first calls' batch reaches the key and the account; the rest is committed, then the front door dies before
        // sending its settlements (and never reports its lease).
        await WriteBatchAsync(journal, keyId, serviceId, admitted[..delivered]);
        await services.GetRequiredService<SettlementBatcher>().DrainAsync();
        journal.SendsSettlements = false;
        await WriteBatchAsync(journal, keyId, serviceId, admitted[delivered..]);
        door.Dispose();
        var key = fixture.Grains.GetGrain<IApiKeyGrain>(keyId);
        var account = fixture.Grains.GetGrain<IAccountGrain>(accountId);
        Assert.Equal(delivered, (await key.GetAsync())!.Usage.Calls);
        Assert.True(DayUsed(await key.GetAsync()) > delivered + committedOnly, "the front door held no unspent allowance");

        // Once the lease is reclaimed, the key counts every call the journal holds: none of the spent ones is given back.
        var used = await PollLongAsync(async () => DayUsed(await key.GetAsync()), u => u <= delivered + committedOnly);
        var info = await PollLongAsync(account.GetAsync, a => a!.TotalCharged == delivered + committedOnly);

        Assert.Equal(delivered + committedOnly, used);
        Assert.Equal(delivered + committedOnly, (await key.GetAsync())!.Usage.Calls);
        Assert.Equal(delivered + committedOnly, info!.TotalCharged);
        Assert.Equal(delivered + committedOnly, info.Usage.Calls);
        Assert.Equal(1_000_000 - delivered - committedOnly, info.Balance);
    }

    private static async Task WriteBatchAsync(MemoryJournal journal, string keyId, string serviceId, IEnumerable<AdmitResult> admitted)
    {
        foreach (var call in admitted)
        {
            await journal.WriteAsync(new CallRecord(Guid.CreateVersion7(), "fetched", DateTimeOffset.UtcNow, call.AccountId, keyId, serviceId, "v1",
                CallOutcome.Succeeded, null, 200, 1, 1, call.Reserved, call.Reserved, call.Currency, null, call.Reserved, call.Hold,
                call.WindowOffsetMinutes, call.Epoch), CancellationToken.None);
        }

        journal.Flush();
    }

    [Fact]
    public void Sizing_LeasesAheadOfNeed_NeverReachIntoTheQuotasTail()
    {
        foreach (var limit in new long[] { 1, 7, 100, 1_000, 1_000_000 })
        {
            var tail = Math.Clamp(limit / 16, 1, 64);
            var left = limit;
            for (var calls = KeyLeaseSizing.QuotaCalls(left, limit, waiting: false); calls > 0; calls = KeyLeaseSizing.QuotaCalls(left, limit, waiting: false))
            {
                left -= calls;
            }

            Assert.True(left >= tail, $"limit {limit}: leases ahead of need left {left}, inside the tail of {tail}");
            Assert.Equal(1, KeyLeaseSizing.QuotaCalls(Math.Min(left, tail), limit, waiting: true));
        }

        Assert.Equal(0, KeyLeaseSizing.QuotaCalls(0, 100, waiting: true));
        Assert.Equal(0, KeyLeaseSizing.RateCalls(0.9, waiting: true));
        Assert.Equal(1, KeyLeaseSizing.RateCalls(1.5, waiting: true));
        Assert.Equal(0, KeyLeaseSizing.RateCalls(1.5, waiting: false));
        Assert.Equal(50, KeyLeaseSizing.RateCalls(100, waiting: false));
    }

    [Fact]
    public void Ledger_ReportedTwiceOrByAnotherActivation_GivesBackOnce()
    {
        var ledger = new KeyLeaseLedger();
        var holder = Guid.NewGuid();
        var now = DateTimeOffset.UtcNow;
        var id = ledger.Grant(holder, null, new GrantedLease("s", 1, [new GrantedPart(11, 6, now), new GrantedPart(12, 4, now)], []), now);

        Assert.Empty(ledger.End(holder, [new LeaseReport(id + 1, 0)], now));
        Assert.Empty(ledger.End(Guid.NewGuid(), [new LeaseReport(id, 0)], now));
        var returned = Assert.Single(ledger.End(holder, [new LeaseReport(id, 7)], now));
        Assert.Equal(3, returned.Unused);
        Assert.Equal([new GrantedPart(12, 3, now)], returned.Lease.Unspent(returned.Unused));
        Assert.Empty(ledger.End(holder, [new LeaseReport(id, 7)], now));
        Assert.False(ledger.AnyOpen);
    }

    [Fact]
    public void Ledger_LeaseNeverReported_ReclaimedAfterItLapsesCountingSettledCalls()
    {
        var ledger = new KeyLeaseLedger();
        var holder = Guid.NewGuid();
        var now = DateTimeOffset.UtcNow;
        var lifetime = TimeSpan.FromSeconds(1);
        var reclaimAfter = TimeSpan.FromSeconds(5);
        ledger.Grant(holder, null, new GrantedLease("s", 1, [new GrantedPart(11, 10, now)], []), now);
        ledger.Settled(holder, 4);

        Assert.Empty(ledger.Reclaim(now + lifetime + reclaimAfter - TimeSpan.FromMilliseconds(1), lifetime, reclaimAfter));
        var returned = Assert.Single(ledger.Reclaim(now + lifetime + reclaimAfter, lifetime, reclaimAfter));
        Assert.Equal(6, returned.Unused);
        Assert.False(ledger.AnyOpen);
    }

    private static long DayUsed(ApiKeyInfo? key) => key!.Quotas!.Single(q => q.Window == "day" && q.ServiceId is null).Used;

    private static Task<T> PollLongAsync<T>(Func<Task<T>> read, Func<T, bool> done) => TestFrontDoors.PollLongAsync(read, done);

    // A front door's services, as a front door process registers them, with its own journal (so its own holder id).
    private KeyLeaseCache FrontDoor(TimeProvider? time = null, bool push = true) =>
        FrontDoorServices(time, push).GetRequiredService<KeyLeaseCache>();

    private ServiceProvider FrontDoorServices(TimeProvider? time, bool push) => _doors.Build(time, push);

    private async Task<(string AccountId, string KeyId, string Secret, string ServiceId)> CreateAsync(long balance, long price, KeyLimits? limits)
    {
        var (accountId, serviceId) = await _doors.CreateServiceAndAccountAsync(price, balance);
        var (keyId, secret) = await _doors.CreateKeyAsync(accountId, serviceId, limits);
        return (accountId, keyId, secret, serviceId);
    }

    public void Dispose() => _doors.Dispose();
}
