using System.Globalization;

namespace Marketplace.Silo.Tests.Faults;

/// <summary>Where the time went after a fault, from the calls' answers.</summary>
/// <param name="DeclaredDead">From the signal until the membership table showed the victim dead.</param>
/// <param name="AnsweredAs">What counts as answered (e.g. "200"), for the description.</param>
/// <param name="Recovery">From the signal until the first answer that shows the cluster decides again after the last failure.</param>
/// <param name="LastFailureAnswered">When the last failed call was answered (or given up on), after the signal.</param>
/// <param name="QuietFrom">Start of the longest stretch after the signal without such an answer, after the signal.</param>
/// <param name="QuietFor">Its length.</param>
/// <param name="LongestWait">The longest a call sent after the signal waited for its answer (or until its caller gave up).</param>
internal sealed record FailoverTimeline(
    TimeSpan? DeclaredDead, string AnsweredAs, TimeSpan Recovery, TimeSpan LastFailureAnswered, TimeSpan QuietFrom, TimeSpan QuietFor, TimeSpan LongestWait)
{
    /// <param name="answeredAs">What <paramref name="answered"/> accepts (e.g. "200"), for the description.</param>
    /// <param name="answered">A call the cluster decided (200, or a refusal the test expects).</param>
    /// <param name="failed">A call that failed.</param>
    public static FailoverTimeline Of(List<CallAttempt> calls, TimeSpan faultAt, TimeSpan? deadAt, string answeredAs, Func<CallAttempt, bool> answered,
        Func<CallAttempt, bool> failed)
    {
        var decided = calls.Where(answered).ToList();
        var failures = calls.Where(failed).ToList();

        // The first decided answer after the last failure (the last failure's send time when it got no answer).
        var recovery = TimeSpan.Zero;
        if (failures.Count > 0)
        {
            var lastFailureSent = failures.Max(call => call.SentAt);
            var recoveredAt = decided.Where(call => call.SentAt >= lastFailureSent).Select(call => call.AnsweredAt!.Value)
                .DefaultIfEmpty(failures.Max(call => call.AnsweredAt ?? call.SentAt)).Min();
            recovery = recoveredAt - faultAt;
        }

        var times = decided.Select(call => call.AnsweredAt!.Value).Where(at => at >= faultAt).Order().Prepend(faultAt).ToList();
        var longestGap = times.Zip(times.Skip(1), (a, b) => (From: a, Length: b - a)).DefaultIfEmpty().MaxBy(gap => gap.Length);
        var lastFailureAnswered = failures.Count == 0 ? TimeSpan.Zero : failures.Max(call => call.AnsweredAt ?? call.SentAt) - faultAt;
        var longestWait = calls.Where(call => call.SentAt >= faultAt).Select(call => call.Waited).DefaultIfEmpty().Max();
        return new FailoverTimeline(deadAt - faultAt, answeredAs, recovery, lastFailureAnswered, longestGap.From - faultAt, longestGap.Length, longestWait);
    }

    public override string ToString() => string.Create(CultureInfo.InvariantCulture,
        $"declared dead after {DeclaredDead?.TotalSeconds.ToString("F2", CultureInfo.InvariantCulture) ?? "never"} s; recovery {Recovery.TotalSeconds:F2} s " +
        $"(last failure answered at {LastFailureAnswered.TotalSeconds:F2} s; no {AnsweredAs} from {QuietFrom.TotalSeconds:F2} s for {QuietFor.TotalSeconds:F2} s; " +
        $"longest wait of a call sent after it {LongestWait.TotalSeconds:F2} s)");
}
