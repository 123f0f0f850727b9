using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;

namespace Marketplace.Grains;

/// <inheritdoc cref="IApiKeyGrain"/>
/// <remarks>
/// The grain is the only writer of the key's secrets, tokens, buckets and quota counters in the whole cluster,
/// so every check and the consumption that follows it happen as one step: quotas are exact, concurrent token
/// refreshes cannot overwrite each other, and a revocation is seen by the very next call on any silo.
/// Checks come first and consumption last, so a refused call consumes nothing.
/// <para>The grain is reentrant: every change happens between awaits, and admissions wait on the account while other
/// calls proceed, so a hot key is not capped by that round trip and a revocation never queues behind admissions.
/// The key holds a lease of its account's balance (see <see cref="IAccountGrain.ReserveWithLeaseAsync"/>) so most
/// admissions need no message to the account at all.</para>
/// <para>The counts live in memory, so each activation has an epoch that its admissions, their settlements and its leases'
/// reports carry. An activation stores a ceiling on the calls it counted and has not seen settled before admitting past it
/// (<see cref="UnsettledCeiling"/>); the next one withholds that ceiling from its quotas until the earlier epochs' calls are
/// confirmed or must have settled (<see cref="WithheldCalls"/>), so a lost activation never lets a quota be passed.</para>
/// </remarks>
[Reentrant]
public sealed partial class ApiKeyGrain(
    [PersistentState("apikey", StorageNames.Marketplace)] IPersistentState<ApiKeyState> store,
    IOptions<GrainPersistenceOptions> options,
    IOptions<TokenOptions> tokenOptions,
    IOptions<MeteringOptions> metering,
    IOptions<HotPathOptions> hotPath,
    IOptions<LeaseOptions> leaseOptions,
    ILogger<ApiKeyGrain> logger,
    TimeProvider time,
    MarketplaceMetrics metrics,
    IJournalReader journal,
    HotPathCalls calls) : WriteBehindGrain<ApiKeyState>(store, options, logger), IApiKeyGrain, IAlertWatcher
{
    private const int MaxActiveSecrets = 2;

    // How long an admission keeps asking while the account recalls leases from other keys (a refusal is final only once
    // they are back), and how far apart it asks. The bound is time, not a count of attempts: on a loaded machine a
    // recall can take far longer than a hundred short waits, and refusing early would refuse balance that exists. It
    // counts from the account's first "wait" (see RecallWait), and only ends a wait for a lessee that never answers.
    private static readonly TimeSpan LeaseRecallWait = TimeSpan.FromSeconds(5);
    private static readonly TimeSpan LeaseRetryDelay = TimeSpan.FromMilliseconds(2);
    private static readonly TimeSpan LeaseRetryMaxDelay = TimeSpan.FromMilliseconds(50);
    private static readonly TimeSpan LeaseIdleReturn = TimeSpan.FromSeconds(1);
    private static readonly TimeSpan LeaseRecallPoll = TimeSpan.FromMilliseconds(100);
    private static readonly TimeSpan LeaseRecallInterval = TimeSpan.FromMilliseconds(50);
    private long _lastRecall;

    // A wait for recalled leases is bounded below what the caller waits for the admission (the hot-path timeout).
    private TimeSpan RecallWait => TimeSpan.FromTicks(Math.Min(LeaseRecallWait.Ticks, hotPath.Value.GrainCallTimeout.Ticks * 4 / 5));

    // How many of this key's admissions ask its account at once (see AccountAskGate): enough to keep a busy key's refills
    // and call-by-call reservations flowing, few enough that the account's queue stays short for every key's recall.
    private const int AccountAsksAtOnce = 16;
    private readonly AccountAskGate _accountAsks = new(AccountAsksAtOnce);

    // The account's latest refusal for good (no lease left to take back) and the number of the request it answered. An
    // admission that was already waiting when that request was sent takes it as its own answer if its price is above what
    // the account had then: the account answered after the admission began, so the refusal is as exact as asking again.
    private long _accountAsksSent;
    private (long Ask, Reservation Refusal)? _accountRefused;

    // The front doors' leases of this key (see LeaseAsync), and whether the account asked for its balance back meanwhile.
    private readonly KeyLeaseLedger _leases = new();
    private IGrainTimer? _reclaimTimer;
    private bool _recalled;

    // Whether the account's last answer leased more than one call (it has room): only then does a lease asked for ahead
    // of need reserve from the account; otherwise it passes on only what the key already holds.
    private bool _accountLeases = true;

    // The key's lease of its account's balance, by the account hold carrying each part: one part, or a few when
    // admissions overlapped while the account answered. _lease is their sum.
    private readonly List<LeasePart> _leaseParts = [];
    private long _lease;
    private readonly AccountLeaseReceipts _receipts = new();

    // Ids of this activation's requests to its account (asks and returns), each sent until answered (see RequestId).
    private readonly RequestNumbers _accountRequests = new();

    // The leases granted per front door request, so a request sent again after its answer was lost gets the same lease
    // rather than a second one nobody would report. In memory like the leases themselves (see RequestMemory).
    private readonly RequestMemory<Task<KeyLease>> _leaseRequests = new();
    private long _lastAvailable;
    private bool _leaseUsed;
    private IGrainTimer? _leaseTimer;

    private readonly Dictionary<string, TokenBucket> _buckets = new(StringComparer.Ordinal);
    private readonly Dictionary<string, int> _undecided = new(StringComparer.Ordinal);
    private TaskCompletionSource? _undecidedChanged;
    private readonly Dictionary<string, (TokenPair Pair, byte[] Hash, DateTimeOffset At)> _recentRefreshes = new(StringComparer.Ordinal);

    // The account's quota alert thresholds, so only a call that reaches one sends a (one-way) signal.
    private QuotaAlertWatch? _alertWatch;

    // The highest journal batch applied per sender: seeded at activation from the journal read, then advanced by deliveries.
    private readonly Dictionary<Guid, DeliveryMark> _applied = [];

    // This activation's epoch: every admission it answers names it, each call carries it to its settlement, and each lease's
    // report names it, so a later activation can tell what this one counted from what it counted itself.
    private readonly long _epoch = Random.Shared.NextInt64(1, long.MaxValue);

    // The calls this activation counted into its quotas and has not seen settled or given back, the stored bound on them and
    // on what it withholds for earlier activations (see UnsettledCeiling), and what it withholds (see WithheldCalls).
    private readonly UnsettledCalls _unsettled = new(WithheldCalls.Horizon(leaseOptions.Value, metering.Value), time.GetUtcNow());
    private UnsettledCeiling? _ceiling;
    private IGrainTimer? _lowerTimer;
    private WithheldCalls _withheld = WithheldCalls.None(DateTimeOffset.MinValue);
    private Func<(long Unsettled, long Withheld)>? _coveredNow;

    // Usage and quota counts are not stored per call: they are rebuilt here from the journal, which counts every admitted
    // call once it is settled. What earlier activations counted that the journal does not hold yet (calls in flight, in front
    // doors' batches or still spendable from their leases) is withheld from the quotas instead, until it arrives.
    public override async Task OnActivateAsync(CancellationToken cancellationToken)
    {
        await base.OnActivateAsync(cancellationToken);
        if (!Exists)
        {
            return;
        }

        var now = time.GetUtcNow();
        var read = await journal.ReadKeyAsync(this.GetPrimaryKeyString());
        var offset = State.Limits.WindowOffset ?? TimeSpan.Zero;
        var offsetMinutes = (int)offset.TotalMinutes;
        var today = JournalWindows.Day(now, offsetMinutes);
        var month = JournalWindows.Month(now, offsetMinutes);
        var usage = new UsageState();
        State.Quotas.Clear();
        long dayCalls = 0, monthCalls = 0;
        foreach (var service in read.Services)
        {
            usage.Add(new ServiceUsageDelta(service.ServiceId, service.Totals.Calls, service.Totals.ChargedCalls, service.Totals.Failed, service.Totals.Charged));
            var serviceDay = service.Day == today ? service.DayCalls : 0;
            var serviceMonth = service.Month == month ? service.MonthCalls : 0;
            dayCalls += serviceDay;
            monthCalls += serviceMonth;
            SeedCounter($"{QuotaWindows.Day}:{service.ServiceId}", QuotaWindows.DayStart(now, offset), serviceDay);
            SeedCounter($"{QuotaWindows.Month}:{service.ServiceId}", QuotaWindows.MonthStart(now, offset), serviceMonth);
        }

        SeedCounter(QuotaWindows.Day, QuotaWindows.DayStart(now, offset), dayCalls);
        SeedCounter(QuotaWindows.Month, QuotaWindows.MonthStart(now, offset), monthCalls);
        State.Usage = usage;
        DeliveryMarks.Seed(_applied, read.Senders, now);

        // What earlier activations counted beyond this read is at most their stored ceiling: withheld until confirmed.
        Ceiling.Loaded(State.UnsettledCeiling);
        _withheld = new WithheldCalls(State.UnsettledCeiling, new Dictionary<Guid, long>(read.Senders), now,
            WithheldCalls.Horizon(leaseOptions.Value, metering.Value));
        if (_withheld.Remaining > 0)
        {
            LogWithholding(logger, this.GetPrimaryKeyString(), _withheld.Remaining, _withheld.EndsAt);
        }
    }

    private UnsettledCeiling Ceiling => _ceiling ??= new UnsettledCeiling(
        () => State.UnsettledCeiling, value => State.UnsettledCeiling = value, SaveNowAsync, MarkDirty, time,
        (ceiling, reason) =>
        {
            // Counted per admission, logged once a second at most: a database outage would otherwise log every call.
            metrics.RecordUnsettledCeilingUnstored();
            var now = time.GetUtcNow();
            if (now - _ceilingUnstoredLogged >= UnsettledCeiling.RetryAfter)
            {
                _ceilingUnstoredLogged = now;
                LogCeilingNotStored(logger, this.GetPrimaryKeyString(), ceiling, reason);
            }
        });
    private DateTimeOffset _ceilingUnstoredLogged = DateTimeOffset.MinValue;

    // What the stored ceiling must cover: this activation's unsettled calls and what it withholds for earlier ones (so an
    // activation after this one withholds both).
    private (long Unsettled, long Withheld) Covered(DateTimeOffset now) => (_unsettled.CountAt(now), Withheld(now));

    // Looked at again while the ceiling is above its least, so a key whose calls stopped has it lowered too.
    private void RelaxCeiling(DateTimeOffset now)
    {
        var (unsettled, withheld) = Covered(now);
        if (Ceiling.Relax(unsettled, withheld))
        {
            _lowerTimer ??= this.RegisterGrainTimer(_ =>
            {
                RelaxCeiling(time.GetUtcNow());
                return Task.CompletedTask;
            }, new GrainTimerCreationOptions(UnsettledCeiling.LowerAfter, UnsettledCeiling.LowerAfter) { KeepAlive = false, Interleave = true });
        }
        else
        {
            _lowerTimer?.Dispose();
            _lowerTimer = null;
        }
    }

    private long Withheld(DateTimeOffset now)
    {
        if (_withheld.Expire(now))
        {
            LogWithheldEnded(logger, this.GetPrimaryKeyString(), "every call of the earlier activations has settled");
            SignalUndecided();
        }

        return _withheld.Remaining;
    }

    // Calls of earlier activations confirmed (settled, or never to be spent) leave what is withheld.
    private void ConfirmWithheld(long calls, DateTimeOffset now)
    {
        if (calls <= 0)
        {
            return;
        }

        if (_withheld.Confirm(calls))
        {
            LogWithheldEnded(logger, this.GetPrimaryKeyString(), "all of it was confirmed");
        }

        SignalUndecided();
        RelaxCeiling(now);
    }

    private void SeedCounter(string counterKey, DateTimeOffset windowStart, long count)
    {
        if (count > 0)
        {
            State.Quotas[counterKey] = new QuotaCounterState { WindowStart = windowStart, Count = count };
        }
    }

    public async Task<ApiKeyCreated> CreateAsync(ApiKeySpec spec, string? presetSecret = null)
    {
        var keyId = this.GetPrimaryKeyString();
        var now = time.GetUtcNow();
        Validation.ThrowIfInvalid(Validation.Check(spec, now));
        if (!ApiKeySecrets.IsValidKeyId(keyId))
        {
            throw new ArgumentException("Invalid key id.");
        }

        if (Exists)
        {
            throw new InvalidOperationException($"API key '{keyId}' already exists.");
        }

        if (presetSecret is not null && !ApiKeySecrets.IsValidSecret(presetSecret))
        {
            throw new ArgumentException("A preset secret must be 16 to 128 characters of [A-Za-z0-9_-].");
        }

        var account = GrainFactory.GetGrain<IAccountGrain>(spec.AccountId);
        var accountInfo = await account.GetAsync()
            ?? throw new KeyNotFoundException($"Account '{spec.AccountId}' does not exist.");

        var secret = presetSecret ?? ApiKeySecrets.NewSecret();
        State.AccountId = spec.AccountId;
        State.Currency = accountInfo.Currency;
        State.Name = spec.Name;
        State.Status = ApiKeyStatus.Active;
        State.Services = [.. spec.Services.Distinct(StringComparer.Ordinal)];
        State.ExpiresAt = spec.ExpiresAt;
        State.CreatedAt = now;
        State.Limits = LimitsState.From(spec.Limits);
        State.Secrets = [NewSecretState(secret, now)];
        await SaveNowAsync();
        Ceiling.Loaded(State.UnsettledCeiling);
        await account.AttachKeyAsync(keyId);
        return new ApiKeyCreated(ToInfo(), ApiKeySecrets.Format(keyId, secret));
    }

    public Task<ApiKeyInfo?> GetAsync() => Task.FromResult(Exists ? ToInfo() : null);

    public async Task<ApiKeyInfo?> UpdateAsync(ApiKeyUpdate update)
    {
        if (!Exists)
        {
            return null;
        }

        var now = time.GetUtcNow();
        var merged = new ApiKeySpec(State.AccountId, update.Name ?? State.Name, update.Services ?? State.Services,
            update.ExpiresAt ?? State.ExpiresAt, update.Limits ?? State.Limits.ToContract());
        var errors = Validation.Check(merged, now);
        if (update.ExpiresAt is null)
        {
            // An unchanged expiry may already be in the past; that is the admin's business, not an input error.
            errors.Remove("expiresAt");
        }

        Validation.ThrowIfInvalid(errors);

        // Everything that can fail happens before the first change, so a refused update leaves the key as it was.
        var limits = update.Limits is null ? null : LimitsState.From(update.Limits);
        State.Name = merged.Name;
        State.Services = [.. merged.Services.Distinct(StringComparer.Ordinal)];
        State.ExpiresAt = merged.ExpiresAt;
        if (limits is not null)
        {
            State.Limits = limits;
            _buckets.Clear();
        }

        await SaveNowAsync();
        TellHolders();
        return ToInfo();
    }

    public async Task<ApiKeyInfo?> SetStatusAsync(ApiKeyStatus status)
    {
        if (!Exists)
        {
            return null;
        }

        if (State.Status == ApiKeyStatus.Revoked && status != ApiKeyStatus.Revoked)
        {
            throw new InvalidOperationException("A revoked key cannot be reactivated.");
        }

        if (State.Status != status)
        {
            State.Status = status;
            if (status == ApiKeyStatus.Revoked)
            {
                State.Tokens.Clear();
            }

            await SaveNowAsync();
            TellHolders();
        }

        return ToInfo();
    }

    public async Task<ApiKeyCreated?> RotateAsync(TimeSpan overlap)
    {
        if (!Exists)
        {
            return null;
        }

        if (State.Status == ApiKeyStatus.Revoked)
        {
            throw new InvalidOperationException("A revoked key cannot be rotated.");
        }

        if (overlap < TimeSpan.Zero || overlap > TimeSpan.FromDays(30))
        {
            throw new ArgumentException("overlapSeconds must be between 0 and 2592000 (30 days).");
        }

        var now = time.GetUtcNow();
        PruneSecrets(now);
        if (State.Secrets.Count >= MaxActiveSecrets)
        {
            throw new InvalidOperationException("The key already has two active secrets; retire one before issuing another.");
        }

        foreach (var current in State.Secrets.Where(s => s.RetiresAt is null))
        {
            current.RetiresAt = now + overlap;
        }

        var secret = ApiKeySecrets.NewSecret();
        State.Secrets.Add(NewSecretState(secret, now));
        PruneSecrets(now);
        await SaveNowAsync();
        TellHolders();
        return new ApiKeyCreated(ToInfo(), ApiKeySecrets.Format(this.GetPrimaryKeyString(), secret));
    }

    public async Task<ApiKeyInfo?> RetireSecretAsync(string secretId)
    {
        if (!Exists)
        {
            return null;
        }

        var now = time.GetUtcNow();
        PruneSecrets(now);
        var secret = State.Secrets.FirstOrDefault(s => s.Id == secretId)
            ?? throw new KeyNotFoundException($"The key has no active secret '{secretId}'.");
        if (State.Secrets.Count == 1)
        {
            throw new InvalidOperationException("This is the key's only secret; rotate first, or suspend or revoke the key.");
        }

        State.Secrets.Remove(secret);
        await SaveNowAsync();
        TellHolders();
        return ToInfo();
    }

    public async Task<bool> DeleteAsync()
    {
        if (!Exists)
        {
            return false;
        }

        var accountId = State.AccountId;
        TellHolders();
        await ReturnLeaseAsync();
        await ClearAsync();
        _buckets.Clear();
        _recentRefreshes.Clear();
        await GrainFactory.GetGrain<IAccountGrain>(accountId).DetachKeyAsync(this.GetPrimaryKeyString());
        return true;
    }

    public async ValueTask<AdmitResult> AdmitAsync(AdmitRequest request)
    {
        if (Check(request.Secret, request.Kind, time.GetUtcNow()) is { } refusal)
        {
            return Refuse(refusal);
        }

        var admission = await AdmitCallsAsync(Guid.Empty, request.ServiceId, request.Price, request.Currency, 1, waiting: true);
        return admission.Parts.Count > 0 ? admission.Result with { Hold = admission.Parts[0].Hold } : admission.Result;
    }

    public ValueTask<KeyLease> LeaseAsync(KeyLeaseRequest request)
    {
        if (request.Request is not { } id)
        {
            return GrantLeaseAsync(request);
        }

        switch (_leaseRequests.Check(id, time.GetUtcNow(), out var first))
        {
            // A first run that failed granted nothing (its reports are ended by id, so ending them again changes nothing): run anew.
            case RequestSeen.Repeat when first is { IsFaulted: false, IsCanceled: false }:
                return new ValueTask<KeyLease>(first);
            case RequestSeen.Stale:
                // Its holder stopped waiting for it: nothing granted.
                return ValueTask.FromResult(KeyLease.Refused(AdmitOutcome.Admitted));
        }

        // Remembered before it runs: the grain interleaves, so a repeat may arrive while the first is still being decided.
        var granting = GrantLeaseAsync(request).AsTask();
        _leaseRequests.Remember(id, granting);
        return new ValueTask<KeyLease>(granting);
    }

    private async ValueTask<KeyLease> GrantLeaseAsync(KeyLeaseRequest request)
    {
        var now = time.GetUtcNow();
        GiveBack(_leases.End(request.Holder, OwnReports(request.Ended, now), now));
        var refusal = request.Proof is null ? KeyStatusRefusal(now) : Check(request.Proof, request.Kind, now);
        if (refusal is { } outcome)
        {
            return KeyLease.Refused(outcome);
        }

        var options = leaseOptions.Value;
        var admission = await AdmitCallsAsync(request.Holder, request.ServiceId, request.Price, request.Currency,
            Math.Clamp(request.Wanted, 0, options.MaxCalls), request.Waiting);
        var result = admission.Result;
        if (result.Outcome != AdmitOutcome.Admitted)
        {
            return KeyLease.Refused(result.Outcome, result.Limit, result.AccountId, result.Available, result.Currency);
        }

        var leaseId = 0L;
        if (admission.Parts.Count > 0)
        {
            leaseId = _leases.Grant(request.Holder, request.Observer,
                new GrantedLease(request.ServiceId, request.Price, admission.Parts, admission.Counted) { Generation = admission.Generation }, time.GetUtcNow());
            _reclaimTimer ??= this.RegisterGrainTimer(ReclaimLapsedLeasesAsync, new GrainTimerCreationOptions(options.Lifetime, options.Lifetime)
            {
                KeepAlive = false,
                Interleave = true,
            });
        }

        var verified = request.Kind == CredentialKind.AccessToken ? request.Proof : null;
        return new KeyLease(AdmitOutcome.Admitted, leaseId, State.AccountId, State.Currency,
            admission.Parts.ConvertAll(part => new LeaseAllowance(part.Hold, part.Calls)), options.Lifetime, Credentials(now, verified),
            result.Available, result.Limit, result.WindowOffsetMinutes, request.Price, _epoch);
    }

    public Task EndLeasesAsync(Guid holder, IReadOnlyList<LeaseReport> ended)
    {
        var now = time.GetUtcNow();
        GiveBack(_leases.End(holder, OwnReports(ended, now), now));
        return Task.CompletedTask;
    }

    // Reports of leases an earlier activation granted end nothing here, but their unspent calls will never be spent: they
    // leave what is withheld (once per lease, and not when the report may have reached that activation before it went away).
    // Returns the reports of this activation's leases (and of senders that name no epoch).
    private IReadOnlyList<LeaseReport> OwnReports(IReadOnlyList<LeaseReport> reports, DateTimeOffset now)
    {
        List<LeaseReport>? own = null;
        for (var i = 0; i < reports.Count; i++)
        {
            var report = reports[i];
            if (report.Epoch == 0 || report.Epoch == _epoch)
            {
                own?.Add(report);
                continue;
            }

            own ??= [.. reports.Take(i)];
            if (!report.Resent && _withheld.FirstReport(report.Epoch, report.LeaseId))
            {
                ConfirmWithheld(Math.Max(0, report.Calls - report.Used), now);
            }
        }

        return own ?? reports;
    }

    // Leases whose holder went silent (its process was killed) give back what its journal shows it did not spend. The holder
    // may have died between committing a batch and sending its settlements: those batches are fetched from the journal first,
    // so its spent calls are counted (and its account charged) rather than given back. A fetch that fails (the database is
    // away) defers that holder's reclaim to the next round: its allowance stays held rather than handed out twice.
    private async Task ReclaimLapsedLeasesAsync(CancellationToken cancellationToken)
    {
        var options = leaseOptions.Value;
        HashSet<Guid>? deferred = null;
        foreach (var holder in _leases.DueForReclaim(time.GetUtcNow(), options.Lifetime, options.ReclaimAfter))
        {
            if (!await FetchUndeliveredAsync(holder))
            {
                (deferred ??= []).Add(holder);
            }
        }

        GiveBack(_leases.Reclaim(time.GetUtcNow(), options.Lifetime, options.ReclaimAfter, deferred));
        if (!_leases.AnyOpen)
        {
            _reclaimTimer?.Dispose();
            _reclaimTimer = null;
        }
    }

    // Applies the batches of a sender the journal committed and this key never received, each once (the delivery marks), and
    // tells the account to do the same. A sender that delivered nothing here since this activation is left to the next
    // activation's read of the totals: without a mark, batches the activation already counted cannot be told apart.
    private async Task<bool> FetchUndeliveredAsync(Guid sender)
    {
        if (!_applied.TryGetValue(sender, out var mark))
        {
            return true;
        }

        IReadOnlyList<JournalBatchUsage> batches;
        try
        {
            batches = await journal.ReadBatchesAsync(sender, mark.Sequence, this.GetPrimaryKeyString(), null);
        }
        catch (Exception exception)
        {
            LogFetchFailed(logger, this.GetPrimaryKeyString(), sender, exception.Message);
            return false;
        }

        if (batches.Count == 0)
        {
            return true;
        }

        // Other messages may have run while the journal was read: RecordBatchAsync skips a batch a delivery brought meanwhile.
        var calls = 0L;
        foreach (var batch in batches.GroupBy(b => b.Sequence).OrderBy(b => b.Key))
        {
            calls += batch.Sum(b => b.Usage.Calls);
            await RecordBatchAsync([.. batch.Select(b => b.Usage)], new DeliveryId(sender, batch.Key));
        }

        LogFetched(logger, this.GetPrimaryKeyString(), calls, sender);
        if (Exists)
        {
            _ = TellAccountAsync(GrainFactory.GetGrain<IAccountGrain>(State.AccountId), sender);
        }

        return true;

        async Task TellAccountAsync(IAccountGrain account, Guid silent)
        {
            try
            {
                await account.FetchUndeliveredAsync(silent);
            }
            catch (Exception exception)
            {
                LogFetchFailed(logger, State.AccountId, silent, exception.Message);
            }
        }
    }

    // What ended leases did not spend goes back: their quota counts (in the windows that counted them), their rate tokens,
    // and their price to the key's lease of the account's balance (in the holds that carry it).
    private void GiveBack(List<KeyLeaseLedger.Returned> returned)
    {
        if (returned.Count == 0)
        {
            return;
        }

        var now = time.GetUtcNow();
        foreach (var (lease, unused) in returned)
        {
            if (unused <= 0)
            {
                continue;
            }

            _unsettled.GiveBack(unused, lease.Generation, now);
            foreach (var (counterKey, windowStart) in lease.Counted)
            {
                if (State.Quotas.TryGetValue(counterKey, out var counter) && counter.WindowStart == windowStart)
                {
                    counter.Count = Math.Max(0, counter.Count - unused);
                }
            }

            _buckets.GetValueOrDefault("rate")?.Refund(unused);
            _buckets.GetValueOrDefault("rate:" + lease.ServiceId)?.Refund(unused);
            if (lease.Price > 0)
            {
                foreach (var part in lease.Unspent(unused))
                {
                    AddToLease(part.Hold, part.Calls * lease.Price, part.HoldAt);
                }
            }
        }

        SignalUndecided();
        RelaxCeiling(now);
        if (_recalled)
        {
            _recalled = false;
            _ = ReturnLeaseAsync();
        }
    }

    // Tells every holder the key changed: they drop its leases and report them, and ask again on their next call.
    private void TellHolders()
    {
        if (!leaseOptions.Value.PushChanges)
        {
            return;
        }

        var keyId = this.GetPrimaryKeyString();
        foreach (var observer in _leases.Observers)
        {
            try
            {
                _ = observer.KeyChanged(keyId);
            }
            catch (Exception exception)
            {
                // A holder that cannot be told loses its lease within the lease's lifetime anyway.
                LogHolderNotTold(logger, keyId, exception.Message);
            }
        }
    }

    // One call or a lease's allowance of calls: entitlement, rate tokens, quotas (exact: near a limit only what a waiting
    // caller needs, and a refusal only once other holders gave back what they did not spend), then the price from the account.
    private async ValueTask<Admission> AdmitCallsAsync(Guid holder, string serviceId, long price, string currency, int wanted, bool waiting)
    {
        if (!State.Services.Contains(serviceId, StringComparer.Ordinal))
        {
            return new Admission(Refuse(AdmitOutcome.NotEntitled));
        }

        if (!string.Equals(State.Currency, currency, StringComparison.Ordinal))
        {
            return new Admission(new AdmitResult(AdmitOutcome.CurrencyMismatch, State.AccountId, 0, 0, State.Currency));
        }

        // Set when the admission first has to wait for leases to come back (not when it began: its turn to ask the account
        // may come late on a busy key), so the bound on that wait is a last resort for holders that are gone.
        DateTimeOffset? recallUntil = null;
        while (true)
        {
            var now = time.GetUtcNow();
            var withheld = Withheld(now);
            var limits = State.Limits;
            var serviceLimits = limits.PerService.GetValueOrDefault(serviceId);
            var quotas = QuotasFor(serviceId, limits, serviceLimits);
            var offset = limits.WindowOffset ?? TimeSpan.Zero;

            // Admissions interleave while the account answers (see IApiKeyGrain.AdmitAsync). A quota with admissions
            // still undecided near its limit makes this one wait for them rather than guess, so the count stays exact.
            if (quotas.Count > 0 && QuotaUndecided(quotas, now, offset))
            {
                await WhenUndecidedChanges();
                continue;
            }

            // 1. Look, without consuming anything.
            var keyBucket = Bucket("rate", limits.Rate, now);
            var serviceBucket = Bucket("rate:" + serviceId, serviceLimits?.Rate, now);
            if (keyBucket is not null && keyBucket.Available(now) < 1)
            {
                return new Admission(Refuse(AdmitOutcome.RateLimited, keyBucket.Status("rate", now)));
            }

            if (serviceBucket is not null && serviceBucket.Available(now) < 1)
            {
                return new Admission(Refuse(AdmitOutcome.RateLimited, serviceBucket.Status("service-rate", now)));
            }

            var calls = wanted;
            LimitStatus? tightest = null;
            LimitStatus? exhausted = null;
            var byWithheld = false;
            foreach (var (counterKey, window, limit, policy) in quotas)
            {
                // Calls an earlier activation may have admitted count as used until they are confirmed (see WithheldCalls).
                var counter = Counter(counterKey, window, now, offset);
                var used = Used(counter);
                var status = QuotaStatus(policy, window, counter, used, limit, now, offset);
                if (used >= limit)
                {
                    exhausted = status;
                    byWithheld = counter.Count < limit;
                    break;
                }

                // What is left once the calls still undecided are counted.
                var left = limit - used - _undecided.GetValueOrDefault(counterKey);
                calls = Math.Min(calls, KeyLeaseSizing.QuotaCalls(left, limit, waiting));
                tightest = Tighter(tightest, status with { Remaining = Math.Max(0, left - Math.Max(calls, 1)) });
            }

            if (exhausted is not null)
            {
                // Calls leased to front doors count as used until they come back: a refusal is final only once they are back.
                // Likewise the calls withheld for an earlier activation early in this one's life: that activation's front doors
                // report its leases and settle its calls within moments (a lease is spent within its lifetime).
                var confirming = byWithheld && withheld > 0 && now < _withheld.Since + RecallWait;
                if (waiting && (_leases.AnyOpen || confirming) && now < (recallUntil ??= now + RecallWait))
                {
                    await RecallFromHoldersAsync();
                    continue;
                }

                return new Admission(Refuse(AdmitOutcome.QuotaExhausted, exhausted));
            }

            calls = Math.Min(calls, KeyLeaseSizing.RateCalls(keyBucket?.Available(now), waiting));
            calls = Math.Min(calls, KeyLeaseSizing.RateCalls(serviceBucket?.Available(now), waiting));
            if (calls <= 0)
            {
                // Nothing to lease ahead of need: the holder gets fresh credentials only.
                return new Admission(new AdmitResult(AdmitOutcome.Admitted, State.AccountId, 0, _lastAvailable + _lease, State.Currency, tightest, 0,
                    (int)offset.TotalMinutes));
            }

            // 2. Hold what these calls would use, make the stored ceiling cover them, then ask the account (the balance and its
            // monthly cap have their own single writer). The held calls count as unsettled from here, so no admission returns
            // before the ceiling covering its calls is durable (an activation after this one withholds them). A key without
            // any quota has nothing to withhold from, and stores no ceiling.
            keyBucket?.Take(calls);
            serviceBucket?.Take(calls);
            foreach (var quota in quotas)
            {
                _undecided[quota.CounterKey] = _undecided.GetValueOrDefault(quota.CounterKey) + calls;
            }

            var generation = _unsettled.Add(calls, now);
            List<GrantedPart> parts;
            Reservation reservation;
            try
            {
                if (limits.HasQuota())
                {
                    await Ceiling.EnsureAsync(_coveredNow ??= () => Covered(time.GetUtcNow()));
                }

                (parts, reservation) = await ReserveCallsAsync(price, calls, waiting);
            }
            catch
            {
                Decide(quotas, calls, 0, generation, time.GetUtcNow(), offset, keyBucket, serviceBucket);
                throw;
            }

            // 3. Consume, or give back: a refused call uses no quota and no rate-limit token.
            var granted = parts.Sum(part => part.Calls);
            var counted = Decide(quotas, calls, granted, generation, time.GetUtcNow(), offset, keyBucket, serviceBucket);
            if (granted == 0 && reservation.Granted)
            {
                // Asked ahead of need while the account holds money call by call: fresh credentials only.
                return new Admission(new AdmitResult(AdmitOutcome.Admitted, State.AccountId, 0, reservation.Available, State.Currency, tightest, 0,
                    (int)offset.TotalMinutes));
            }

            var decided = time.GetUtcNow();
            if (granted == 0 && waiting && !reservation.CapReached && _leases.AnyOpen && decided < (recallUntil ??= decided + RecallWait))
            {
                // Balance leased to front doors is not spent until they say so: a refusal is final only once it is back.
                await RecallFromHoldersAsync();
                continue;
            }

            if (granted == 0)
            {
                return new Admission(new AdmitResult(reservation.CapReached ? AdmitOutcome.AccountCapReached : AdmitOutcome.InsufficientBalance,
                    State.AccountId, 0, reservation.Available, reservation.Currency));
            }

            if (keyBucket is not null)
            {
                tightest = Tighter(tightest, keyBucket.Status("rate", now));
            }

            if (serviceBucket is not null)
            {
                tightest = Tighter(tightest, serviceBucket.Status("service-rate", now));
            }

            return new Admission(
                new AdmitResult(AdmitOutcome.Admitted, State.AccountId, price, reservation.Available, reservation.Currency, tightest, parts[0].Hold,
                    (int)offset.TotalMinutes, _epoch),
                parts, counted, generation);
        }
    }

    private sealed record Admission(
        AdmitResult Result, List<GrantedPart> Parts, List<(string CounterKey, DateTimeOffset WindowStart)> Counted, long Generation = 0)
    {
        public Admission(AdmitResult result)
            : this(result, [], [])
        {
        }
    }

    // Asks the holders for their leases back and waits until one comes back (or a while: a silent one is reclaimed later).
    // Only leases of several calls are recalled, and at most once per interval: a one-call lease is being spent by the
    // caller it was granted to, and recalling it would only make that caller ask again.
    private async Task RecallFromHoldersAsync()
    {
        var now = time.GetTimestamp();
        if (_leases.AnyBulkOpen && time.GetElapsedTime(_lastRecall, now) >= LeaseRecallInterval)
        {
            _lastRecall = now;
            TellHolders();
        }

        try
        {
            await WhenUndecidedChanges().WaitAsync(LeaseRecallPoll, time);
        }
        catch (TimeoutException)
        {
            // Asked again by the caller's loop.
        }
    }

    private Task WhenUndecidedChanges() =>
        (_undecidedChanged ??= new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously)).Task;

    private void SignalUndecided()
    {
        var waiters = _undecidedChanged;
        _undecidedChanged = null;
        waiters?.SetResult();
    }

    // True while some quota could be exhausted by the admissions still waiting for their account's answer.
    private bool QuotaUndecided(List<(string CounterKey, string Window, long Limit, string Policy)> quotas, DateTimeOffset now, TimeSpan offset)
    {
        foreach (var (counterKey, window, limit, _) in quotas)
        {
            var undecided = _undecided.GetValueOrDefault(counterKey);
            if (undecided > 0 && Used(Counter(counterKey, window, now, offset)) + undecided >= limit)
            {
                return true;
            }
        }

        return false;
    }

    // A quota window's calls as admissions count them: those counted, and those withheld for earlier activations.
    private long Used(QuotaCounterState counter) => counter.Count + _withheld.For(counter.WindowStart);

    // Counts the granted calls (and gives back the rest of those held); returns the windows that counted them.
    private List<(string CounterKey, DateTimeOffset WindowStart)> Decide(List<(string CounterKey, string Window, long Limit, string Policy)> quotas,
        int held, int granted, long generation, DateTimeOffset now, TimeSpan offset, TokenBucket? keyBucket, TokenBucket? serviceBucket)
    {
        var counted = new List<(string, DateTimeOffset)>(quotas.Count);
        foreach (var (counterKey, window, limit, policy) in quotas)
        {
            var left = _undecided.GetValueOrDefault(counterKey) - held;
            if (left <= 0)
            {
                _undecided.Remove(counterKey);
            }
            else
            {
                _undecided[counterKey] = left;
            }

            if (granted > 0)
            {
                var counter = Counter(counterKey, window, now, offset);
                counter.Count += granted;
                counted.Add((counterKey, counter.WindowStart));
                AlertWatch().Counted(counterKey, policy, limit, counter, now, granted);
            }
        }

        if (held > granted)
        {
            keyBucket?.Refund(held - granted);
            serviceBucket?.Refund(held - granted);
            _unsettled.GiveBack(held - granted, generation, now);
        }

        SignalUndecided();
        return counted;
    }

    public Task RecallLeaseAsync()
    {
        // The front doors' allowances go back to the account too, once they report them.
        if (_leases.AnyOpen)
        {
            _recalled = true;
            TellHolders();
        }

        return ReturnLeaseAsync(always: true);
    }

    public Task WatchAlertsAsync(AlertWatch watch)
    {
        if (Exists)
        {
            AlertWatch().Apply(watch);
        }

        return Task.CompletedTask;
    }

    private QuotaAlertWatch AlertWatch() =>
        _alertWatch ??= new QuotaAlertWatch(GrainFactory, State.AccountId, this.GetPrimaryKeyString(), () => State, time, logger);

    public override async Task OnDeactivateAsync(DeactivationReason reason, CancellationToken cancellationToken)
    {
        await ReturnLeaseAsync();
        if (Exists)
        {
            // Going away in order (a rolling restart, idle collection): the next activation withholds exactly what is still
            // unsettled, not the headroom above it. Killed instead, it withholds the last ceiling stored.
            try
            {
                var (unsettled, withheld) = Covered(time.GetUtcNow());
                await Ceiling.SettleAsync(unsettled + withheld);
            }
            catch (Exception exception)
            {
                LogCeilingNotSettled(logger, this.GetPrimaryKeyString(), exception.Message);
            }
        }

        await base.OnDeactivateAsync(reason, cancellationToken);
    }

    // The price of up to `calls` calls: from the key's lease of the account's balance as far as it covers them, otherwise one
    // call from the account (which refills the lease) and then the rest from the lease. Fewer calls than asked when the lease
    // runs out; none when the account refuses.
    private async ValueTask<(List<GrantedPart> Parts, Reservation Reservation)> ReserveCallsAsync(long price, int calls, bool waiting)
    {
        var parts = new List<GrantedPart>(1);
        if (price > 0)
        {
            TakeCalls(price, calls, parts);
        }

        if (parts.Count == 0 && !waiting && (price == 0 || !_accountLeases))
        {
            // Nobody waits, and the account holds money call by call (a low balance or a cap): nothing is reserved ahead.
            return (parts, new Reservation(true, _lastAvailable + _lease, State.Currency));
        }

        if (parts.Count == 0)
        {
            var reservation = await ReserveAsync(price, calls - 1);
            if (!reservation.Granted)
            {
                return (parts, reservation);
            }

            parts.Add(new GrantedPart(reservation.Hold, 1, time.GetUtcNow()));
            if (price > 0 && calls > 1)
            {
                TakeCalls(price, calls - 1, parts);
            }

            if (price == 0)
            {
                return (parts, reservation);
            }
        }

        _leaseUsed = true;
        return (parts, new Reservation(true, _lastAvailable + _lease, State.Currency, Hold: parts[0].Hold));
    }

    // Takes whole calls' prices from the lease's parts, oldest first.
    private void TakeCalls(long price, int calls, List<GrantedPart> parts)
    {
        for (var i = 0; i < _leaseParts.Count && calls > 0;)
        {
            var part = _leaseParts[i];
            var taken = (int)Math.Min(calls, part.Amount / price);
            if (taken > 0)
            {
                part.Amount -= taken * price;
                _lease -= taken * price;
                calls -= taken;
                parts.Add(new GrantedPart(part.Hold, taken, part.At));
            }

            if (part.Amount == 0)
            {
                _leaseParts.RemoveAt(i);
            }
            else
            {
                i++;
            }
        }
    }

    // Puts money a front door did not spend back into the key's lease, in the hold that carries it.
    private void AddToLease(long hold, long amount, DateTimeOffset at)
    {
        // Money a front door gave back may have been reserved call by call (the account was not leasing), so no timer hands it
        // back yet: without one it would stay reserved until the reservation timeout once nobody calls (a caller whose lease
        // answer was lost leaves its one call unspent).
        ReturnWhenIdle();
        _lease += amount;
        foreach (var part in _leaseParts)
        {
            if (part.Hold == hold)
            {
                part.Amount += amount;
                return;
            }
        }

        var index = _leaseParts.FindIndex(part => part.At > at);
        _leaseParts.Insert(index < 0 ? _leaseParts.Count : index, new LeasePart(hold, amount, at));
    }

    // The key's lease goes back to the account once unused for a whole period (ReturnIdleLeaseAsync).
    private void ReturnWhenIdle() =>
        _leaseTimer ??= this.RegisterGrainTimer(ReturnIdleLeaseAsync, new GrainTimerCreationOptions(LeaseIdleReturn, LeaseIdleReturn)
        {
            KeepAlive = false,
            Interleave = true,
        });

    // The price of one call from the key's lease when a part covers it, otherwise from the account (returning the lease's rest).
    private async Task<Reservation> ReserveAsync(long price, int leaseCalls = -1)
    {
        if (price > 0 && TakeFromLease(price) is { } hold)
        {
            _leaseUsed = true;
            return new Reservation(true, _lastAvailable + _lease, State.Currency, Hold: hold);
        }

        var waitingSince = _accountAsksSent;
        await _accountAsks.EnterAsync();
        try
        {
            return await ReserveFromAccountAsync(price, leaseCalls, waitingSince);
        }
        finally
        {
            _accountAsks.Leave();
        }
    }

    // Asks the account, while no other admission's answer settles it: a lease refilled meanwhile covers the call, and a
    // refusal for good the account gave after this admission began waiting refuses it too.
    private async Task<Reservation> ReserveFromAccountAsync(long price, int leaseCalls, long waitingSince)
    {
        var account = GrainFactory.GetGrain<IAccountGrain>(State.AccountId);
        var keyId = this.GetPrimaryKeyString();
        DateTimeOffset? giveUpAt = null;
        var delay = LeaseRetryDelay;
        while (true)
        {
            if (price > 0 && TakeFromLease(price) is { } hold)
            {
                _leaseUsed = true;
                return new Reservation(true, _lastAvailable + _lease, State.Currency, Hold: hold);
            }

            if (_accountRefused is { } refused && refused.Ask > waitingSince && price > refused.Refusal.Available)
            {
                return refused.Refusal;
            }

            var returning = TakeLease();
            var ask = ++_accountAsksSent;
            var (receipt, seen) = _receipts.Open(handingBack: returning.Count > 0);
            var id = _accountRequests.Open();
            var request = new LeaseRequest(keyId, price, returning, price > 0 ? Math.Max(metering.Value.LeaseCalls, leaseCalls) : 0, seen, id);
            LeaseGrant grant;
            try
            {
                // Sent again with the same id until answered: a grant whose answer was lost would otherwise hold its money at
                // the account until the reservation timeout, and what the request handed back too.
                grant = await calls.CallAsync(() => account.ReserveWithLeaseAsync(request), HotPathRetry.UntilAnswered, "account");
            }
            catch (ClusterUnavailableException exception)
            {
                // Unanswered for a minute: the answer is dropped, and a lease in it with it (its hold expires at the account).
                // The fault reaches the admission's caller, perhaps in another process, as a timeout: the call path's own
                // exception has no serializer.
                _receipts.Answered(receipt, 0);
                throw new TimeoutException(exception.Message);
            }
            catch
            {
                _receipts.Answered(receipt, 0);
                throw;
            }
            finally
            {
                _accountRequests.Close(id);
            }

            _receipts.Answered(receipt, grant.Sequence);
            _accountLeases = grant.Lease > 0;
            if (grant.Granted)
            {
                if (_accountRefused?.Ask < ask)
                {
                    // The account covered a call after it last refused one: whoever waits asks again.
                    _accountRefused = null;
                }

                _lastAvailable = grant.Available;
                if (grant.Lease > 0)
                {
                    _leaseParts.Add(new LeasePart(grant.Hold, grant.Lease, time.GetUtcNow()));
                    _lease += grant.Lease;
                    metrics.RecordLeaseRefill();
                    _leaseUsed = true;
                    ReturnWhenIdle();
                }

                return new Reservation(true, grant.Available + _lease, grant.Currency, Hold: grant.Hold);
            }

            var refusal = new Reservation(false, grant.Available, grant.Currency, grant.CapReached);
            if (!grant.Retry)
            {
                // For good: no key holds a lease the account could take back.
                if (!(_accountRefused?.Ask > ask))
                {
                    _accountRefused = (ask, refusal);
                }

                return refusal;
            }

            // Other keys hold leases the account is recalling. The bound on the wait counts from the account's first "wait",
            // so only the recall uses it up, not the queue before it; it ends the wait only when a lessee never answers.
            var now = time.GetUtcNow();
            if (now >= (giveUpAt ??= now + RecallWait))
            {
                return refusal;
            }

            await Task.Delay(delay, time);
            delay = TimeSpan.FromTicks(Math.Min(delay.Ticks * 2, LeaseRetryMaxDelay.Ticks));
        }
    }

    // Hands back a lease unused for a whole period, and one old enough that its hold could soon expire at the account
    // (the next admission takes a fresh one).
    private async Task ReturnIdleLeaseAsync(CancellationToken cancellationToken)
    {
        if (!_leaseUsed || (_leaseParts.Count > 0 && time.GetUtcNow() - _leaseParts[0].At >= metering.Value.ReservationTimeout / 5))
        {
            await ReturnLeaseAsync();
        }

        _leaseUsed = false;
    }

    // Hands back the lease; when recalled, answers even with nothing left, so the account can stop waiting for this key.
    private Task ReturnLeaseAsync(bool always = false)
    {
        if ((_lease <= 0 && !always) || !Exists)
        {
            return Task.CompletedTask;
        }

        var lease = TakeLease();
        var (receipt, seen) = lease.Count > 0 ? _receipts.Open(handingBack: true) : (0, _receipts.Seen);
        return HandBackAsync(lease, receipt, seen);
    }

    private async Task HandBackAsync(IReadOnlyList<HoldRelease> lease, long receipt, long seen)
    {
        var account = GrainFactory.GetGrain<IAccountGrain>(State.AccountId);
        var keyId = this.GetPrimaryKeyString();
        var id = _accountRequests.Open();
        try
        {
            // Sent again with the same id until answered (the account takes it back once): a lost return would hold its money
            // at the account until the reservation timeout.
            await calls.CallAsync(() => account.ReturnLeaseAsync(keyId, lease, seen, id), HotPathRetry.UntilAnswered, "account");
        }
        catch (Exception exception)
        {
            // What was not handed back is given back by the account when its hold expires.
            LogLeaseNotReturned(logger, keyId, exception.Message);
        }
        finally
        {
            _accountRequests.Close(id);
            _receipts.Answered(receipt, 0);
        }
    }

    // Spends one call's price from the first lease part that covers it; returns the part's hold, or null.
    private long? TakeFromLease(long price)
    {
        for (var i = 0; i < _leaseParts.Count; i++)
        {
            var part = _leaseParts[i];
            if (part.Amount >= price)
            {
                part.Amount -= price;
                _lease -= price;
                if (part.Amount == 0)
                {
                    _leaseParts.RemoveAt(i);
                }

                return part.Hold;
            }
        }

        return null;
    }

    // Empties the lease, returning its parts to hand back (no allocation when there is none).
    private IReadOnlyList<HoldRelease> TakeLease()
    {
        if (_leaseParts.Count == 0)
        {
            return Array.Empty<HoldRelease>();
        }

        var parts = _leaseParts.ConvertAll(p => new HoldRelease(p.Hold, p.Amount));
        _leaseParts.Clear();
        _lease = 0;
        return parts;
    }

    private sealed class LeasePart(long hold, long amount, DateTimeOffset at)
    {
        public long Hold { get; } = hold;

        public long Amount { get; set; } = amount;

        public DateTimeOffset At { get; } = at;
    }

    protected override bool MergesConflicts => true;

    // Secrets, tokens and the status another activation changed win, so a revocation or a token issued there is not undone.
    // Usage and quota counts are the journal's, not stored state's, so there is nothing of them to merge.
    protected override void Merge(ApiKeyState target, ApiKeyState baseline, ApiKeyState stored)
    {
        target.Status = StateMerge.Setting(target.Status, baseline.Status, stored.Status);
        target.Name = StateMerge.Setting(target.Name, baseline.Name, stored.Name);
        target.ExpiresAt = StateMerge.Setting(target.ExpiresAt, baseline.ExpiresAt, stored.ExpiresAt);
        StateMerge.Keyed(target.Tokens, baseline.Tokens, stored.Tokens);
        StateMerge.Listed(target.Secrets, baseline.Secrets, stored.Secrets, secret => secret.Id);

        // The other activation's unsettled calls need covering as much as this one's: the higher ceiling stays.
        target.UnsettledCeiling = Math.Max(target.UnsettledCeiling, stored.UnsettledCeiling);
    }

    public ValueTask<bool> VerifyAsync(string proof, CredentialKind kind)
    {
        var now = time.GetUtcNow();
        return ValueTask.FromResult(Check(proof, kind, now) is null);
    }

    public ValueTask<ApiKeyInfo?> AuthenticateAsync(string secret) =>
        ValueTask.FromResult(Check(secret, CredentialKind.KeySecret, time.GetUtcNow()) is null ? ToInfo() : null);

    public Task RecordBatchAsync(IReadOnlyList<ServiceUsageDelta> usage, DeliveryId? delivery = null, IReadOnlyList<EpochCalls>? epochs = null,
        bool resent = false)
    {
        if (!Exists)
        {
            return Task.CompletedTask;
        }

        var now = time.GetUtcNow();
        if (DeliveryMarks.TryAccept(_applied, delivery, now))
        {
            var calls = 0L;
            foreach (var service in usage)
            {
                State.Usage.Add(service);
                calls += service.Calls;
            }

            var earlier = SettleEpochs(calls, epochs, now);
            if (delivery is { } id)
            {
                // A holder's settled calls of this activation's leases: what a reclaim counts as spent.
                _leases.Settled(id.Sender, calls - earlier);
            }
        }
        else if (epochs is not null && !resent && delivery is { } seen && _withheld.FirstOfSeeded(seen))
        {
            // The journal read held this batch, so its calls are counted; earlier activations' calls in it are confirmed.
            ConfirmWithheld(epochs.Where(e => e.Epoch != 0 && e.Epoch != _epoch).Sum(e => e.Calls), now);
        }

        return Task.CompletedTask;
    }

    // Settled calls this activation counted leave its unsettled count; calls earlier activations counted (which the journal
    // read did not hold, or the delivery marks would have refused them) join the quota counts and leave what is withheld.
    // Returns the latter.
    private long SettleEpochs(long settled, IReadOnlyList<EpochCalls>? epochs, DateTimeOffset now)
    {
        long own = 0, earlier = 0;
        foreach (var (epoch, serviceId, calls) in epochs ?? [])
        {
            if (epoch == _epoch)
            {
                own += calls;
            }
            else if (epoch != 0)
            {
                earlier += calls;
                CountEarlier(serviceId, calls, now);
            }
        }

        // Calls that name no activation (fetched from the journal, or from a sender that names none) can only be this one's once
        // nothing is withheld for earlier ones; until then they may be either, and are left for the generations to forget.
        if (Withheld(now) == 0)
        {
            own += Math.Max(0, settled - own - earlier);
        }

        _unsettled.Settle(own, now);
        if (earlier > 0)
        {
            ConfirmWithheld(earlier, now);
        }
        else
        {
            RelaxCeiling(now);
        }

        return earlier;
    }

    // Adds an earlier activation's settled calls to the windows, for the key and the service, that were current when this
    // activation started (the calls were admitted before it; a window that started since does not hold them).
    private void CountEarlier(string serviceId, long calls, DateTimeOffset now)
    {
        var offset = State.Limits.WindowOffset ?? TimeSpan.Zero;
        CountIn(QuotaWindows.Day, QuotaWindows.Day);
        CountIn(QuotaWindows.Month, QuotaWindows.Month);
        CountIn($"{QuotaWindows.Day}:{serviceId}", QuotaWindows.Day);
        CountIn($"{QuotaWindows.Month}:{serviceId}", QuotaWindows.Month);

        void CountIn(string counterKey, string window)
        {
            var counter = Counter(counterKey, window, now, offset);
            if (_withheld.Concerns(counter.WindowStart))
            {
                counter.Count += calls;
            }
        }
    }

    public async Task<TokenResult> IssueTokenAsync(string secret)
    {
        var now = time.GetUtcNow();
        if (Check(secret, CredentialKind.KeySecret, now) is { } refusal)
        {
            return new TokenResult(refusal, null);
        }

        PruneTokens(now);
        if (State.Tokens.Count + 2 > tokenOptions.Value.MaxTokensPerKey)
        {
            return new TokenResult(AdmitOutcome.RateLimited, null);
        }

        var pair = NewTokenPair(now);
        await SaveNowAsync();
        return new TokenResult(AdmitOutcome.Admitted, pair);
    }

    public async Task<TokenResult> RefreshTokenAsync(string refreshToken)
    {
        var now = time.GetUtcNow();
        if (!ApiKeySecrets.TrySplitProof(refreshToken, out var tokenId, out var secret))
        {
            return new TokenResult(AdmitOutcome.TokenInvalid, null);
        }

        if (KeyStatusRefusal(now) is { } refusal)
        {
            return new TokenResult(refusal, null);
        }

        // A refresh that raced (or retried) one that already succeeded gets the same pair, not a second one.
        if (_recentRefreshes.TryGetValue(tokenId, out var recent)
            && now - recent.At <= tokenOptions.Value.RefreshGracePeriod
            && ApiKeySecrets.Verify(ApiKeySecrets.TokenSalt(tokenId), recent.Hash, secret))
        {
            return new TokenResult(AdmitOutcome.Admitted, recent.Pair);
        }

        if (!State.Tokens.TryGetValue(tokenId, out var token) || !token.IsRefresh || token.Used || token.ExpiresAt <= now
            || !ApiKeySecrets.Verify(ApiKeySecrets.TokenSalt(tokenId), token.Hash, secret))
        {
            return new TokenResult(AdmitOutcome.TokenInvalid, null);
        }

        PruneTokens(now);
        State.Tokens.Remove(tokenId);
        var pair = NewTokenPair(now);
        _recentRefreshes[tokenId] = (pair, token.Hash, now);
        await SaveNowAsync();
        return new TokenResult(AdmitOutcome.Admitted, pair);
    }

    public async Task<bool> RevokeTokenAsync(string token)
    {
        if (!Exists || !ApiKeySecrets.TrySplitProof(token, out var tokenId, out var secret)
            || !State.Tokens.TryGetValue(tokenId, out var stored) || !ApiKeySecrets.Verify(ApiKeySecrets.TokenSalt(tokenId), stored.Hash, secret))
        {
            return false;
        }

        State.Tokens.Remove(tokenId);
        _recentRefreshes.Remove(tokenId);
        await SaveNowAsync();
        TellHolders();
        return true;
    }

    // Most access tokens a lease carries besides the one its caller presented; a token beyond them is checked here.
    private const int LeasedTokens = 64;

    private AdmitOutcome? Check(string proof, CredentialKind kind, DateTimeOffset now) =>
        Exists ? KeyCredentialCheck.Check(Credentials(now, kind == CredentialKind.AccessToken ? proof : null), proof, kind, now) : AdmitOutcome.InvalidCredentials;

    // The key's credentials as a lease carries them: hashes of the active secrets, and of the newest access tokens plus the
    // one presented (so the caller holding it is checked locally from then on).
    private KeyCredentials Credentials(DateTimeOffset now, string? presentedToken)
    {
        var secrets = new List<SecretCredential>(State.Secrets.Count);
        foreach (var secret in State.Secrets)
        {
            if (secret.RetiresAt is null || secret.RetiresAt > now)
            {
                secrets.Add(new SecretCredential(secret.Salt, secret.Hash, secret.RetiresAt));
            }
        }

        var tokens = new Dictionary<string, TokenCredential>(StringComparer.Ordinal);
        if (State.Tokens.Count > 0)
        {
            var access = State.Tokens.Where(t => !t.Value.IsRefresh && t.Value.ExpiresAt > now);
            foreach (var (id, token) in State.Tokens.Count > LeasedTokens ? access.OrderByDescending(t => t.Value.ExpiresAt).Take(LeasedTokens) : access)
            {
                tokens[id] = new TokenCredential(token.Hash, token.ExpiresAt);
            }

            if (presentedToken is not null && ApiKeySecrets.TrySplitProof(presentedToken, out var tokenId, out _)
                && State.Tokens.TryGetValue(tokenId, out var presented) && !presented.IsRefresh)
            {
                tokens[tokenId] = new TokenCredential(presented.Hash, presented.ExpiresAt);
            }
        }

        return new KeyCredentials(State.Status, State.ExpiresAt, secrets, tokens);
    }

    private AdmitOutcome? KeyStatusRefusal(DateTimeOffset now) => State.Status switch
    {
        _ when !Exists => AdmitOutcome.InvalidCredentials,
        ApiKeyStatus.Revoked => AdmitOutcome.Revoked,
        ApiKeyStatus.Suspended => AdmitOutcome.Suspended,
        _ when State.ExpiresAt is { } expiry && now >= expiry => AdmitOutcome.Expired,
        _ => null,
    };

    private TokenPair NewTokenPair(DateTimeOffset now)
    {
        var keyId = this.GetPrimaryKeyString();
        var lifetimes = tokenOptions.Value;
        var accessId = ApiKeySecrets.NewTokenId();
        var accessSecret = ApiKeySecrets.NewSecret();
        var refreshId = ApiKeySecrets.NewTokenId();
        var refreshSecret = ApiKeySecrets.NewSecret();
        var pair = new TokenPair(
            ApiKeySecrets.FormatToken(ApiKeySecrets.AccessTokenPrefix, keyId, accessId, accessSecret), now + lifetimes.AccessTokenLifetime,
            ApiKeySecrets.FormatToken(ApiKeySecrets.RefreshTokenPrefix, keyId, refreshId, refreshSecret), now + lifetimes.RefreshTokenLifetime);
        State.Tokens[accessId] = new TokenState { Hash = ApiKeySecrets.Hash(ApiKeySecrets.TokenSalt(accessId), accessSecret), ExpiresAt = pair.AccessExpiresAt };
        State.Tokens[refreshId] = new TokenState { IsRefresh = true, Hash = ApiKeySecrets.Hash(ApiKeySecrets.TokenSalt(refreshId), refreshSecret), ExpiresAt = pair.RefreshExpiresAt };
        return pair;
    }


    private void PruneTokens(DateTimeOffset now)
    {
        foreach (var expired in State.Tokens.Where(t => t.Value.ExpiresAt <= now).Select(t => t.Key).ToList())
        {
            State.Tokens.Remove(expired);
        }

        foreach (var old in _recentRefreshes.Where(r => now - r.Value.At > tokenOptions.Value.RefreshGracePeriod).Select(r => r.Key).ToList())
        {
            _recentRefreshes.Remove(old);
        }
    }

    private void PruneSecrets(DateTimeOffset now) => State.Secrets.RemoveAll(s => s.RetiresAt is { } retires && retires <= now);

    private static SecretState NewSecretState(string secret, DateTimeOffset now)
    {
        var salt = ApiKeySecrets.NewSalt();
        return new SecretState { Id = ApiKeySecrets.NewTokenId(), Salt = salt, Hash = ApiKeySecrets.Hash(salt, secret), CreatedAt = now };
    }

    private TokenBucket? Bucket(string name, RateLimit? limit, DateTimeOffset now)
    {
        if (limit is null)
        {
            return null;
        }

        if (!_buckets.TryGetValue(name, out var bucket))
        {
            bucket = new TokenBucket(limit, now);
            _buckets[name] = bucket;
        }
        else if (bucket.Limit != limit)
        {
            bucket.Reconfigure(limit);
        }

        return bucket;
    }

    private static List<(string CounterKey, string Window, long Limit, string Policy)> QuotasFor(string serviceId, LimitsState limits, LimitsState? service)
    {
        var quotas = new List<(string, string, long, string)>(4);
        if (limits.PerDay is { } day)
        {
            quotas.Add((QuotaWindows.Day, QuotaWindows.Day, day, "day"));
        }

        if (limits.PerMonth is { } month)
        {
            quotas.Add((QuotaWindows.Month, QuotaWindows.Month, month, "month"));
        }

        if (service?.PerDay is { } serviceDay)
        {
            quotas.Add(($"{QuotaWindows.Day}:{serviceId}", QuotaWindows.Day, serviceDay, "service-day"));
        }

        if (service?.PerMonth is { } serviceMonth)
        {
            quotas.Add(($"{QuotaWindows.Month}:{serviceId}", QuotaWindows.Month, serviceMonth, "service-month"));
        }

        return quotas;
    }

    private QuotaCounterState Counter(string counterKey, string window, DateTimeOffset now, TimeSpan offset)
    {
        var start = window == QuotaWindows.Day ? QuotaWindows.DayStart(now, offset) : QuotaWindows.MonthStart(now, offset);
        if (!State.Quotas.TryGetValue(counterKey, out var counter))
        {
            counter = new QuotaCounterState { WindowStart = start };
            State.Quotas[counterKey] = counter;
        }
        else if (counter.WindowStart != start)
        {
            counter.WindowStart = start;
            counter.Count = 0;
        }

        return counter;
    }

    private static LimitStatus QuotaStatus(string policy, string window, QuotaCounterState counter, long used, long limit, DateTimeOffset now, TimeSpan offset)
    {
        var end = QuotaWindows.Next(window, counter.WindowStart, offset);
        return new LimitStatus(policy, limit, Math.Max(0, limit - used), (long)(end - counter.WindowStart).TotalSeconds,
            Math.Max(1, (long)Math.Ceiling((end - now).TotalSeconds)));
    }

    // The limit closest to running out is the one the RateLimit headers describe.
    private static LimitStatus Tighter(LimitStatus? current, LimitStatus candidate) =>
        current is null || (double)candidate.Remaining / Math.Max(1, candidate.Limit) < (double)current.Remaining / Math.Max(1, current.Limit)
            ? candidate
            : current;

    private static AdmitResult Refuse(AdmitOutcome outcome, LimitStatus? limit = null) => new(outcome, null, 0, 0, null, limit);

    private ApiKeyInfo ToInfo()
    {
        var now = time.GetUtcNow();
        var offset = State.Limits.WindowOffset ?? TimeSpan.Zero;
        var quotas = QuotasFor(string.Empty, State.Limits, null)
            .Concat(State.Limits.PerService.SelectMany(s => QuotasFor(s.Key, new LimitsState(), s.Value)))
            .Select(q =>
            {
                var start = q.Window == QuotaWindows.Day ? QuotaWindows.DayStart(now, offset) : QuotaWindows.MonthStart(now, offset);
                var used = State.Quotas.TryGetValue(q.CounterKey, out var c) && c.WindowStart == start ? c.Count : 0;
                var serviceId = q.CounterKey.Contains(':') ? q.CounterKey[(q.CounterKey.IndexOf(':') + 1)..] : null;
                return new QuotaUsage(q.Window, serviceId, start, used, q.Limit);
            })
            .ToList();
        return new ApiKeyInfo(
            this.GetPrimaryKeyString(), State.AccountId, State.Name, State.Status, [.. State.Services], State.ExpiresAt,
            State.CreatedAt, State.Usage.ToContract(), State.Limits.ToContract(),
            [.. State.Secrets.Where(s => s.RetiresAt is null || s.RetiresAt > now).Select(s => new SecretInfo(s.Id, s.CreatedAt, s.RetiresAt))],
            quotas, _leases.OpenCalls, Withheld(now));
    }

    [LoggerMessage(Level = LogLevel.Warning, Message = "Key {KeyId} counted {Calls} settled calls of sender {Sender} from the journal: the sender went away before their settlements arrived")]
    private static partial void LogFetched(ILogger logger, string keyId, long calls, Guid sender);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Batches of sender {Sender} for {GrainId} not fetched from the journal (tried again later): {Reason}")]
    private static partial void LogFetchFailed(ILogger logger, string grainId, Guid sender, string reason);

    [LoggerMessage(Level = LogLevel.Debug, Message = "Holder of key {KeyId}'s lease not told of a change: {Reason}")]
    private static partial void LogHolderNotTold(ILogger logger, string keyId, string reason);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Key {KeyId} could not hand its lease back to its account (the account releases it when its hold expires): {Reason}")]
    private static partial void LogLeaseNotReturned(ILogger logger, string keyId, string reason);

    [LoggerMessage(Level = LogLevel.Information, Message = "Key {KeyId} withholds {Calls} calls from its quotas that its previous activation may have admitted, until they are confirmed or {Until}")]
    private static partial void LogWithholding(ILogger logger, string keyId, long calls, DateTimeOffset until);

    [LoggerMessage(Level = LogLevel.Information, Message = "Key {KeyId} no longer withholds calls for its previous activation: {Reason}")]
    private static partial void LogWithheldEnded(ILogger logger, string keyId, string reason);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Key {KeyId}: admitting with its unsettled-calls ceiling raised to {Ceiling} but not stored yet ({Reason}; written behind)")]
    private static partial void LogCeilingNotStored(ILogger logger, string keyId, long ceiling, string reason);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Key {KeyId} could not store its exact unsettled calls on deactivating (its next activation withholds the higher ceiling stored before): {Reason}")]
    private static partial void LogCeilingNotSettled(ILogger logger, string keyId, string reason);
}
