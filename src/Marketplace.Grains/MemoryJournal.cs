using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Options;

namespace Marketplace.Grains;

/// <summary>
/// The journal of a process without a database (grain tests, benchmarks): call records are gathered for
/// <see cref="MeteringOptions.SettleInterval"/>, committed as one numbered batch to totals held in memory, and their
/// settlements then sent to the grains, exactly as the database journal does. The totals are process-wide, so every silo
/// of an in-process test cluster reads the same journal, and a grain that is deactivated rebuilds its counters from it.
/// </summary>
public sealed class MemoryJournal(SettlementBatcher settlements, IOptions<MeteringOptions> options, TimeProvider time)
    : ICallLog, IJournalReader, IHostedService, IDisposable
{
    private static readonly MemoryJournalTotals Totals = new();

    private readonly Guid _sender = Guid.NewGuid();
    private readonly Lock _gate = new();
    private List<CallRecord> _pending = [];
    private long _sequence;
    private ITimer? _timer;

    /// <summary>This journal's sender id (<see cref="DeliveryId.Sender"/> of the settlements it sends).</summary>
    public Guid Sender => _sender;

    /// <inheritdoc />
    public ValueTask WriteAsync(CallRecord record, CancellationToken cancellationToken)
    {
        var interval = options.Value.SettleInterval;
        lock (_gate)
        {
            _pending.Add(record);
            if (interval <= TimeSpan.Zero)
            {
                CommitPending();
            }
            else
            {
                _timer ??= time.CreateTimer(_ => Flush(), null, interval, interval);
            }
        }

        return ValueTask.CompletedTask;
    }

    /// <summary>
    /// False: batches are committed but their settlements are never sent, as when a process dies between the two (fault
    /// tests: the grains must fetch such batches from the journal).
    /// </summary>
    public bool SendsSettlements { get; set; } = true;

    /// <summary>Commits what is gathered as one batch and sends its settlements.</summary>
    public void Flush()
    {
        lock (_gate)
        {
            CommitPending();
        }
    }

    /// <inheritdoc />
    public ValueTask<AccountJournal> ReadAccountAsync(string accountId, IReadOnlyCollection<string> keyIds, DateTimeOffset now) =>
        ValueTask.FromResult(Totals.ReadAccount(accountId, keyIds, now));

    /// <inheritdoc />
    public ValueTask<KeyJournal> ReadKeyAsync(string keyId) => ValueTask.FromResult(Totals.ReadKey(keyId));

    /// <inheritdoc />
    public ValueTask<ServiceJournal> ReadServiceAsync(string serviceId) => ValueTask.FromResult(Totals.ReadService(serviceId));

    /// <inheritdoc />
    public ValueTask<IReadOnlyList<JournalBatchUsage>> ReadBatchesAsync(Guid sender, long after, string? keyId, string? accountId) =>
        ValueTask.FromResult(Totals.ReadBatches(sender, after, keyId, accountId));

    /// <inheritdoc />
    public Task StartAsync(CancellationToken cancellationToken) => Task.CompletedTask;

    /// <inheritdoc />
    public Task StopAsync(CancellationToken cancellationToken)
    {
        Flush();
        return Task.CompletedTask;
    }

    /// <inheritdoc />
    public void Dispose() => _timer?.Dispose();

    // Under _gate, so batches are committed and handed to the batcher in their order.
    private void CommitPending()
    {
        if (_pending.Count == 0)
        {
            return;
        }

        var batch = _pending;
        _pending = [];
        var sequence = ++_sequence;
        Totals.Commit(_sender, sequence, batch);
        if (SendsSettlements)
        {
            settlements.Deliver(_sender, sequence, batch);
        }
    }
}
