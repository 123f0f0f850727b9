using System.Reflection;

namespace Marketplace.Grains.Tests.Accounts;

[Collection(ClusterCollection.Name)]
public sealed class CreditChangeTests(ClusterFixture fixture)
{
    private IAccountGrain Account(string accountId) => fixture.Grains.GetGrain<IAccountGrain>(accountId);

    [Fact]
    public async Task ChangeCredits_SameOperationIdAgain_EvenAfterReactivation_AppliedOnce()
    {
        var accountId = await fixture.CreateAccountAsync(balance: 0);
        var topUp = new BalanceChange(BalanceChangeKind.TopUp, 500, "wire 42", "op-42");
        var adjustment = new BalanceChange(BalanceChangeKind.Adjustment, -20, "goodwill reversed", "op-43");

        var first = await Account(accountId).ChangeCreditsAsync(topUp);
        var adjusted = await Account(accountId).ChangeCreditsAsync(adjustment);
        var again = await Account(accountId).ChangeCreditsAsync(topUp);
        await ClusterFixture.DeactivateAsync(Account(accountId));
        var afterRestart = await Account(accountId).ChangeCreditsAsync(topUp);
        var adjustedAgain = await Account(accountId).ChangeCreditsAsync(adjustment);

        Assert.Equal(BalanceChangeStatus.Applied, first.Status);
        Assert.Equal(BalanceChangeStatus.Applied, adjusted.Status);
        Assert.Equal(BalanceChangeStatus.Replayed, again.Status);
        Assert.Equal(BalanceChangeStatus.Replayed, afterRestart.Status);
        Assert.Equal(BalanceChangeStatus.Replayed, adjustedAgain.Status);
        Assert.Equal(480, afterRestart.Account.Balance);
        Assert.Equal(500, afterRestart.Account.TotalToppedUp);
        Assert.Equal(480, afterRestart.Account.Credits);
        var ledger = await Account(accountId).GetLedgerAsync();
        Assert.Equal(["op-42", "op-43"], ledger.Select(e => e.OperationId));
    }

    [Fact]
    public async Task ChangeCredits_OperationIdOfAnotherChange_IsAMismatchAndChangesNothing()
    {
        var accountId = await fixture.CreateAccountAsync(balance: 0);
        await Account(accountId).ChangeCreditsAsync(new BalanceChange(BalanceChangeKind.TopUp, 500, "wire 7", "op-7"));

        var otherAmount = await Account(accountId).ChangeCreditsAsync(new BalanceChange(BalanceChangeKind.TopUp, 600, "wire 7", "op-7"));
        var otherKind = await Account(accountId).ChangeCreditsAsync(new BalanceChange(BalanceChangeKind.Adjustment, 500, "wire 7", "op-7"));

        Assert.Equal(BalanceChangeStatus.Mismatch, otherAmount.Status);
        Assert.Equal(BalanceChangeStatus.Mismatch, otherKind.Status);
        Assert.Equal(500, otherKind.Account.Balance);
        Assert.Single(await Account(accountId).GetLedgerAsync());
    }

    [Fact]
    public async Task ChangeCredits_OperationIdOlderThanTheWindow_IsANewChange()
    {
        var accountId = await fixture.CreateAccountAsync(balance: 0);
        var topUp = new BalanceChange(BalanceChangeKind.TopUp, 100, "monthly", "op-monthly");
        await Account(accountId).ChangeCreditsAsync(topUp);

        fixture.Time.Advance(BalanceChange.Window + TimeSpan.FromSeconds(1));
        var later = await Account(accountId).ChangeCreditsAsync(topUp);

        Assert.Equal(BalanceChangeStatus.Applied, later.Status);
        Assert.Equal(200, later.Account.Balance);
    }

    [Fact]
    public async Task CreditsDelivery_AnswerLostAfterTheAccountAppliedIt_ResendsAndAppliesOnce()
    {
        var accountId = await fixture.CreateAccountAsync(balance: 0);
        var lossy = LostAnswers.Wrap(Account(accountId), lost: 2);

        var result = await CreditsDelivery.SendAsync(lossy, new BalanceChange(BalanceChangeKind.TopUp, 300, "wire 9", "op-9"), TimeProvider.System);

        Assert.Equal(3, LostAnswers.Attempts(lossy));
        Assert.Equal(BalanceChangeStatus.Replayed, result.Status);
        Assert.Equal(300, (await Account(accountId).GetAsync())!.Balance);
    }

    [Fact]
    public async Task CreditsDelivery_RuleViolation_IsNotResent()
    {
        var accountId = await fixture.CreateAccountAsync(balance: 10);
        var counting = LostAnswers.Wrap(Account(accountId), lost: 0);

        await Assert.ThrowsAsync<InvalidOperationException>(() =>
            CreditsDelivery.SendAsync(counting, new BalanceChange(BalanceChangeKind.Adjustment, -50, "too much", "op-x"), TimeProvider.System));

        Assert.Equal(1, LostAnswers.Attempts(counting));
        Assert.Equal(10, (await Account(accountId).GetAsync())!.Balance);
    }

    /// <summary>An account reference whose first answers to <see cref="IAccountGrain.ChangeCreditsAsync"/> are lost after the grain ran the call.</summary>
    public class LostAnswers : DispatchProxy
    {
        private IAccountGrain _inner = null!;
        private int _lost;
        private int _attempts;

        public static IAccountGrain Wrap(IAccountGrain inner, int lost)
        {
            var proxy = Create<IAccountGrain, LostAnswers>();
            var self = (LostAnswers)(object)proxy;
            self._inner = inner;
            self._lost = lost;
            return proxy;
        }

        public static int Attempts(IAccountGrain proxy) => ((LostAnswers)(object)proxy)._attempts;

        protected override object? Invoke(MethodInfo? targetMethod, object?[]? args)
        {
            ArgumentNullException.ThrowIfNull(targetMethod);
            if (targetMethod.Name != nameof(IAccountGrain.ChangeCreditsAsync))
            {
                return targetMethod.Invoke(_inner, args);
            }

            _attempts++;
            var call = _inner.ChangeCreditsAsync((BalanceChange)args![0]!);
            return _attempts > _lost ? call : LoseAnswerAsync(call);
        }

        private static async Task<BalanceChangeResult> LoseAnswerAsync(Task<BalanceChangeResult> call)
        {
            await call;
            throw new SiloUnavailableException("The silo went away holding the request (test).");
        }
    }
}
