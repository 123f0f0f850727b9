using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;

namespace Marketplace.Grains;

/// <inheritdoc cref="IAccountGrain"/>
/// <remarks>
/// The grain is the only writer of the balance, so the check "balance - reserved + credit limit covers the price"
/// and the reservation happen as one step however many keys and silos spend the account at once.
/// <para>Its stored state holds settings and credits (top-ups and adjustments) and is written only when they change. What
/// calls spent comes from the journal: read at activation (<see cref="IJournalReader"/>), then added as settled batches
/// arrive, each applied once (the marks, seeded from the same read, name the batches the read already holds).</para>
/// </remarks>
public sealed partial class AccountGrain(
    [PersistentState("account", StorageNames.Marketplace)] IPersistentState<AccountState> store,
    IOptions<GrainPersistenceOptions> options,
    IOptions<MeteringOptions> metering,
    ILogger<AccountGrain> logger,
    TimeProvider time,
    MarketplaceMetrics metrics,
    IJournalReader journal) : WriteBehindGrain<AccountState>(store, options, logger), IAccountGrain, IAlertWatcher
{
    private const int LedgerLimit = 1000;

    // Held for calls in flight and leased to keys; deliberately not stored, since both die with their activations.
    // What is never released (a front door or key activation died) is given back after Metering:ReservationTimeout.
    private readonly ReservationBook _reserved = new(metering.Value.ReservationTimeout);

    // What the account holds never exceeds State.ReservedCeiling, and a higher ceiling is stored before it is used, so a new
    // activation (the old one's silo died, or the grain moved) knows the most the old one may have held and withholds it:
    // keys still spend the old activation's leases and front doors still settle its calls (ReservationBook.Withhold). A raise
    // goes a quarter above what is needed in one write; once a minute the ceiling is lowered (written behind) to a quarter
    // above the most held over the last two minutes, so a steady load writes nothing and little is withheld after a move.
    private static readonly TimeSpan CeilingReview = TimeSpan.FromMinutes(1);
    private long _heldPeak;
    private long _previousPeak;
    private DateTimeOffset _ceilingReviewedAt;
    private Task? _ceilingWrite;
    private static readonly TimeSpan CeilingWriteWait = TimeSpan.FromMilliseconds(250);

    // Keys that may hold leased allowance, with the sequence number of the newest lease each was sent and the hold
    // carrying it; recalled when the balance runs low. A key leaves the set once it has returned its lease having seen
    // that newest one, or when the lease's hold expires (the key activation holding it may be gone).
    private readonly Dictionary<string, (long Sequence, long Hold)> _lessees = new(StringComparer.Ordinal);

    // When each lessee was last asked to hand its lease back.
    private readonly Dictionary<string, DateTimeOffset> _recalled = new(StringComparer.Ordinal);
    private static readonly TimeSpan RecallInterval = TimeSpan.FromMilliseconds(50);
    private long _leaseSequence;

    // Passed as the lease for a capped account's grant, which reserves the call alone.
    private const long Capped = -1;

    // A lease is granted only while the available balance is this many times what would then be leased.
    private const int LeaseHeadroom = 16;

    // The account's balance alert levels, so only a change that crosses one sends a (one-way) signal.
    private BalanceAlertWatch? _alertWatch;

    // The highest journal batch applied per sender: seeded at activation from the journal read, then advanced by deliveries.
    private readonly Dictionary<Guid, DeliveryMark> _applied = [];

    // The answers to keys' lease requests and returns, so one sent again after its answer was lost takes or gives back
    // nothing twice (null: a return). In memory like the holds it guards; the window is explained on RequestMemory.
    private readonly RequestMemory<LeaseGrant?> _keyRequests = new();

    public override async Task OnActivateAsync(CancellationToken cancellationToken)
    {
        await base.OnActivateAsync(cancellationToken);
        if (!Exists)
        {
            return;
        }

        var now = time.GetUtcNow();
        var read = await journal.ReadAccountAsync(this.GetPrimaryKeyString(), State.KeyIds, now);

        // Stored before credits were kept apart: the balance then held credits minus what the stored counters charged.
        State.Credits ??= State.Balance + State.TotalCharged;
        State.TotalCharged = read.Totals.Charged;
        State.Balance = State.Credits.Value - read.Totals.Charged;
        State.Usage = new UsageState
        {
            Calls = read.Totals.Calls,
            Charged = read.Totals.ChargedCalls,
            Failed = read.Totals.Failed,
            CallsByService = new Dictionary<string, long>(read.CallsByService, StringComparer.Ordinal),
        };
        State.MonthStart = QuotaWindows.MonthStart(now, TimeSpan.Zero);
        State.CallsThisMonth = read.CallsThisMonth;
        DeliveryMarks.Seed(_applied, read.Senders, now);

        _ceilingReviewedAt = now;
        if (State.ReservedCeiling > 0)
        {
            _reserved.Withhold(State.ReservedCeiling, now);
            _heldPeak = State.ReservedCeiling;
            LogWithholding(logger, this.GetPrimaryKeyString(), State.ReservedCeiling, now + metering.Value.ReservationTimeout * 1.1);
        }
    }

    public async Task<AccountInfo> CreateAsync(AccountSpec spec)
    {
        var id = this.GetPrimaryKeyString();
        Validation.ThrowIfInvalid(Validation.Check(id, spec));
        if (Exists)
        {
            if (State.Currency != spec.Currency)
            {
                throw new InvalidOperationException($"Account '{id}' exists with currency {State.Currency}.");
            }

            State.Name = spec.Name;
            State.CreditLimit = spec.CreditLimit;
            State.MonthlyCallCap = spec.MonthlyCallCap;
        }
        else
        {
            State.Credits = 0;
            State.Name = spec.Name;
            State.Currency = spec.Currency;
            State.CreditLimit = spec.CreditLimit;
            State.MonthlyCallCap = spec.MonthlyCallCap;
            State.CreatedAt = time.GetUtcNow();
        }

        await SaveNowAsync();
        await GrainFactory.GetGrain<IRegistryGrain>(IRegistryGrain.Default).AddAsync(EntityKind.Account, id);
        return ToInfo();
    }

    public Task<AccountInfo?> GetAsync()
    {
        ExpireHolds();
        return Task.FromResult(Exists ? ToInfo() : null);
    }

    public async Task<AccountInfo> TopUpAsync(long amount, string reason) =>
        (await ApplyChangeAsync(new BalanceChange(BalanceChangeKind.TopUp, amount, reason, TimeOrderedIds.New(time.GetUtcNow()).ToString("N")))).Account;

    public async Task<AccountInfo> AdjustAsync(long amount, string reason) =>
        (await ApplyChangeAsync(new BalanceChange(BalanceChangeKind.Adjustment, amount, reason, TimeOrderedIds.New(time.GetUtcNow()).ToString("N")))).Account;

    public Task<BalanceChangeResult> ChangeCreditsAsync(BalanceChange change) => ApplyChangeAsync(change);

    public Task<IReadOnlyList<LedgerEntry>> GetLedgerAsync() => Task.FromResult<IReadOnlyList<LedgerEntry>>(
        [.. State.Ledger.Select(e => new LedgerEntry(e.At, e.Amount, e.Reason, e.BalanceAfter, e.OperationId))]);

    public async Task DetachKeyAsync(string keyId)
    {
        if (Exists && State.KeyIds.Remove(keyId))
        {
            await SaveNowAsync();
        }
    }

    private async Task<BalanceChangeResult> ApplyChangeAsync(BalanceChange change)
    {
        EnsureExists();
        ArgumentException.ThrowIfNullOrEmpty(change.OperationId);
        var topUp = change.Kind == BalanceChangeKind.TopUp;
        Validation.ThrowIfInvalid(topUp ? Validation.CheckTopUp(change.Amount, change.Reason) : Validation.CheckAdjustment(change.Amount, change.Reason));
        var now = time.GetUtcNow();
        if (FindApplied(change.OperationId, now) is { } earlier)
        {
            var same = earlier.Kind == change.Kind && earlier.Amount == change.Amount && earlier.Reason == change.Reason;
            return new BalanceChangeResult(ToInfo(), same ? BalanceChangeStatus.Replayed : BalanceChangeStatus.Mismatch);
        }

        if (!topUp && Available + change.Amount < 0)
        {
            throw new InvalidOperationException(
                $"The adjustment would take the balance below the credit limit (available {Available}, adjustment {change.Amount}).");
        }

        if (topUp)
        {
            State.TotalToppedUp = checked(State.TotalToppedUp + change.Amount);
        }

        State.Credits = checked(State.Credits.GetValueOrDefault() + change.Amount);
        State.Balance = checked(State.Balance + change.Amount);
        State.Ledger.Add(new BalanceEntry
        {
            At = now,
            Amount = change.Amount,
            Reason = change.Reason,
            BalanceAfter = State.Balance,
            OperationId = change.OperationId,
            Kind = change.Kind,
        });
        if (State.Ledger.Count > LedgerLimit)
        {
            State.Ledger.RemoveRange(0, State.Ledger.Count - LedgerLimit);
        }

        // Durable before the answer: an answered change survives any fault, and an unanswered one is resent with its id.
        await SaveNowAsync();
        if (topUp)
        {
            AlertWatch().ToppedUp(now);
        }
        else
        {
            AlertWatch().Changed(State.Balance + State.CreditLimit - change.Amount, now);
        }

        return new BalanceChangeResult(ToInfo(), BalanceChangeStatus.Applied);
    }

    // The ledger entry an operation id made, if it is recent enough to be recognised (newest entries last).
    private BalanceEntry? FindApplied(string operationId, DateTimeOffset now)
    {
        for (var i = State.Ledger.Count - 1; i >= 0; i--)
        {
            var entry = State.Ledger[i];
            if (entry.At < now - BalanceChange.Window)
            {
                return null;
            }

            if (string.Equals(entry.OperationId, operationId, StringComparison.Ordinal))
            {
                return entry;
            }
        }

        return null;
    }

    public ValueTask<Reservation> ReserveAsync(long amount)
    {
        ExpireHolds();
        var room = MakeRoomAsync(amount);
        return room.IsCompletedSuccessfully ? ValueTask.FromResult(Reserve(amount)) : ReserveAfterAsync(room, amount);

        async ValueTask<Reservation> ReserveAfterAsync(ValueTask raising, long amount)
        {
            await raising;
            return Reserve(amount);
        }
    }

    private Reservation Reserve(long amount)
    {
        if (!Exists || amount < 0)
        {
            return new Reservation(false, 0, State.Currency);
        }

        if (State.MonthlyCallCap is { } cap)
        {
            RollMonth();
            if (State.CallsThisMonth >= cap)
            {
                return new Reservation(false, Available, State.Currency, CapReached: true);
            }
        }

        var available = Available;
        if (amount > available)
        {
            return new Reservation(false, available, State.Currency);
        }

        var hold = _reserved.Add(amount, time.GetUtcNow());
        _heldPeak = Math.Max(_heldPeak, _reserved.Total);
        if (State.MonthlyCallCap is not null)
        {
            // Counted from the journal when the account next activates.
            State.CallsThisMonth++;
        }

        return new Reservation(true, available - amount, State.Currency, Hold: hold);
    }

    public ValueTask<LeaseGrant> ReserveWithLeaseAsync(LeaseRequest request)
    {
        if (request.Request is not { } id)
        {
            return GrantAsync(request);
        }

        switch (_keyRequests.Check(id, time.GetUtcNow(), out var first))
        {
            case RequestSeen.Repeat when first is not null:
                return ValueTask.FromResult(first);
            case RequestSeen.Stale:
                // Its key stopped waiting for it: answered with nothing taken or given back.
                return ValueTask.FromResult(new LeaseGrant(false, Available, State.Currency, false, 0, false));
        }

        var granting = GrantAsync(request);
        if (granting.IsCompletedSuccessfully)
        {
            _keyRequests.Remember(id, granting.Result);
            return granting;
        }

        return RememberAsync(id, granting);

        async ValueTask<LeaseGrant> RememberAsync(RequestId id, ValueTask<LeaseGrant> granting)
        {
            // The grain is not reentrant: no repeat of this request runs before the answer is remembered. (A grant that throws
            // changed nothing it could apply twice: see GrantAsync.)
            var grant = await granting;
            _keyRequests.Remember(id, grant);
            return grant;
        }
    }

    private ValueTask<LeaseGrant> GrantAsync(LeaseRequest request)
    {
        ExpireHolds();
        TakeBack(request.KeyId, request.Returning, request.Seen);
        if (!Exists || request.Amount < 0)
        {
            return ValueTask.FromResult(new LeaseGrant(false, 0, State.Currency, false, 0, false));
        }

        if (State.MonthlyCallCap is not null)
        {
            // A cap counts calls one by one, so a capped account does not lease.
            return AfterRoom(MakeRoomAsync(request.Amount), request, Capped);
        }

        var available = Available;
        if (request.Amount > available)
        {
            if (_lessees.Count == 0)
            {
                return ValueTask.FromResult(new LeaseGrant(false, available, State.Currency, false, 0, false));
            }

            // One recall per lessee per interval: thousands of admissions retrying at once would otherwise send a
            // recall each, and the keys' answers would queue behind the flood they cause.
            var now = time.GetUtcNow();
            foreach (var lessee in _lessees.Keys)
            {
                if (!_recalled.TryGetValue(lessee, out var at) || now - at >= RecallInterval)
                {
                    _recalled[lessee] = now;
                    _ = GrainFactory.GetGrain<IApiKeyGrain>(lessee).RecallLeaseAsync();
                }
            }

            return ValueTask.FromResult(new LeaseGrant(false, available, State.Currency, false, 0, true));
        }

        var lease = 0L;
        var wanted = request.Amount * request.LeaseCalls;
        if (wanted > 0 && available - request.Amount >= wanted * LeaseHeadroom * (_lessees.Count + 1))
        {
            lease = wanted;
        }

        return AfterRoom(MakeRoomAsync(request.Amount + lease), request, lease);
    }

    // Grants (the call's price and `lease`, or for a capped account the call alone) once the ceiling has room for it.
    private ValueTask<LeaseGrant> AfterRoom(ValueTask room, LeaseRequest request, long lease)
    {
        if (room.IsCompletedSuccessfully)
        {
            return ValueTask.FromResult(Take(request, lease));
        }

        return AwaitRoomAsync(room, request, lease);

        async ValueTask<LeaseGrant> AwaitRoomAsync(ValueTask room, LeaseRequest request, long lease)
        {
            await room;
            return Take(request, lease);
        }
    }

    private LeaseGrant Take(LeaseRequest request, long lease)
    {
        if (lease == Capped)
        {
            var reservation = Reserve(request.Amount);
            return new LeaseGrant(reservation.Granted, reservation.Available, reservation.Currency, reservation.CapReached, 0, false,
                Hold: reservation.Hold);
        }

        var available = Available;
        var hold = _reserved.Add(request.Amount + lease, time.GetUtcNow());
        _heldPeak = Math.Max(_heldPeak, _reserved.Total);
        if (lease > 0)
        {
            _lessees[request.KeyId] = (++_leaseSequence, hold);
        }

        return new LeaseGrant(true, available - request.Amount - lease, State.Currency, false, lease, false,
            lease > 0 ? _leaseSequence : 0, hold);
    }

    // Completes once what is held can grow by `adding` within a stored ceiling, or (the database slow or away) once a higher
    // one has been asked to be stored for CeilingWriteWait.
    private ValueTask MakeRoomAsync(long adding)
    {
        if (!Exists || adding <= 0)
        {
            return ValueTask.CompletedTask;
        }

        // Nothing is held beyond what the balance covers: past it the reservation is refused, and the ceiling stops there too.
        var needed = _reserved.Total + adding;
        var most = State.Balance + State.CreditLimit;
        if (needed > most)
        {
            return ValueTask.CompletedTask;
        }

        var now = time.GetUtcNow();
        if (now - _ceilingReviewedAt >= CeilingReview)
        {
            // Lowering needs no write before it: a stored ceiling above the one in memory only withholds more after a move.
            var peak = Math.Max(Math.Max(_heldPeak, _previousPeak), needed);
            var lower = Math.Min(peak + (peak / 4), most);
            if (lower < State.ReservedCeiling * 3 / 4)
            {
                State.ReservedCeiling = lower;
                MarkDirty();
            }

            _previousPeak = _heldPeak;
            _heldPeak = _reserved.Total;
            _ceilingReviewedAt = now;
        }

        return needed <= State.ReservedCeiling ? ValueTask.CompletedTask : RaiseCeilingAsync(Math.Min(needed + (needed / 4), most));
    }

    // Stores a higher ceiling before the holds grow past the old one. Availability comes first when the database is slow or
    // away (its outage stalls settlements, so holds grow while it lasts): after CeilingWriteWait, or at once while an earlier
    // raise is still being written, the holds grow all the same and the write completes behind. Only the loss of this
    // activation before that write lands (a second fault during the database's) can then overdraw, by at most that growth.
    private async ValueTask RaiseCeilingAsync(long ceiling)
    {
        State.ReservedCeiling = ceiling;
        if (_ceilingWrite is { IsCompleted: false })
        {
            MarkDirty();
            metrics.RecordHoldCeilingUnstored();
            return;
        }

        var write = SaveNowAsync();
        _ceilingWrite = write;

        // Observed here whether or not the wait below sees it end: a late failure is written again behind.
        _ = write.ContinueWith(static done => done.Exception, CancellationToken.None, TaskContinuationOptions.OnlyOnFaulted, TaskScheduler.Default);
        var waited = await Task.WhenAny(write, Task.Delay(CeilingWriteWait, time));
        if (waited == write && write.IsCompletedSuccessfully)
        {
            metrics.RecordHoldCeilingRaised();
            return;
        }

        // Failed (written again behind) or still waiting for the database.
        MarkDirty();
        metrics.RecordHoldCeilingUnstored();
        LogCeilingNotStored(logger, this.GetPrimaryKeyString(), ceiling, write.Exception?.GetBaseException().Message ?? $"not stored within {CeilingWriteWait.TotalMilliseconds} ms");
    }

    public Task ReturnLeaseAsync(string keyId, IReadOnlyList<HoldRelease> lease, long seen, RequestId? request = null)
    {
        if (request is { } id)
        {
            if (_keyRequests.Check(id, time.GetUtcNow(), out _) != RequestSeen.New)
            {
                // Taken back before (or its key stopped waiting for the answer): releasing again would free money other
                // reservations in the same holds still need.
                return Task.CompletedTask;
            }

            _keyRequests.Remember(id, null);
        }

        TakeBack(keyId, lease, seen);
        return Task.CompletedTask;
    }

    private void TakeBack(string keyId, IReadOnlyList<HoldRelease> lease, long seen)
    {
        foreach (var part in lease)
        {
            _reserved.Release(part.Hold, part.Amount);
        }

        // A lease sent after the one the key has seen is still on its way to it: the key still counts as holding one.
        if (_lessees.TryGetValue(keyId, out var newest) && newest.Sequence <= seen)
        {
            _lessees.Remove(keyId);
            _recalled.Remove(keyId);
        }
    }

    // Gives back what nobody released in time, and forgets the lessees whose leases went with it.
    private void ExpireHolds()
    {
        if (_reserved.Expire(time.GetUtcNow(), out var expired) == 0)
        {
            return;
        }

        if (_lessees.Count > 0)
        {
            List<string>? gone = null;
            foreach (var (keyId, lessee) in _lessees)
            {
                if (!_reserved.IsLive(lessee.Hold))
                {
                    (gone ??= []).Add(keyId);
                }
            }

            foreach (var keyId in gone ?? [])
            {
                _lessees.Remove(keyId);
                _recalled.Remove(keyId);
            }
        }

        if (expired > 0)
        {
            metrics.RecordReservationsExpired(expired);
            LogReservationsExpired(logger, this.GetPrimaryKeyString(), expired);
        }
    }

    public Task SettleBatchAsync(SettlementBatch batch)
    {
        if (!Exists || !DeliveryMarks.TryAccept(_applied, batch.Delivery, time.GetUtcNow()))
        {
            return Task.CompletedTask;
        }

        if (batch.Releases is null)
        {
            _reserved.Release(0, batch.ReservedReleased);
        }
        else
        {
            // A hold of a previous activation is released from what this one withholds for it: this delivery never reached it.
            foreach (var release in batch.Releases)
            {
                if (_reserved.Release(release.Hold, release.Amount) == 0)
                {
                    _reserved.ReleasePrevious(release.Hold, release.Amount);
                }
            }
        }

        State.Balance -= batch.Charged;
        State.TotalCharged += batch.Charged;
        foreach (var service in batch.Services)
        {
            State.Usage.Add(service);
        }

        AlertWatch().Changed(State.Balance + State.CreditLimit + batch.Charged, time.GetUtcNow());
        return Task.CompletedTask;
    }

    public async Task FetchUndeliveredAsync(Guid sender)
    {
        // Without a mark, batches this activation's read already counted cannot be told apart: left to the next activation.
        if (!Exists || !_applied.TryGetValue(sender, out var mark))
        {
            return;
        }

        var batches = await journal.ReadBatchesAsync(sender, mark.Sequence, null, this.GetPrimaryKeyString());
        foreach (var batch in batches.GroupBy(b => b.Sequence).OrderBy(b => b.Key))
        {
            // The holds these calls were reserved in are not in the journal: they stay held until Metering:ReservationTimeout
            // (available is lower meanwhile, never higher), while the charges count now.
            var services = batch.GroupBy(b => b.Usage.ServiceId, StringComparer.Ordinal)
                .Select(s => new ServiceUsageDelta(s.Key, s.Sum(b => b.Usage.Calls), s.Sum(b => b.Usage.ChargedCalls), s.Sum(b => b.Usage.Failed),
                    s.Sum(b => b.Usage.Amount)))
                .ToList();
            await SettleBatchAsync(new SettlementBatch(0, services.Sum(s => s.Amount), services, [], new DeliveryId(sender, batch.Key)));
        }
    }

    public async Task AttachKeyAsync(string keyId)
    {
        EnsureExists();
        if (!State.KeyIds.Contains(keyId))
        {
            State.KeyIds.Add(keyId);
            await SaveNowAsync();
        }
    }

    private long Available => State.Balance - _reserved.Total + State.CreditLimit;

    protected override bool MergesConflicts => true;

    // Credits another activation stored are added to this one's; settings it changed win. What calls spent and counted is
    // the journal's, not stored state's, so there is nothing of it to merge.
    protected override void Merge(AccountState target, AccountState baseline, AccountState stored)
    {
        var credited = stored.Credits.GetValueOrDefault() - baseline.Credits.GetValueOrDefault();
        target.Credits = target.Credits.GetValueOrDefault() + credited;
        target.Balance += credited;
        target.TotalToppedUp = StateMerge.Counter(target.TotalToppedUp, baseline.TotalToppedUp, stored.TotalToppedUp);

        target.Name = StateMerge.Setting(target.Name, baseline.Name, stored.Name);
        target.CreditLimit = StateMerge.Setting(target.CreditLimit, baseline.CreditLimit, stored.CreditLimit);
        target.MonthlyCallCap = StateMerge.Setting(target.MonthlyCallCap, baseline.MonthlyCallCap, stored.MonthlyCallCap);
        target.ReservedCeiling = Math.Max(target.ReservedCeiling, stored.ReservedCeiling);
        StateMerge.Listed(target.KeyIds, baseline.KeyIds, stored.KeyIds, id => id);
        var since = baseline.Ledger.Count > 0 ? baseline.Ledger[^1].At : DateTimeOffset.MinValue;
        target.Ledger.AddRange(stored.Ledger.Where(entry => entry.At > since && !target.Ledger.Exists(mine => mine.At == entry.At && mine.Amount == entry.Amount)));
        target.Ledger.Sort((x, y) => x.At.CompareTo(y.At));
        if (target.Ledger.Count > LedgerLimit)
        {
            target.Ledger.RemoveRange(0, target.Ledger.Count - LedgerLimit);
        }
    }

    public Task WatchAlertsAsync(AlertWatch watch)
    {
        if (Exists)
        {
            AlertWatch().Apply(watch);
        }

        return Task.CompletedTask;
    }

    private BalanceAlertWatch AlertWatch() =>
        _alertWatch ??= new BalanceAlertWatch(GrainFactory, this.GetPrimaryKeyString(), () => State, time, logger);

    private void RollMonth()
    {
        var start = QuotaWindows.MonthStart(time.GetUtcNow(), TimeSpan.Zero);
        if (State.MonthStart != start)
        {
            State.MonthStart = start;
            State.CallsThisMonth = 0;
        }
    }

    private void EnsureExists()
    {
        if (!Exists)
        {
            throw new KeyNotFoundException($"Account '{this.GetPrimaryKeyString()}' does not exist.");
        }
    }

    private AccountInfo ToInfo() => new(
        this.GetPrimaryKeyString(), State.Name, State.Currency, State.Balance, _reserved.Total, State.CreditLimit, Available,
        State.TotalToppedUp, State.TotalCharged, State.Usage.ToContract(), [.. State.KeyIds], State.CreatedAt,
        State.MonthlyCallCap, State.MonthStart == QuotaWindows.MonthStart(time.GetUtcNow(), TimeSpan.Zero) ? State.CallsThisMonth : 0,
        State.Credits.GetValueOrDefault(), _reserved.Withheld);

    [LoggerMessage(Level = LogLevel.Information, Message = "Account {AccountId}: {Amount} withheld for what the previous activation may still hold (keys' leases, calls in flight), until settlements release it or {Until} at the latest")]
    private static partial void LogWithholding(ILogger logger, string accountId, long amount, DateTimeOffset until);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Account {AccountId}: the ceiling of its holds was raised to {Ceiling} but is not stored yet (written behind; until then a lost activation could overdraw by what the holds grow): {Reason}")]
    private static partial void LogCeilingNotStored(ILogger logger, string accountId, long ceiling, string reason);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Account {AccountId}: {Amount} held longer than the reservation timeout was released (a front door or key activation holding it is gone)")]
    private static partial void LogReservationsExpired(ILogger logger, string accountId, long amount);
}
