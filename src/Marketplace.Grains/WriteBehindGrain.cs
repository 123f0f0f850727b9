using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;

namespace Marketplace.Grains;

/// <summary>
/// A grain whose state lives in memory and is written to storage at most
/// <see cref="GrainPersistenceOptions.WriteBehindInterval"/> after it changes, and on deactivation.
/// Per-call changes use <see cref="MarkDirty"/>; admin changes use <see cref="SaveNowAsync"/>.
/// </summary>
public abstract partial class WriteBehindGrain<TState>(
    IPersistentState<TState> store,
    IOptions<GrainPersistenceOptions> options,
    ILogger logger) : Grain
{
    private IGrainTimer? _timer;
    private bool _armed;
    private bool _dirty;

    /// <summary>The grain's state, as held in memory.</summary>
    protected TState State => store.State;

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
            _timer = this.RegisterGrainTimer(FlushAsync, new GrainTimerCreationOptions(interval, Timeout.InfiniteTimeSpan) { KeepAlive = false });
        }
        else
        {
            _timer.Change(interval, Timeout.InfiniteTimeSpan);
        }

        _armed = true;
    }

    /// <summary>Writes the state now and returns once it is durable.</summary>
    protected async Task SaveNowAsync()
    {
        _dirty = false;
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

    /// <summary>Removes the stored state; the grain then behaves as if it never existed.</summary>
    protected async Task ClearAsync()
    {
        _dirty = false;
        await store.ClearStateAsync();
    }

    /// <inheritdoc />
    public override async Task OnDeactivateAsync(DeactivationReason reason, CancellationToken cancellationToken)
    {
        if (_dirty)
        {
            await SaveNowAsync();
        }

        await base.OnDeactivateAsync(reason, cancellationToken);
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
