using System.Globalization;
using System.Net;
using System.Text.Json;
using Marketplace.Silo.Tests.Infrastructure;

namespace Marketplace.Silo.Tests.Faults;

/// <summary>
/// "A balance never goes below its credit limit" (DESIGN §3, promises 2 and 3) when the silo hosting a hot account grain is
/// SIGKILLed or SIGSTOPped while the account's keys hold leases of its balance, on three real host processes: paced calls
/// spread over many keys of the one account go to the two other front doors until the balance is spent.
/// </summary>
/// <remarks>
/// A key holds a lease of its account's balance (see <c>AccountGrain.Grant</c>): money the account has set aside for it,
/// which the key spends without asking. The account's new activation on a survivor rebuilds its balance from the journal,
/// while the keys on the survivors still hold (and go on spending) what the old activation leased them: an activation that
/// does not know of those leases can lease the same money again.
/// <para>How the run makes that happen: the account leases only while its available balance covers 16 × 32 calls for every
/// lease then out, so with <see cref="LoadMoney"/> the first three keys to call take a lease each and nobody else does. The
/// load calls only keys whose grains are on the survivors (a key on the victim loses its lease with the account), each one
/// every <see cref="KeyCallInterval"/>: often enough that a lease is never idle for the second after which its key hands it
/// back, rarely enough that a lease of 32 calls lasts about 25 s. So the three leases are still mostly unspent when the fault
/// comes (at <see cref="KillBelow"/> available), and still when the new activation has spent the rest, seconds after it took
/// over.
/// The load goes on until no call has been answered 200 for <see cref="SpentAfter"/>: whatever the keys held is spent by then
/// and shows in the charges.</para>
/// Each run asserts:
/// <list type="bullet">
/// <item>money: what the calls answered 200 spent (the account's charges, plus the price of those a kill lost, at most the
/// calls of the loss window) is at most the balance plus the credit limit, so the final balance is at least minus the credit
/// limit;</item>
/// <item>no call charged twice, every 200 in the call log, and afterwards every account and key reconciles with the journal
/// with no difference;</item>
/// <item>recovery within the bounds of <see cref="SiloFailoverTests"/>: the later of the first call decided (200 or 402)
/// after the last failed one, and the account answering an admin read through a survivor again (the callers have no short
/// timeout, so during a kill's short outage calls wait rather than fail).</item>
/// </list>
/// </remarks>
[Collection(PostgresCollection.Name)]
public sealed class AccountFailoverTests(FailoverClusterFixture fixture) : IClassFixture<FailoverClusterFixture>
{
    private const long Price = 1;
    private const long CreditLimit = 20;

    // Keys created; the load calls those whose grains are on the survivors, at most MaxLoadKeys of them.
    private const int KeysCreated = 256;
    private const int MaxLoadKeys = 128;
    private const int MinLoadKeys = 64;
    private static readonly TimeSpan KeyCallInterval = TimeSpan.FromSeconds(0.8);

    // What the load may spend: three leases (a fourth would need 2 048 available); the fault comes when KillBelow is left.
    private const long LoadMoney = 1_650;
    private const long KillBelow = 800;

    // The three warm-up calls come first.
    private const long Balance = LoadMoney + 3;

    // Callers independent of each other (see CallLoad), so the calls that wait for the account during the failover hold up
    // none of the calls that keys with a lease answer meanwhile.
    private const int MaxInFlightPerFrontDoor = 1000;
    private static readonly TimeSpan CallerTimeout = TimeSpan.FromSeconds(40);
    private const int RefusalsAfterDeclaration = 200;

    // The load goes on until no call was answered 200 for this long (every key called twice and more): the keys have spent
    // whatever they held, so what they were leased shows in the charges.
    private static readonly TimeSpan SpentAfter = TimeSpan.FromSeconds(2.5);

    // The loss window is the journal's flush interval and this, as in SiloFailoverTests.
    private static readonly TimeSpan Margin = TimeSpan.FromMilliseconds(500);

    [Fact]
    public async Task SigKill_OfTheAccountsSilo_WhileKeysHoldLeases_BalanceStaysWithinItsCreditLimit_AndReconciles()
    {
        var run = await RunAsync(paused: false);

        run.AssertMoney();
        Assert.True(run.Recovery < SiloFailoverTests.KillRecoveryBound,
            $"calls failed, or the account did not answer, until {run.Recovery.TotalSeconds:F1} s after the kill (bound {SiloFailoverTests.KillRecoveryBound.TotalSeconds} s)");
        var reconciled = await fixture.Cluster.ReconcileEveryAccountAsync(TimeSpan.FromSeconds(20));
        Assert.True(reconciled.GetProperty("consistent").GetBoolean(), $"accounts differ from the journal: {reconciled}");
    }

    [Fact]
    public async Task SigStop_OfTheAccountsSilo_WhileKeysHoldLeases_BalanceStaysWithinItsCreditLimit_AndReconciles()
    {
        var run = await RunAsync(paused: true);

        run.AssertMoney();
        Assert.True(run.Recovery < SiloFailoverTests.HangRecoveryBound,
            $"calls failed, or the account did not answer, until {run.Recovery.TotalSeconds:F1} s after SIGSTOP (bound {SiloFailoverTests.HangRecoveryBound.TotalSeconds} s)");
        var reconciled = await fixture.Cluster.ReconcileEveryAccountAsync(TimeSpan.FromSeconds(20));
        Assert.True(reconciled.GetProperty("consistent").GetBoolean(), $"accounts differ from the journal: {reconciled}");
    }

    private async Task<MoneyRun> RunAsync(bool paused)
    {
        // The account and its keys first, on the silos that are running: a silo that replaces one an earlier run left dead
        // would otherwise, the least loaded, get every new grain, the account and all its keys alike.
        var cluster = fixture.Cluster;
        using var admin = SiloCluster.Admin(cluster.Silos.First(silo => !silo.HasExited));
        var api = new AdminApi(admin, fixture.Provider.Urls.First());
        var consumer = await api.CreateConsumerAsync(balance: Balance, price: Price, creditLimit: CreditLimit);
        List<CallTarget> targets = [new CallTarget(consumer.ApiKey, CallPath(consumer), consumer.ServiceId, consumer.KeyId),
            .. await AddKeysAsync(api, consumer, KeysCreated - 1)];
        await SiloFaultRun.ReadyAsync(cluster);

        // One call through each front door; the fault will go to the account's silo, and the load calls the keys elsewhere.
        var warmUps = await SiloFaultRun.WarmUpAsync(cluster, consumer.ApiKey, CallPath(consumer));
        var victim = (await cluster.HostsAsync(grains => [grains.GetGrain<IAccountGrain>(consumer.AccountId)]))[0];
        Assert.True(victim >= 0, "the account grain is not active anywhere after a call");
        int[] survivors = [.. Enumerable.Range(0, cluster.Silos.Length).Where(slot => slot != victim)];

        // Placement may have put most keys beside the account: more keys then, which go mostly to the least loaded silo.
        var hosts = new List<int>();
        var load = new List<CallTarget>();
        for (var batch = 0; batch < 3 && load.Count < MaxLoadKeys; batch++)
        {
            if (batch > 0)
            {
                targets.AddRange(await AddKeysAsync(api, consumer, KeysCreated / 2));
            }

            var added = targets[hosts.Count..];
            hosts.AddRange(await cluster.HostsAsync(grains => [.. added.Select(target => grains.GetGrain<IApiKeyGrain>(target.KeyId))]));
            load = [.. targets.Where((_, k) => hosts[k] >= 0 && hosts[k] != victim).Take(MaxLoadKeys)];
        }

        var placement = string.Join(", ", hosts.GroupBy(host => host).OrderBy(g => g.Key).Select(g => $"{g.Count()} on {g.Key}"));
        Assert.True(load.Count >= MinLoadKeys, $"only {load.Count} of {targets.Count} keys are on the survivors: {placement}");

        // The warm-ups' lease goes back once its key is idle for a second; the load's first keys then take the leases.
        Task<JsonElement> ReadAccountAsync() => cluster.GetJsonAsync(survivors[0], $"/admin/accounts/{consumer.AccountId}");
        var account = await ReadAccountAsync();
        for (var wait = 0; wait < 100 && account.GetProperty("reserved").GetInt64() > account.GetProperty("withheld").GetInt64(); wait++)
        {
            await Task.Delay(100);
            account = await ReadAccountAsync();
        }

        // Each front door calls every key in turn, the second starting half way round, so each key is called every KeyCallInterval.
        var callsPerSecondPerFrontDoor = load.Count / KeyCallInterval.TotalSeconds / survivors.Length;
        using var run = new SiloFaultRun(cluster, victim, paused, (frontDoor, n, clock) => new CallLoad(frontDoor,
            [.. load.Skip(n * load.Count / 2), .. load.Take(n * load.Count / 2)], MaxInFlightPerFrontDoor, callsPerSecondPerFrontDoor, clock,
            CallerTimeout, independentCallers: true));
        run.Start();

        // The fault once the rest of the money is small, with the leases out as they are then.
        var atFault = await ReadAccountAsync();
        while (atFault.GetProperty("available").GetInt64() > KillBelow && run.Clock.Elapsed < TimeSpan.FromSeconds(30))
        {
            await Task.Delay(20);
            atFault = await ReadAccountAsync();
        }

        Assert.True(atFault.GetProperty("available").GetInt64() <= KillBelow, $"the load did not spend the balance down to {KillBelow} in 30 s: {atFault}");
        var loadBeforeFault = run.Clock.Elapsed;
        await run.StrikeAsync();
        var accountBack = await run.AnswersAgainAsync($"/admin/accounts/{consumer.AccountId}");

        // Keep calling until the account has refused for a while after the silo was declared dead, and no call was answered 200
        // for SpentAfter: every key has then spent whatever it held.
        await run.LoadUntilAsync(
            () => run.Count(call => IsBalanceRefusal(call) && call.SentAt > run.DeadAt) >= RefusalsAfterDeclaration
                && run.Count(call => call.AnsweredOk && call.AnsweredAt > run.Clock.Elapsed - SpentAfter) == 0,
            TimeSpan.FromSeconds(60));
        var calls = await run.StopAsync();

        var ok = calls.Where(call => call.AnsweredOk).ToList();
        var refused = calls.Where(IsBalanceRefusal).ToList();
        var failed = calls.Where(call => !Decided(call)).ToList();
        var timeline = run.Timeline(calls, "200 or 402", Decided, call => !Decided(call));
        var firstRefusal = refused.Select(call => call.AnsweredAt!.Value).DefaultIfEmpty(TimeSpan.MaxValue).Min();
        (account, var reconciliation) = await run.SettledAccountAsync(consumer.AccountId, ok.Count + warmUps);
        var charges = await run.ChargesAsync(account, calls, ok, failed.Count, warmUps, Price, SiloFailoverTests.WriteBehindInterval + Margin);
        var moneyRun = new MoneyRun(
            ReservedAtFault: atFault.GetProperty("reserved").GetInt64(),
            AvailableAtFault: atFault.GetProperty("available").GetInt64(),
            RefusedAfterDeclaration: refused.Count(call => call.SentAt > run.DeadAt),
            BalanceAfter: account.GetProperty("balance").GetInt64(),
            Recovery: timeline.Recovery > accountBack ? timeline.Recovery : accountBack,
            Charges: charges);
        TestContext.Current.TestOutputHelper?.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"{run.Fault} of silo {run.VictimSlot} (account grain there) after {loadBeforeFault.TotalSeconds:F1} s of {2 * callsPerSecondPerFrontDoor:F0} calls/s " +
            $"over the {load.Count} keys on front doors {string.Join(" and ", run.Survivors)} (key grains: " +
            $"{placement}), with {moneyRun.AvailableAtFault} " +
            $"available and {moneyRun.ReservedAtFault} reserved (leases and calls in flight) at the fault: {timeline}; the account answered again after " +
            $"{accountBack.TotalSeconds:F2} s. {calls.Count} calls: {charges.Ok} answered 200 (incl. {warmUps} warm-ups; " +
            $"{ok.Count(call => call.AnsweredAt > firstRefusal)} after the account's first refusal), {refused.Count} insufficient-balance " +
            $"({moneyRun.RefusedAfterDeclaration} sent after the declaration), {failed.Count} failed ({failed.Count(call => call.Status is null)} unanswered; statuses {SiloFaultRun.Statuses(failed)}). " +
            $"Money: balance {Balance} + credit limit {CreditLimit}; spent {charges.Spent}, balance after {moneyRun.BalanceAfter}, overdraft {moneyRun.Overdraft}. " +
            $"{charges}. Reconciliation: {SiloFaultRun.Summary(reconciliation)}"));
        return moneyRun;
    }

    private static string CallPath(Consumer consumer) => $"/v1/call/{consumer.ServiceId}/verify?number=%2B4915112345678";

    // `count` more keys of the account, a few at a time, as call targets.
    private static async Task<List<CallTarget>> AddKeysAsync(AdminApi api, Consumer consumer, int count)
    {
        var more = await Task.WhenAll(Enumerable.Range(0, count).Chunk(Math.Max(1, count / 8)).Select(async chunk =>
        {
            var keys = new List<CallTarget>();
            foreach (var _ in chunk)
            {
                var (keyId, apiKey) = await api.AddKeyAsync(consumer.AccountId, consumer.ServiceId, "load");
                keys.Add(new CallTarget(apiKey, CallPath(consumer), consumer.ServiceId, keyId));
            }

            return keys;
        }));
        return [.. more.SelectMany(keys => keys)];
    }

    private static bool IsBalanceRefusal(CallAttempt call) => call.Status == HttpStatusCode.PaymentRequired;

    private static bool Decided(CallAttempt call) => call.AnsweredOk || IsBalanceRefusal(call);

    private sealed record MoneyRun(long ReservedAtFault, long AvailableAtFault, int RefusedAfterDeclaration, long BalanceAfter, TimeSpan Recovery,
        FailoverCharges Charges)
    {
        /// <summary>What the 200s spent beyond the balance and the credit limit.</summary>
        public long Overdraft => Math.Max(0, Charges.Spent - (Balance + CreditLimit));

        public void AssertMoney()
        {
            // The account refused once its money was spent (and the load went on until the keys had spent what they held).
            Assert.True(RefusedAfterDeclaration > 0, "the account never refused a call for insufficient balance after the declaration");

            // Not one call past the money, counting those a kill lost (within the loss window, asserted below).
            Assert.True(Overdraft == 0,
                $"the calls answered 200 spent {Charges.Spent} (charged {Charges.Charged}, {Charges.LostCharges} lost) of a balance of {Balance} and a " +
                $"credit limit of {CreditLimit}: {Overdraft} over (balance after {BalanceAfter}; {ReservedAtFault} reserved at the fault)");
            Assert.True(BalanceAfter >= -CreditLimit, $"balance after {BalanceAfter}, below the credit limit of {CreditLimit}");
            Charges.AssertCharges();
        }
    }
}
