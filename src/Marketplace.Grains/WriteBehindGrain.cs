using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using Orleans.Serialization;
using Orleans.Storage;

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
/// <para>When the version check fails all the same, another activation of the grain wrote since this one last read or
/// wrote: two activations of one grain ran (with Orleans' default grain directory while silos leave and join; with the
/// distributed one, which silos use by default, only when a silo declared dead still runs past the directory's hold). A grain
/// that overrides <see cref="MergesConflicts"/> then re-reads what was stored and re-applies its own changes on top
/// (<see cref="Merge"/>: counters add up, settings the other changed win), so neither activation's charges are lost.</para>
/// </remarks>
public abstract partial class WriteBehindGrain<TState>(
    IPersistentState<TState> store,
    IOptions<GrainPersistenceOptions> options,
    ILogger logger) : Grain
{
    private IGrainTimer? _timer;
    private DeepCopier<TState>? _copier;
    private TState? _live;

    // The state as this activation last read or wrote it: what a merge after a version conflict compares against.
    private TState? _baseline;

    // A snapshot whose write failed without saying whether it was stored (a timeout): if it was, the next write's
    // version conflict is with this activation's own write, which must not be merged in a second time.
    private TState? _uncertain;
    private Task _lastWrite = Task.CompletedTask;
    private bool _armed;
    private bool _dirty;

    /// <summary>The grain's state, as held in memory (the live copy calls change).</summary>
    protected TState State => _live ??= Live(store.State);

    /// <summary>True when <see cref="Merge"/> can rebase this grain's changes on a state another activation stored.</summary>
    protected virtual bool MergesConflicts => false;

    /// <summary>
    /// Re-applies onto <paramref name="target"/> (this activation's state) what another activation stored:
    /// for a counter, <c>target += stored - baseline</c>; for a setting, the stored value when it differs from
    /// <paramref name="baseline"/> (the other activation changed it), otherwise the target's own.
    /// </summary>
    protected virtual void Merge(TState target, TState baseline, TState stored)
    {
    }

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
        _live = Live(store.State);
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
                await WriteMergingAsync();
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

    private TState Live(TState read)
    {
        if (MergesConflicts)
        {
            _copier ??= ServiceProvider.GetRequiredService<DeepCopier<TState>>();
            _baseline = _copier.Copy(read);
        }

        return read;
    }

    private async Task WriteMergingAsync()
    {
        for (var attempt = 1; ; attempt++)
        {
            try
            {
                await store.WriteStateAsync();
                _baseline = store.State;
                _uncertain = default;
                return;
            }
            catch (InconsistentStateException exception) when (MergesConflicts && _baseline is not null && attempt < MaxMergeAttempts)
            {
                var written = store.State;
                await store.ReadStateAsync();
                var stored = store.State;
                if (_uncertain is not null && SameState(_uncertain, stored))
                {
                    // The earlier write that seemed to fail was stored after all: the conflict is with ourselves.
                    _baseline = stored;
                    _uncertain = default;
                    store.State = written;
                    continue;
                }

                LogMerging(logger, exception, this.GetGrainId(), attempt);
                Merge(written, _baseline, stored);
                Merge(State, _baseline, stored);
                _baseline = stored;
                store.State = written;
            }
            catch (Exception exception) when (exception is not InconsistentStateException && MergesConflicts)
            {
                _uncertain = store.State;
                throw;
            }
        }
    }

    private bool SameState(TState left, TState right)
    {
        var serializer = ServiceProvider.GetRequiredService<Serializer<TState>>();
        return serializer.SerializeToArray(left).AsSpan().SequenceEqual(serializer.SerializeToArray(right));
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

    private const int MaxMergeAttempts = 5;

    [LoggerMessage(Level = LogLevel.Warning, Message = "State of {GrainId} was written by another activation meanwhile (attempt {Attempt}); merging this activation's changes into it")]
    private static partial void LogMerging(ILogger logger, Exception exception, GrainId grainId, int attempt);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Writing state of {GrainId} failed; will retry")]
    private static partial void LogFlushFailed(ILogger logger, Exception exception, GrainId grainId);
}
