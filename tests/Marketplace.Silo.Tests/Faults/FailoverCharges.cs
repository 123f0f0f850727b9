using System.Globalization;

namespace Marketplace.Silo.Tests.Faults;

/// <summary>What the account and the call log hold of a failover run's calls, and the checks every run must pass.</summary>
/// <param name="Ok">Calls answered 200, warm-ups included.</param>
/// <param name="Failed">Calls answered neither 200 nor an expected refusal, or not answered.</param>
/// <param name="Charged">What the account says it charged.</param>
/// <param name="AccountCalls">Calls the account counts.</param>
/// <param name="OkWithoutRow">Calls answered 200 that have no call-log row.</param>
/// <param name="Duplicates">TrackIds with two rows.</param>
/// <param name="Window">Calls answered 200 in the last <paramref name="LossWindow"/> before the fault: the most a kill may lose.</param>
internal sealed record FailoverCharges(
    long Ok, int Failed, long Price, long Charged, long AccountCalls, int OkWithoutRow, List<string> Duplicates, int Window, TimeSpan LossWindow)
{
    /// <summary>Answered calls whose charge the account does not hold.</summary>
    public long LostCharges => Math.Max(0, Ok - (Charged / Price));

    /// <summary>Charges beyond every call that may have been admitted (answered 200, or failed after admission).</summary>
    public long DoubleCharged => Math.Max(0, (Charged / Price) - (Ok + Failed)) + Duplicates.Count;

    /// <summary>What the calls answered 200 spent: the charges, and the price of those a kill lost.</summary>
    public long Spent => Charged + (LostCharges * Price);

    /// <summary>None charged twice, none lost beyond the loss window, every 200 in the call log, and the account's counts agree.</summary>
    public void AssertCharges()
    {
        Assert.True(DoubleCharged == 0,
            $"{DoubleCharged} double charges: charged {Charged} for {Ok} answered + {Failed} failed calls; duplicates {string.Join(", ", Duplicates)}");
        Assert.True(LostCharges <= Window, $"{LostCharges} answered calls not charged, more than the {Window} of the loss window");
        Assert.Equal(0, OkWithoutRow);
        Assert.Equal(Charged, AccountCalls * Price);
    }

    public override string ToString() => string.Create(CultureInfo.InvariantCulture,
        $"Account: charged {Charged}, calls {AccountCalls}; lost charges {LostCharges} (loss window: {Window} calls answered in the last " +
        $"{LossWindow.TotalMilliseconds:F0} ms before the fault), 200s without a call-log row {OkWithoutRow}, double-charged {DoubleCharged} " +
        $"({Duplicates.Count} TrackIds with two rows)");
}
