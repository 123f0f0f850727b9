using System.ComponentModel.DataAnnotations;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;

namespace Marketplace.Grains;

/// <summary>How settled calls travel to the grains that count them (section <c>Metering</c>).</summary>
public sealed class MeteringOptions
{
    /// <summary>Configuration section.</summary>
    public const string Section = "Metering";

    /// <summary>
    /// How long the in-memory journal (<see cref="MemoryJournal"/>: a process without a database, such as grain tests and
    /// benchmarks) gathers calls into one batch before it commits them and sends their settlements. Zero commits every call
    /// on its own. With the database journal, its <c>CallLog:FlushInterval</c> sets the pace instead.
    /// </summary>
    [Range(typeof(TimeSpan), "00:00:00", "00:00:01", ErrorMessage = "Metering:SettleInterval must be between 0 and 1 second.")]
    public TimeSpan SettleInterval { get; set; } = TimeSpan.FromMilliseconds(20);

    /// <summary>
    /// Calls' worth of its account's balance a busy key may hold as a lease, so its admissions need no message to the
    /// account (0 turns leasing off). The account leases only while its available balance is at least 16 times what
    /// would then be leased, and recalls leases before a final refusal, so admitted counts stay exact; the account's
    /// <c>reserved</c> includes what keys hold, and a key hands back a lease it has not used for a second.
    /// </summary>
    [Range(0, 1024, ErrorMessage = "Metering:LeaseCalls must be between 0 and 1024.")]
    public int LeaseCalls { get; set; } = 32;

    /// <summary>
    /// How long an account holds money for a call or a key's lease before it gives it back unasked: the bound on
    /// money left reserved by a front door that crashed between admission and settlement, or by a key activation that
    /// died holding a lease. Keep it above the longest call a service allows (timeout × (retries + 1): at most
    /// 120 s × 6) plus <see cref="SettleInterval"/>; a settlement that arrives later still charges, it just has nothing
    /// left to release. Keys hand back and renew a lease older than a fifth of this.
    /// </summary>
    [Range(typeof(TimeSpan), "00:00:05", "1.00:00:00", ErrorMessage = "Metering:ReservationTimeout must be between 5 seconds and 1 day.")]
    public TimeSpan ReservationTimeout { get; set; } = TimeSpan.FromMinutes(15);
}

/// <summary>
/// Sends settled calls to the grains that count them, once their journal batch is durable: one message per account, key
/// and data service per batch, named by the batch (<see cref="DeliveryId"/>: the journal writer's sender id and the batch
/// number). A grain seeds its delivery marks from the journal when it activates (<see cref="IJournalReader"/>), so a batch
/// already in the totals it read is not applied again, and every later one is applied exactly once.
/// <para>Deliveries to one grain go one at a time, in batch order, and are never merged: a grain that skips batch n because
/// its totals hold it must still apply n + 1. A delivery whose outcome is unknown (its silo went away, its connection
/// dropped, it timed out) is sent again until it is answered, for a minute at most; should that run out, the grain's
/// counters in memory lag until it next activates and reads the journal, which holds the calls in any case.</para>
/// <para>A key's delivery also counts its calls by the epoch of the key activation that admitted them, so an activation that
/// started after the one that counted them adds them to its quota counts (see <see cref="WithheldCalls"/>), and says when it
/// is sent again after an attempt went unanswered.</para>
/// Reservations stay held until their batch arrives, so a balance never passes its credit limit while the journal writes.
/// On shutdown the deliveries still queued are sent before the silo or client stops.
/// </summary>
public sealed partial class SettlementBatcher(
    IGrainFactory grains,
    TimeProvider time,
    ILogger<SettlementBatcher> logger,
    HotPathCalls? hotPath = null) : IHostedService
{
    // A delivery is sent again until it is answered, for this long at most (a killed silo's grains are active elsewhere
    // within seconds); far below how long the journal names a sender (JournalWindows.SenderRetention).
    private static readonly TimeSpan DeliveryDeadline = TimeSpan.FromMinutes(1);
    private static readonly TimeSpan ResendDelay = TimeSpan.FromMilliseconds(50);
    private static readonly TimeSpan ResendMaxDelay = TimeSpan.FromSeconds(1);
    private static readonly TimeSpan StopDrainTimeout = TimeSpan.FromSeconds(15);

    private readonly HotPathCalls _hotPath = hotPath ?? new HotPathCalls(Options.Create(new HotPathOptions()), time);
    private readonly Lock _gate = new();

    // Per grain ("a:", "k:" or "s:" and the id), its deliveries in batch order; the first is in flight. Guarded by _gate.
    private readonly Dictionary<string, Queue<Delivery>> _queues = new(StringComparer.Ordinal);
    private int _queued;
    private long _pendingCalls;
    private TaskCompletionSource? _drained;
    private long _flushes;

    /// <summary>Settled calls whose deliveries are queued or in flight (counted once per account delivery).</summary>
    public int PendingCount => (int)Interlocked.Read(ref _pendingCalls);

    /// <summary>Journal batches with settled calls handed over so far.</summary>
    public long Flushes => Interlocked.Read(ref _flushes);

    /// <summary>Grains with a delivery in flight.</summary>
    public int InFlight
    {
        get
        {
            lock (_gate)
            {
                return _queues.Count;
            }
        }
    }

    /// <summary>
    /// Sends the settled calls among <paramref name="records"/>, which the journal committed as batch
    /// <paramref name="sequence"/> of <paramref name="sender"/>, to their accounts, keys and data services.
    /// Call it for every committed batch of a sender, in batch order (also for a batch an earlier attempt committed).
    /// </summary>
    public void Deliver(Guid sender, long sequence, IReadOnlyList<CallRecord> records)
    {
        var batch = new BatchSums();
        foreach (var record in records)
        {
            if (record.Settled)
            {
                batch.Add(record);
            }
        }

        if (batch.IsEmpty)
        {
            return;
        }

        Interlocked.Increment(ref _flushes);
        var id = new DeliveryId(sender, sequence);
        foreach (var (accountId, sums) in batch.Accounts)
        {
            var account = grains.GetGrain<IAccountGrain>(accountId);
            var settlement = new SettlementBatch(sums.Released, sums.Charged, sums.Services.ToDeltas(), sums.Releases(), id);
            Enqueue(new Delivery("a:" + accountId, sums.Calls, _ => account.SettleBatchAsync(settlement)));
        }

        foreach (var (keyId, sums) in batch.Keys)
        {
            var key = grains.GetGrain<IApiKeyGrain>(keyId);
            var usage = sums.ToDeltas();
            var epochs = sums.Epochs();
            Enqueue(new Delivery("k:" + keyId, 0, resent => key.RecordBatchAsync(usage, id, epochs, resent)));
        }

        foreach (var delta in batch.Services.ToDeltas())
        {
            var service = grains.GetGrain<IDataServiceGrain>(delta.ServiceId);
            Enqueue(new Delivery("s:" + delta.ServiceId, 0, _ => service.RecordBatchAsync(delta, id)));
        }
    }

    /// <summary>Completes once every delivery queued so far is answered or given up.</summary>
    public Task DrainAsync()
    {
        lock (_gate)
        {
            if (_queued == 0)
            {
                return Task.CompletedTask;
            }

            _drained ??= new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            return _drained.Task;
        }
    }

    /// <inheritdoc />
    public Task StartAsync(CancellationToken cancellationToken) => Task.CompletedTask;

    /// <inheritdoc />
    public async Task StopAsync(CancellationToken cancellationToken)
    {
        // The last deliveries must arrive before this process's silo or client goes away.
        try
        {
            await DrainAsync().WaitAsync(StopDrainTimeout, time, cancellationToken);
        }
        catch (Exception exception) when (exception is TimeoutException or OperationCanceledException)
        {
            LogStopDrainIncomplete(logger, InFlight);
        }
    }

    private void Enqueue(Delivery delivery)
    {
        bool first;
        lock (_gate)
        {
            if (!_queues.TryGetValue(delivery.Target, out var queue))
            {
                queue = new Queue<Delivery>(1);
                _queues[delivery.Target] = queue;
            }

            queue.Enqueue(delivery);
            first = queue.Count == 1;
            _queued++;
        }

        Interlocked.Add(ref _pendingCalls, delivery.Calls);
        if (first)
        {
            _ = SendInOrderAsync(delivery);
        }
    }

    // Sends a grain's deliveries one after another until its queue is empty.
    private async Task SendInOrderAsync(Delivery? delivery)
    {
        while (delivery is not null)
        {
            await SendAsync(delivery);
            Interlocked.Add(ref _pendingCalls, -delivery.Calls);
            TaskCompletionSource? drained = null;
            lock (_gate)
            {
                var queue = _queues[delivery.Target];
                queue.Dequeue();
                _queued--;
                if (queue.Count == 0)
                {
                    _queues.Remove(delivery.Target);
                    delivery = null;
                }
                else
                {
                    delivery = queue.Peek();
                }

                if (_queued == 0)
                {
                    (drained, _drained) = (_drained, null);
                }
            }

            drained?.TrySetResult();
        }
    }

    // Each attempt is bounded by the hot-path timeout and fails at once when its connection drops. Any cluster fault is
    // followed by another attempt with the same delivery id (the grain applies it once), until the deadline; a failure
    // the grain itself reported is not repeated.
    private async Task SendAsync(Delivery delivery)
    {
        var deadline = time.GetUtcNow() + DeliveryDeadline;
        var delay = ResendDelay;
        for (var attempt = 1; ; attempt++)
        {
            try
            {
                var resent = attempt > 1;
                await _hotPath.CallAsync(() => delivery.Send(resent), HotPathRetry.Never, "settled calls' grain");
                return;
            }
            catch (ClusterUnavailableException exception) when (time.GetUtcNow() + delay < deadline)
            {
                if (attempt == 1)
                {
                    LogResending(logger, delivery.Target, exception.Message);
                }

                await Task.Delay(delay, time);
                delay = TimeSpan.FromTicks(Math.Min(delay.Ticks * 2, ResendMaxDelay.Ticks));
            }
            catch (Exception exception)
            {
                LogDeliveryFailed(logger, exception, delivery.Target, attempt);
                return;
            }
        }
    }

    [LoggerMessage(Level = LogLevel.Warning, Message = "Settled calls for {Target} are sent again: {Reason}")]
    private static partial void LogResending(ILogger logger, string target, string reason);

    [LoggerMessage(Level = LogLevel.Error, Message = "Settled calls for {Target} were not delivered after {Attempts} attempt(s); the grain counts them from the journal when it next activates")]
    private static partial void LogDeliveryFailed(ILogger logger, Exception exception, string target, int attempts);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Stopping with settled calls for {Count} grains still unanswered")]
    private static partial void LogStopDrainIncomplete(ILogger logger, int count);

    // Send is told whether an earlier attempt went unanswered.
    private sealed record Delivery(string Target, long Calls, Func<bool, Task> Send);

    // One journal batch's settled calls, added up per account, key and data service.
    private sealed class BatchSums
    {
        public Dictionary<string, AccountSums> Accounts { get; } = new(StringComparer.Ordinal);

        public Dictionary<string, KeySums> Keys { get; } = new(StringComparer.Ordinal);

        public ServiceSums Services { get; } = new();

        public bool IsEmpty => Accounts.Count == 0;

        public void Add(CallRecord record)
        {
            var succeeded = record.Outcome == CallOutcome.Succeeded;
            var accountId = record.AccountId!;
            if (!Accounts.TryGetValue(accountId, out var account))
            {
                account = new AccountSums();
                Accounts[accountId] = account;
            }

            account.Release(record.Hold, record.Reserved);
            account.Charged += record.Charged;
            account.Services.Add(record.ServiceId, record.Charged, succeeded);
            if (record.KeyId is { } keyId)
            {
                if (!Keys.TryGetValue(keyId, out var key))
                {
                    key = new KeySums();
                    Keys[keyId] = key;
                }

                key.Add(record.ServiceId, record.Charged, succeeded);
                key.AddEpoch(record.KeyEpoch, record.ServiceId);
            }

            Services.Add(record.ServiceId, record.Charged, succeeded);
        }
    }

    private sealed class AccountSums
    {
        // Nearly always one hold per batch (a hold takes reservations for 30 s by default), rarely two.
        private readonly List<HoldRelease> _byHold = new(1);

        public long Released { get; private set; }

        public void Release(long hold, long amount)
        {
            Released += amount;
            for (var i = 0; i < _byHold.Count; i++)
            {
                if (_byHold[i].Hold == hold)
                {
                    _byHold[i] = new HoldRelease(hold, _byHold[i].Amount + amount);
                    return;
                }
            }

            _byHold.Add(new HoldRelease(hold, amount));
        }

        public List<HoldRelease> Releases() => _byHold;

        public long Calls => Services.Calls;

        public long Charged { get; set; }

        public ServiceSums Services { get; } = new();
    }

    // A key's sums, and its calls by the epoch of the activation that admitted them and by service.
    private sealed class KeySums : ServiceSums
    {
        private Dictionary<(long Epoch, string ServiceId), long>? _byEpoch;

        public void AddEpoch(long epoch, string serviceId)
        {
            if (epoch == 0)
            {
                return;
            }

            _byEpoch ??= [];
            _byEpoch[(epoch, serviceId)] = _byEpoch.GetValueOrDefault((epoch, serviceId)) + 1;
        }

        public List<EpochCalls>? Epochs() => _byEpoch?.Select(e => new EpochCalls(e.Key.Epoch, e.Key.ServiceId, e.Value)).ToList();
    }

    private class ServiceSums
    {
        private readonly Dictionary<string, long[]> _byService = new(StringComparer.Ordinal);

        public long Calls
        {
            get
            {
                long calls = 0;
                foreach (var sums in _byService.Values)
                {
                    calls += sums[0];
                }

                return calls;
            }
        }

        public void Add(string serviceId, long charge, bool succeeded)
        {
            if (!_byService.TryGetValue(serviceId, out var sums))
            {
                sums = new long[4];
                _byService[serviceId] = sums;
            }

            sums[0]++;
            sums[1] += charge > 0 ? 1 : 0;
            sums[2] += succeeded ? 0 : 1;
            sums[3] += charge;
        }

        public List<ServiceUsageDelta> ToDeltas() =>
            [.. _byService.Select(s => new ServiceUsageDelta(s.Key, s.Value[0], s.Value[1], s.Value[2], s.Value[3]))];
    }
}
