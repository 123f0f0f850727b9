using Polly;
using Polly.Retry;

namespace Marketplace.Grains;

/// <summary>
/// Sends a top-up or adjustment to its account until its outcome is known. The change carries an operation id the account
/// applies once, so an attempt whose answer was lost (its silo went away, its connection dropped, it timed out) is simply
/// sent again; each attempt waits at most <see cref="AttemptTimeout"/> (Orleans' own is 30 s), and the resends stop after
/// <see cref="Deadline"/>, when the fault is reported to the caller, who may repeat the request with the same id.
/// </summary>
public static class CreditsDelivery
{
    /// <summary>The bound on each attempt.</summary>
    public static readonly TimeSpan AttemptTimeout = TimeSpan.FromSeconds(5);

    /// <summary>How long attempts are repeated before the fault is reported.</summary>
    public static readonly TimeSpan Deadline = TimeSpan.FromSeconds(30);

    /// <summary>Applies <paramref name="change"/> to <paramref name="account"/> once, resending after cluster faults.</summary>
    public static async Task<BalanceChangeResult> SendAsync(IAccountGrain account, BalanceChange change, TimeProvider time)
    {
        var pipeline = new ResiliencePipelineBuilder<BalanceChangeResult> { TimeProvider = time }
            .AddTimeout(Deadline)
            .AddRetry(new RetryStrategyOptions<BalanceChangeResult>
            {
                MaxRetryAttempts = int.MaxValue,
                BackoffType = DelayBackoffType.Exponential,
                Delay = TimeSpan.FromMilliseconds(100),
                MaxDelay = TimeSpan.FromSeconds(1),
                ShouldHandle = arguments => ValueTask.FromResult(arguments.Outcome.Exception is { } exception && HotPathCalls.IsClusterFault(exception)),
            })
            .Build();
        try
        {
            return await pipeline.ExecuteAsync(
                static async (state, token) => await state.account.ChangeCreditsAsync(state.change).WaitAsync(AttemptTimeout, state.time, token),
                (account, change, time));
        }
        catch (Polly.Timeout.TimeoutRejectedException exception)
        {
            throw new TimeoutException(
                $"The account did not confirm the change within {Deadline.TotalSeconds:0} s; repeat it with the same operation id (Idempotency-Key) to apply it once.",
                exception);
        }
    }
}
