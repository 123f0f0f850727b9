using Microsoft.Extensions.Options;
using Polly;
using Polly.Retry;

namespace Marketplace.Grains;

/// <summary>What may be repeated when a grain call on the call path meets a fault.</summary>
public enum HotPathRetry
{
    /// <summary>Never: the call changes state and its effect cannot be recognised when repeated.</summary>
    Never = 0,

    /// <summary>Once, when the cluster refused the request before any grain ran it (a stopping silo's rejection).</summary>
    WhenNotRun = 1,

    /// <summary>Once, after any cluster fault but a timeout: the call reads, or repeating it changes nothing.</summary>
    WhenSafe = 2,

    /// <summary>
    /// Again and again after any cluster fault, a timeout included, with a growing pause, for about a minute: the request
    /// carries a <see cref="RequestId"/> its receiver remembers, so however often it arrives it is applied once, and sending
    /// it until it is answered is how its sender learns an outcome a lost answer hid.
    /// </summary>
    UntilAnswered = 3,
}

/// <summary>
/// Runs the grain calls of the call path with a bound of <see cref="HotPathOptions.GrainCallTimeout"/> each (Orleans'
/// own response timeout is 30 s), fails the calls in flight at once when a connection to a silo drops (Orleans would
/// let a call sent through a dead gateway wait for its timeout), and repeats a call once where that is safe (Polly).
/// Every fault becomes a <see cref="ClusterUnavailableException"/>.
/// </summary>
/// <remarks>
/// The bound races the grain call; it does not cancel it. Passing a cancellable token into an Orleans grain call costs
/// far more than the call itself (measured on the HTTP benchmark: the front door's throughput halved), while an answer
/// nobody waits for any more is simply dropped when Orleans' own response timeout ends the call. The one thing racing
/// cannot do is tell the grain to stop, and no grain call of the call path runs long enough for that to matter.
/// </remarks>
public sealed class HotPathCalls
{
    private readonly ResiliencePipeline _never;
    private readonly ResiliencePipeline _whenNotRun;
    private readonly ResiliencePipeline _whenSafe;
    private readonly ResiliencePipeline _untilAnswered;
    private readonly TimeProvider _time;
    private CancellationTokenSource _connections = new();

    /// <summary>Creates the pipelines from the options.</summary>
    public HotPathCalls(IOptions<HotPathOptions> options, TimeProvider time)
    {
        Timeout = options.Value.GrainCallTimeout;
        _time = time;
        _never = ResiliencePipeline.Empty;
        _whenNotRun = Build(time, IsRefusedBeforeRun);
        _whenSafe = Build(time, IsRepeatable);

        // 10 ms doubling to 1 s: 60 attempts span about a minute (more when attempts time out), the settlements' resend window.
        _untilAnswered = new ResiliencePipelineBuilder { TimeProvider = time }
            .AddRetry(new RetryStrategyOptions
            {
                MaxRetryAttempts = 60,
                BackoffType = DelayBackoffType.Exponential,
                Delay = TimeSpan.FromMilliseconds(10),
                MaxDelay = TimeSpan.FromSeconds(1),
                UseJitter = false,
                ShouldHandle = arguments => ValueTask.FromResult(arguments.Outcome.Exception is { } exception && IsClusterFault(exception)),
            })
            .Build();
    }

    /// <summary>The bound on each grain call.</summary>
    public TimeSpan Timeout { get; }

    /// <summary>
    /// Says that a connection to a silo dropped: every grain call of the call path in flight now fails at once (and is
    /// repeated once where that is safe), since its answer may never come. Calls through the connections still open
    /// fail with them; on a killed silo that is a few calls, against every call through it waiting for the timeout.
    /// </summary>
    public void ConnectionDropped()
    {
        var dropped = Interlocked.Exchange(ref _connections, new CancellationTokenSource());

        // Not disposed: calls in flight may still be waiting on its token.
        dropped.Cancel();
    }

    /// <summary>Runs one grain call of the call path.</summary>
    public async ValueTask<T> CallAsync<T>(Func<ValueTask<T>> call, HotPathRetry retry, string what)
    {
        // The common case, a grain that answers, costs one delegate call and no timer.
        var pipeline = retry switch
        {
            HotPathRetry.WhenSafe => _whenSafe,
            HotPathRetry.WhenNotRun => _whenNotRun,
            HotPathRetry.UntilAnswered => _untilAnswered,
            _ => _never,
        };
        try
        {
            return await pipeline.ExecuteAsync(static (state, _) => state.Self.AttemptAsync(state.Call), (Self: this, Call: call));
        }
        catch (Exception exception) when (IsClusterFault(exception))
        {
            throw new ClusterUnavailableException(Describe(exception, what), exception);
        }
    }

    /// <inheritdoc cref="CallAsync{T}(Func{ValueTask{T}}, HotPathRetry, string)"/>
    public ValueTask CallAsync(Func<Task> call, HotPathRetry retry, string what) =>
        new(CallAsync(async () =>
        {
            await call();
            return true;
        }, retry, what).AsTask());

    /// <summary>True for the exceptions by which the cluster, not the marketplace's rules, failed a grain call.</summary>
    public static bool IsClusterFault(Exception exception) => exception is ClusterUnavailableException or ConnectionDroppedException
        or TimeoutException or OrleansMessageRejectionException or SiloUnavailableException
        or Orleans.Runtime.Messaging.ConnectionFailedException;

    private async ValueTask<T> AttemptAsync<T>(Func<ValueTask<T>> call)
    {
        var connection = Volatile.Read(ref _connections).Token;
        var pending = call();
        if (pending.IsCompleted)
        {
            return pending.Result;
        }

        try
        {
            return await pending.AsTask().WaitAsync(Timeout, _time, connection);
        }
        catch (OperationCanceledException) when (connection.IsCancellationRequested)
        {
            throw new ConnectionDroppedException();
        }
    }

    private string Describe(Exception exception, string what) => exception switch
    {
        ClusterUnavailableException => exception.Message,
        TimeoutException => $"The marketplace node holding the {what} did not answer within {Timeout.TotalSeconds:0.#} s.",
        ConnectionDroppedException => $"The connection to the marketplace node holding the {what} dropped.",
        _ => $"The marketplace node holding the {what} went away.",
    };

    // SiloUnavailableException derives from the rejection: it means the silo went away holding the request, which it may have run.
    private static bool IsRefusedBeforeRun(Exception exception) =>
        exception is OrleansMessageRejectionException and not SiloUnavailableException;

    private static bool IsRepeatable(Exception exception) =>
        exception is ConnectionDroppedException or OrleansMessageRejectionException or Orleans.Runtime.Messaging.ConnectionFailedException;

    private static ResiliencePipeline Build(TimeProvider time, Func<Exception, bool> repeatable) =>
        new ResiliencePipelineBuilder { TimeProvider = time }
            .AddRetry(new RetryStrategyOptions
            {
                MaxRetryAttempts = 1,
                Delay = TimeSpan.Zero,
                ShouldHandle = arguments => ValueTask.FromResult(arguments.Outcome.Exception is { } exception && repeatable(exception)),
            })
            .Build();

    /// <summary>The call's connection to a silo dropped while it waited for the answer.</summary>
    private sealed class ConnectionDroppedException() : Exception("The connection to a marketplace node dropped.");
}
