namespace Marketplace.Grains;

/// <summary>
/// How many of a key's admissions ask its account at once: up to a limit, the rest wait their turn, first come first served.
/// </summary>
/// <remarks>
/// The account answers one request at a time. Without a bound, thousands of callers waiting at a key would each keep a
/// request queued there, and the answers that let them through (leases other keys hand back when recalled) would queue
/// behind them for seconds. Used from one grain activation only, so it needs no locks.
/// </remarks>
public sealed class AccountAskGate(int limit)
{
    private readonly Queue<TaskCompletionSource> _waiting = new();
    private int _asking;

    /// <summary>How many admissions hold a turn now.</summary>
    public int Asking => _asking;

    /// <summary>How many admissions wait for a turn.</summary>
    public int Waiting => _waiting.Count;

    /// <summary>Completes once the caller may ask; the caller must <see cref="Leave"/> after, whatever the answer.</summary>
    public Task EnterAsync()
    {
        if (_asking < limit)
        {
            _asking++;
            return Task.CompletedTask;
        }

        var turn = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        _waiting.Enqueue(turn);
        return turn.Task;
    }

    /// <summary>Ends the caller's turn and hands it to the longest waiting admission, if any.</summary>
    public void Leave()
    {
        if (_waiting.TryDequeue(out var next))
        {
            next.SetResult();
        }
        else
        {
            _asking--;
        }
    }
}
