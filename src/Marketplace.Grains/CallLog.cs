namespace Marketplace.Grains;

/// <summary>One call as the call log (the journal) stores it: one row per call.</summary>
/// <param name="CallId">
/// The call's own id, assigned by the marketplace when the call starts: a UUIDv7 of <paramref name="At"/>
/// (<see cref="Guid.CreateVersion7(DateTimeOffset)"/>), so the id names the day partition and the millisecond of its row.
/// </param>
/// <param name="TrackId">The caller's TrackId (or a generated one): kept and searchable, never a key; calls may share one.</param>
/// <param name="Reserved">What admission reserved on the account (released when the settled call reaches the account); not stored.</param>
/// <param name="Hold">The account hold carrying <paramref name="Reserved"/>; not stored.</param>
/// <param name="WindowOffsetMinutes">The key's quota window offset from UTC (<see cref="AdmitResult.WindowOffsetMinutes"/>).</param>
/// <param name="KeyEpoch">
/// The epoch of the key activation that admitted the call (<see cref="AdmitResult.Epoch"/>); not stored: it travels with the
/// call's settlement only, so a later activation of the key can tell the calls it must add to its quota counts.
/// </param>
public sealed record CallRecord(
    Guid CallId,
    string TrackId,
    DateTimeOffset At,
    string? AccountId,
    string? KeyId,
    string ServiceId,
    string? Version,
    CallOutcome Outcome,
    AdmitOutcome? Rejection,
    int Status,
    double? UpstreamMs,
    double TotalMs,
    long Price,
    long Charged,
    string? Currency,
    string? IdempotencyKey,
    long Reserved = 0,
    long Hold = 0,
    int WindowOffsetMinutes = 0,
    long KeyEpoch = 0)
{
    /// <summary>
    /// True for a settled call: one ApiKeyGrain admitted (the pipeline sets the account only then). Every admitted call is
    /// settled exactly once, so the journal's totals count exactly what the grains count.
    /// </summary>
    public bool Settled => AccountId is not null;
}

/// <summary>Where the pipeline records each call. The host provides a database-backed log; without one, nothing is kept.</summary>
public interface ICallLog
{
    /// <summary>
    /// Queues a record. Completes once the record is queued (periodic durability; waits only while the queue is full, which is
    /// the back-pressure a slow database puts on callers), or once it is stored (strict durability).
    /// </summary>
    ValueTask WriteAsync(CallRecord record, CancellationToken cancellationToken);

    /// <summary>
    /// The id this process's journal batches carry (<see cref="DeliveryId.Sender"/>): the process's front door holds API
    /// keys' leases under it, so a key can tell which settled calls a holder spent.
    /// </summary>
    Guid Sender { get; }
}

/// <summary>The call log used when the host registers none (grain tests, benchmarks): records are dropped.</summary>
public sealed class NullCallLog : ICallLog
{
    /// <summary>The one instance.</summary>
    public static NullCallLog Instance { get; } = new();

    /// <inheritdoc />
    public Guid Sender { get; } = Guid.NewGuid();

    /// <inheritdoc />
    public ValueTask WriteAsync(CallRecord record, CancellationToken cancellationToken) => ValueTask.CompletedTask;
}

/// <summary>How long an Idempotency-Key answers with its first call's result.</summary>
public sealed class IdempotencyOptions
{
    /// <summary>Configuration section these options bind to.</summary>
    public const string Section = "Idempotency";

    /// <summary>The window during which a retry with the same key gets the first outcome (default 24 hours).</summary>
    [System.ComponentModel.DataAnnotations.Range(typeof(TimeSpan), "00:01:00", "30.00:00:00", ErrorMessage = "Idempotency:Window must be between 1 minute and 30 days.")]
    public TimeSpan Window { get; set; } = TimeSpan.FromHours(24);

    /// <summary>Largest answer body kept for replays; a larger one is charged once but cannot be replayed.</summary>
    public const int MaxStoredBodyBytes = 256 * 1024;

    /// <summary>True when <paramref name="key"/> is 1 to 128 characters of letters, digits, '-', '_', '.' or ':'.</summary>
    public static bool IsWellFormed(string? key) =>
        key is { Length: > 0 and <= 128 } && key.All(c => char.IsAsciiLetterOrDigit(c) || c is '-' or '_' or '.' or ':');
}
