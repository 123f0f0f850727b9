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
    /// How long a front door adds up settled calls before it sends them, one message per account, key and service.
    /// Zero sends every call's settlement on its own.
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
/// Adds up the settlements of the calls that passed through this process and sends them in batches, so a hot
/// account, key or data service receives a few messages per interval instead of one per call. Reservations stay
/// held until their batch arrives, so batching delays a charge by at most the interval and never lets a balance
/// pass its credit limit. On shutdown the last batch is sent before the silo stops.
/// <para>Every delivery carries a <see cref="DeliveryId"/> (this process's id and a sequence number), and a grain has at
/// most one delivery from this process in flight: what is settled meanwhile waits for the next cycle. So a delivery
/// whose outcome is unknown (its silo went away, its connection dropped, it timed out) is sent again until it is
/// answered, and the grain, remembering the highest number it applied per sender, applies it once.</para>
/// While batching, the loop beats in <see cref="BackgroundLoops"/> as <see cref="LoopName"/> on every cycle.
/// </summary>
public sealed partial class SettlementBatcher(
    IGrainFactory grains,
    IOptions<MeteringOptions> options,
    TimeProvider time,
    ILogger<SettlementBatcher> logger,
    BackgroundLoops? loops = null,
    HotPathCalls? hotPath = null) : BackgroundService
{
    /// <summary>The batcher's name in <see cref="BackgroundLoops"/>.</summary>
    public const string LoopName = "settlement-batcher";

    // A cycle takes microseconds (sends are not awaited): this long without one means the loop is stuck or gone.
    private static readonly TimeSpan MaxSilence = TimeSpan.FromSeconds(30);

    // A delivery is sent again until it is answered, for this long at most (a killed silo's grains are active elsewhere
    // within seconds); then its calls are logged as not delivered. Far below how long grains remember a sender.
    private static readonly TimeSpan DeliveryDeadline = TimeSpan.FromMinutes(1);
    private static readonly TimeSpan ResendDelay = TimeSpan.FromMilliseconds(50);
    private static readonly TimeSpan ResendMaxDelay = TimeSpan.FromSeconds(1);
    private static readonly TimeSpan StopDrainTimeout = TimeSpan.FromSeconds(15);

    private readonly System.Collections.Concurrent.ConcurrentDictionary<Task, byte> _inFlight = new();
    private readonly HotPathCalls _hotPath = hotPath ?? new HotPathCalls(Options.Create(new HotPathOptions()), time);
    private readonly Guid _sender = Guid.NewGuid();
    private readonly Lock _gate = new();

    // Grains with a delivery from this process in flight ("a:", "k:" or "s:" and the id); guarded by _gate.
    private readonly HashSet<string> _busy = new(StringComparer.Ordinal);
    private Pending _pending = new();
    private long _sequence;
    private long _flushes;

    /// <summary>Settled calls recorded and not yet sent.</summary>
    public int PendingCount
    {
        get
        {
            lock (_gate)
            {
                return _pending.Calls;
            }
        }
    }

    /// <summary>Batches sent so far (a cycle with nothing to send is not counted).</summary>
    public long Flushes => Interlocked.Read(ref _flushes);

    /// <summary>Records one settled call; sent with the next batch (or at once when batching is off).</summary>
    public void Record(string accountId, string keyId, string serviceId, long reserved, long charge, bool succeeded, long hold)
    {
        if (options.Value.SettleInterval <= TimeSpan.Zero)
        {
            _ = grains.GetGrain<IAccountGrain>(accountId).SettleAsync(serviceId, reserved, charge, succeeded, hold);
            _ = grains.GetGrain<IApiKeyGrain>(keyId).RecordAsync(serviceId, succeeded, charge > 0);
            _ = grains.GetGrain<IDataServiceGrain>(serviceId).RecordAsync(succeeded, charge);
            return;
        }

        lock (_gate)
        {
            var account = _pending.Accounts.TryGetValue(accountId, out var a) ? a : _pending.Accounts[accountId] = new AccountSums();
            account.Release(hold, reserved);
            account.Charged += charge;
            account.Services.Add(serviceId, charge, succeeded);
            var key = _pending.Keys.TryGetValue(keyId, out var k) ? k : _pending.Keys[keyId] = new ServiceSums();
            key.Add(serviceId, charge, succeeded);
            _pending.Services.Add(serviceId, charge, succeeded);
            _pending.Calls++;
        }
    }

    /// <summary>Sends everything recorded so far, but to grains that still have a delivery in flight (they get it next time).</summary>
    public void Flush()
    {
        Pending batch;
        lock (_gate)
        {
            if (_pending.IsEmpty)
            {
                return;
            }

            batch = _busy.Count == 0 ? _pending : _pending.TakeAllBut(_busy);
            if (ReferenceEquals(batch, _pending))
            {
                _pending = new Pending();
            }

            foreach (var accountId in batch.Accounts.Keys)
            {
                _busy.Add("a:" + accountId);
            }

            foreach (var keyId in batch.Keys.Keys)
            {
                _busy.Add("k:" + keyId);
            }

            foreach (var serviceId in batch.Services.Ids)
            {
                _busy.Add("s:" + serviceId);
            }
        }

        if (batch.IsEmpty)
        {
            return;
        }

        Interlocked.Increment(ref _flushes);

        foreach (var (accountId, sums) in batch.Accounts)
        {
            var account = grains.GetGrain<IAccountGrain>(accountId);
            var settlement = new SettlementBatch(sums.Released, sums.Charged, sums.Services.ToDeltas(), sums.Releases(), NextDelivery());
            Deliver(() => account.SettleBatchAsync(settlement), "a:" + accountId, sums.Calls);
        }

        foreach (var (keyId, sums) in batch.Keys)
        {
            var key = grains.GetGrain<IApiKeyGrain>(keyId);
            var usage = sums.ToDeltas();
            var delivery = NextDelivery();
            Deliver(() => key.RecordBatchAsync(usage, delivery), "k:" + keyId, usage.Sum(service => service.Calls));
        }

        foreach (var delta in batch.Services.ToDeltas())
        {
            var service = grains.GetGrain<IDataServiceGrain>(delta.ServiceId);
            var delivery = NextDelivery();
            Deliver(() => service.RecordBatchAsync(delta, delivery), "s:" + delta.ServiceId, delta.Calls);
        }
    }

    /// <summary>Batches sent and not yet answered.</summary>
    public int InFlight => _inFlight.Count;

    private DeliveryId NextDelivery() => new(_sender, Interlocked.Increment(ref _sequence));

    // Sends one batch without making the loop wait.
    private void Deliver(Func<Task> send, string target, long calls)
    {
        var delivery = DeliverAsync(send, target, calls);
        if (!delivery.IsCompleted)
        {
            _inFlight.TryAdd(delivery, 0);
            _ = delivery.ContinueWith(done => _inFlight.TryRemove(done, out _), CancellationToken.None,
                TaskContinuationOptions.ExecuteSynchronously, TaskScheduler.Default);
        }
    }

    // Each attempt is bounded by the hot-path timeout and fails at once when its connection drops. Any cluster fault is
    // followed by another attempt with the same delivery id (the grain applies it once), until the deadline; a failure
    // the grain itself reported is not repeated.
    private async Task DeliverAsync(Func<Task> send, string target, long calls)
    {
        var deadline = time.GetUtcNow() + DeliveryDeadline;
        var delay = ResendDelay;
        try
        {
            for (var attempt = 1; ; attempt++)
            {
                try
                {
                    await _hotPath.CallAsync(send, HotPathRetry.Never, "settled calls' grain");
                    return;
                }
                catch (ClusterUnavailableException exception) when (time.GetUtcNow() + delay < deadline)
                {
                    if (attempt == 1)
                    {
                        LogResending(logger, calls, target, exception.Message);
                    }

                    await Task.Delay(delay, time);
                    delay = TimeSpan.FromTicks(Math.Min(delay.Ticks * 2, ResendMaxDelay.Ticks));
                }
                catch (Exception exception)
                {
                    LogDeliveryFailed(logger, exception, calls, target, attempt);
                    return;
                }
            }
        }
        finally
        {
            lock (_gate)
            {
                _busy.Remove(target);
            }
        }
    }

    /// <inheritdoc />
    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        var interval = options.Value.SettleInterval;
        if (interval <= TimeSpan.Zero)
        {
            return;
        }

        loops?.Register(LoopName, MaxSilence);
        using var timer = new PeriodicTimer(interval, time);
        try
        {
            while (await timer.WaitForNextTickAsync(stoppingToken))
            {
                try
                {
                    Flush();
                    loops?.Beat(LoopName);
                }
                catch (Exception exception)
                {
                    LogFlushFailed(logger, exception);
                    loops?.Failed(LoopName, exception);
                }
            }
        }
        catch (OperationCanceledException) when (stoppingToken.IsCancellationRequested)
        {
        }
    }

    /// <inheritdoc />
    public override async Task StopAsync(CancellationToken cancellationToken)
    {
        await base.StopAsync(cancellationToken);
        Flush();

        // The last batches must arrive before this process's silo or client goes away.
        try
        {
            await Task.WhenAll(_inFlight.Keys).WaitAsync(StopDrainTimeout, time, cancellationToken);
        }
        catch (Exception exception) when (exception is TimeoutException or OperationCanceledException)
        {
            LogStopDrainIncomplete(logger, _inFlight.Count);
        }
    }

    [LoggerMessage(Level = LogLevel.Warning, Message = "Settlement of {Calls} calls for {Target} is sent again: {Reason}")]
    private static partial void LogResending(ILogger logger, long calls, string target, string reason);

    [LoggerMessage(Level = LogLevel.Error, Message = "Settlement of {Calls} calls for {Target} was not delivered after {Attempts} attempt(s); their counts are lost")]
    private static partial void LogDeliveryFailed(ILogger logger, Exception exception, long calls, string target, int attempts);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Stopping with {Count} settlement batches still unanswered")]
    private static partial void LogStopDrainIncomplete(ILogger logger, int count);

    [LoggerMessage(Level = LogLevel.Error, Message = "Sending settled calls failed")]
    private static partial void LogFlushFailed(ILogger logger, Exception exception);

    private sealed class Pending
    {
        public Dictionary<string, AccountSums> Accounts { get; } = new(StringComparer.Ordinal);

        public Dictionary<string, ServiceSums> Keys { get; } = new(StringComparer.Ordinal);

        public ServiceSums Services { get; } = new();

        public int Calls { get; set; }

        public bool IsEmpty => Accounts.Count == 0 && Keys.Count == 0 && Services.Ids.Count == 0;

        // Moves out everything but what goes to the busy grains, which stays here for the next cycle.
        public Pending TakeAllBut(HashSet<string> busy)
        {
            var taken = new Pending();
            foreach (var (accountId, sums) in Accounts)
            {
                if (!busy.Contains("a:" + accountId))
                {
                    taken.Accounts[accountId] = sums;
                    taken.Calls += (int)sums.Calls;
                }
            }

            foreach (var accountId in taken.Accounts.Keys)
            {
                Accounts.Remove(accountId);
            }

            foreach (var (keyId, sums) in Keys)
            {
                if (!busy.Contains("k:" + keyId))
                {
                    taken.Keys[keyId] = sums;
                }
            }

            foreach (var keyId in taken.Keys.Keys)
            {
                Keys.Remove(keyId);
            }

            Services.MoveTo(taken.Services, serviceId => !busy.Contains("s:" + serviceId));
            Calls -= taken.Calls;
            return taken;
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

    private sealed class ServiceSums
    {
        private readonly Dictionary<string, long[]> _byService = new(StringComparer.Ordinal);

        public IReadOnlyCollection<string> Ids => _byService.Keys;

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

        public void MoveTo(ServiceSums target, Func<string, bool> movable)
        {
            foreach (var (serviceId, sums) in _byService)
            {
                if (movable(serviceId))
                {
                    target._byService[serviceId] = sums;
                }
            }

            foreach (var serviceId in target._byService.Keys)
            {
                _byService.Remove(serviceId);
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
