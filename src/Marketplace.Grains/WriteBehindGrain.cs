using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using Orleans.Serialization;

namespace Marketplace.Grains;

/// <summary>
/// A grain whose state lives in memory and is written to storage at most
/// <see cref="GrainPersistenceOptions.WriteBehindInterval"/> after it changes, and on deactivation.
/// Per-call changes use <see cref="MarkDirty"/>; admin changes use <see cref="SaveNowAsync"/>.
/// </summary>
/// <remarks>
/// A periodic write stores a deep copy taken in one turn and lets calls interleave while the database works,
/// so a slow write never stalls the calls of a hot key or account. Writes themselves run one at a time, in order,
/// so the storage's version check (ETag) never sees two writes racing.
/// </remarks>
public abstract partial class WriteBehindGrain<TState>(
    IPersistentState<TState> store,
    IOptions<GrainPersistenceOptions> options,
    ILogger logger) : Grain
{
    private IGrainTimer? _timer;
    private DeepCopier<TState>? _copier;
    private TState? _live;
    private Task _lastWrite = Task.CompletedTask;
    private bool _armed;
    private bool _dirty;

    /// <summary>The grain's state, as held in memory (the live copy calls change).</summary>
    protected TState State => _live ??= store.State;

    /// <summary>True once the state has been written at least once.</summary>
    protected bool Exists => store.RecordExists;

    /// <summary>Schedules a write of the state within the write-behind interval.</summary>
    protected void MarkDirty()
    {
        _dirty = true;
        if (_armed)
        {
            return;
        }

        var interval = options.Value.WriteBehindInterval;
        if (_timer is null)
        {
            _timer = this.RegisterGrainTimer(FlushAsync, new GrainTimerCreationOptions(interval, Timeout.InfiniteTimeSpan)
            {
                KeepAlive = false,
                Interleave = true,
            });
        }
        else
        {
            _timer.Change(interval, Timeout.InfiniteTimeSpan);
        }

        _armed = true;
    }

    /// <summary>Writes the state now and returns once it is durable.</summary>
    protected Task SaveNowAsync() => WriteSnapshotAsync();

    /// <summary>Removes the stored state; the grain then behaves as if it never existed.</summary>
    protected async Task ClearAsync()
    {
        await WaitForWritesAsync();
        _dirty = false;
        await store.ClearStateAsync();
        _live = store.State;
    }

    /// <inheritdoc />
    public override async Task OnDeactivateAsync(DeactivationReason reason, CancellationToken cancellationToken)
    {
        if (_dirty)
        {
            await SaveNowAsync();
        }
        else
        {
            await WaitForWritesAsync();
        }

        await base.OnDeactivateAsync(reason, cancellationToken);
    }

    private async Task WriteSnapshotAsync()
    {
        var previous = _lastWrite;
        var done = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        _lastWrite = done.Task;
        try
        {
            await previous;
            _copier ??= ServiceProvider.GetRequiredService<DeepCopier<TState>>();

            // Taken in one turn: calls that interleave with the database write change only the live state.
            var snapshot = _copier.Copy(State);
            _dirty = false;
            store.State = snapshot!;
            try
            {
                await store.WriteStateAsync();
            }
            catch
            {
                _dirty = true;
                throw;
            }
        }
        finally
        {
            done.SetResult();
        }
    }

    private async Task WaitForWritesAsync()
    {
        try
        {
            await _lastWrite;
        }
        catch (Exception exception)
        {
            LogFlushFailed(logger, exception, this.GetGrainId());
        }
    }

    private async Task FlushAsync(CancellationToken cancellationToken)
    {
        _armed = false;
        if (!_dirty)
        {
            return;
        }

        try
        {
            await SaveNowAsync();
        }
        catch (Exception exception)
        {
            // Keep the change in memory and try again on the next tick; the storage may be briefly down.
            LogFlushFailed(logger, exception, this.GetGrainId());
            MarkDirty();
        }
    }

    [LoggerMessage(Level = LogLevel.Warning, Message = "Writing state of {GrainId} failed; will retry")]
    private static partial void LogFlushFailed(ILogger logger, Exception exception, GrainId grainId);
}
