using System.Collections.Concurrent;
using System.Runtime.InteropServices;
using System.Security.Cryptography;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;

namespace Marketplace.Grains;

/// <summary>
/// A front door's leases of API keys: it admits calls from memory, checking the caller's secret or token against the
/// credentials a lease carries and spending the lease's allowance one call at a time, and asks a key grain only to refill.
/// </summary>
/// <remarks>
/// <para>Per key and service the cache holds the credentials of the newest lease and the allowances of its open leases.
/// It asks for the next lease before the allowance runs out (in the steady state no caller waits), sized from how fast the
/// allowance went. A caller finding none waits for a lease asked for on its behalf, which the key grants at least one
/// call unless it refuses. Near a limit the key grants one call per waiting caller, so limits stay exact.</para>
/// <para>A lease is good for <see cref="LeaseOptions.Lifetime"/> from when it was asked for: a key's change that was pushed is
/// applied at once (<see cref="KeyChanged"/>), one whose push was lost within that lifetime. An ended lease (used up,
/// lapsed or dropped) is reported to its key with the calls it spent, on the next request or by the sweep that also lets
/// idle keys' leases lapse.</para>
/// <para>A caller whose proof does not match the cached credentials is checked by the key itself (a secret or token
/// newer than the lease), so only the key ever refuses a credential.</para>
/// </remarks>
public sealed partial class KeyLeaseCache : IKeyLeaseHolder, IDisposable
{
    private readonly IGrainFactory _grains;
    private readonly HotPathCalls _hotPath;
    private readonly LeaseOptions _options;
    private readonly TimeProvider _time;
    private readonly MarketplaceMetrics _metrics;
    private readonly ILogger<KeyLeaseCache> _logger;
    private readonly GrainReferences<IApiKeyGrain> _keys;
    private readonly ConcurrentDictionary<(string KeyId, string ServiceId), Entry> _entries = new();
    private readonly ITimer _sweep;
    private readonly long _lifetime;

    // Ids of this front door's lease requests: one whose outcome is unknown is sent again with its id until answered.
    private readonly RequestNumbers _requests = new();
    private IKeyLeaseHolder? _observer;
    private int _observerAsked;

    /// <summary>Creates the cache; <paramref name="holder"/> is the process's journal sender id (<see cref="ICallLog.Sender"/>).</summary>
    public KeyLeaseCache(Guid holder, IGrainFactory grains, HotPathCalls hotPath, IOptions<LeaseOptions> options, TimeProvider time,
        MarketplaceMetrics metrics, ILogger<KeyLeaseCache> logger)
    {
        _grains = grains;
        _hotPath = hotPath;
        _options = options.Value;
        _time = time;
        _metrics = metrics;
        _logger = logger;
        _keys = new GrainReferences<IApiKeyGrain>(grains);
        Holder = holder;
        _lifetime = (long)(_options.Lifetime.TotalSeconds * time.TimestampFrequency);
        _sweep = time.CreateTimer(_ => Sweep(), null, _options.Lifetime / 2, _options.Lifetime / 2);
    }

    /// <summary>This front door's holder id: its journal's sender id.</summary>
    public Guid Holder { get; }

    /// <summary>
    /// Admits one call from the key's lease, refilling it when needed. The result is what the key grain's own admission
    /// would answer: the hold and window offset the call's record names, or the refusal.
    /// </summary>
    public async ValueTask<AdmitResult> AdmitAsync(string keyId, string proof, CredentialKind kind, string serviceId, long price, string currency)
    {
        var route = new Priced(serviceId, price, currency);
        var entry = _entries.GetOrAdd((keyId, serviceId), static (id, self) => new Entry(id.KeyId, self._lifetime, self._time.TimestampFrequency), this);
        var askWithProof = false;
        for (var attempt = 0; ; attempt++)
        {
            var now = _time.GetUtcNow();
            var taken = entry.TryTake(proof, kind, route, now, _time.GetTimestamp(), out var result);
            switch (taken)
            {
                case Take.Admitted:
                    if (entry.ShouldRefill(_time.GetTimestamp(), _lifetime))
                    {
                        _ = RefillAheadAsync(entry, route, kind);
                    }

                    return result!;
                case Take.Refused:
                    return result!;
                case Take.UnknownProof:
                    askWithProof = true;
                    break;
            }

            // No call to spend: wait for the lease already asked for, or ask for one on this caller's behalf.
            if (entry.InFlight is { } pending && !askWithProof && attempt < 2)
            {
                await pending;
                continue;
            }

            var lease = await RefillAsync(entry, route, waiting: true, askWithProof || !entry.HasCredentials ? proof : null, kind);
            if (lease.Outcome != AdmitOutcome.Admitted)
            {
                return AdmitResult.Refused(lease.Outcome, lease.Available, lease.Currency, lease.Limit, lease.AccountId);
            }

            askWithProof = false;
            if (entry.TryTakeGranted(lease, proof, kind, now, out result))
            {
                return result!;
            }
        }
    }

    // Asks ahead of need; a failure is only logged (the entry's callers ask themselves when its allowance runs out).
    private async Task RefillAheadAsync(Entry entry, Priced route, CredentialKind kind)
    {
        try
        {
            await RefillAsync(entry, route, waiting: false, proof: null, kind);
        }
        catch (Exception exception)
        {
            LogRefillFailed(_logger, entry.KeyId, exception.Message);
        }
    }

    // Asks the key for a lease, reporting the entry's ended leases. Callers that wait for it meanwhile share its outcome,
    // a fault included, so none waits longer than one grain call's bound for a key that cannot answer.
    private async Task<KeyLease> RefillAsync(Entry entry, Priced route, bool waiting, string? proof, CredentialKind kind)
    {
        var completion = new TaskCompletionSource<KeyLease>(TaskCreationOptions.RunContinuationsAsynchronously);
        if (waiting)
        {
            entry.StartWaiting(completion.Task);
        }
        else if (!entry.TryStartRefill(completion.Task))
        {
            return NothingAsked;
        }

        var id = _requests.Open();
        var request = new KeyLeaseRequest(Holder, route.ServiceId, route.Price, route.Currency, entry.Wanted(waiting, _options.MaxCalls), waiting,
            entry.TakeEnded(_time.GetTimestamp()), Observer(), proof, kind, id);
        // A lease counts its life from when it was asked for: granted after that, it ends at most a lifetime after the grant,
        // so a change the key made after granting it takes effect here within a lifetime even if its push is lost.
        var asked = _time.GetTimestamp();
        var key = _keys.Get(entry.KeyId);
        try
        {
            var lease = await _hotPath.CallAsync(() => key.LeaseAsync(request), HotPathRetry.WhenNotRun, "API key");
            _requests.Close(id);
            entry.Apply(lease, asked);
            _metrics.RecordLeaseRefill();
            completion.SetResult(lease);
            return lease;
        }
        catch (Exception exception)
        {
            // The key may have applied the reports before its answer was lost (and then gone away): from now on they say so.
            var resent = Resent(request.Ended);
            if (exception is ClusterUnavailableException)
            {
                // The key may have granted a lease whose answer was lost: its quota and balance would stay taken while this
                // front door lives. The callers waiting now get the fault; the request is sent again meanwhile until answered.
                entry.StartResolving();
                _ = ResolveAsync(entry, key, request with { Ended = resent }, id, asked);
            }
            else
            {
                _requests.Close(id);
            }

            entry.Restore(resent);
            _ = completion.Task.ContinueWith(static task => task.Exception, CancellationToken.None, TaskContinuationOptions.OnlyOnFaulted,
                TaskScheduler.Default);
            completion.SetException(exception);
            throw;
        }
        finally
        {
            entry.EndRefill(completion.Task);
        }
    }

    private static readonly KeyLease NothingAsked = KeyLease.Refused(AdmitOutcome.Admitted);

    // Sends a request whose outcome is unknown again, with its id, until the key answers (it answers a repeat with the lease
    // it granted the first time, if any). A lease that comes back is spent like any other, or reported unspent once it
    // lapses (its life counts from the first asking), so the key gets back what it took for it.
    private async Task ResolveAsync(Entry entry, IApiKeyGrain key, KeyLeaseRequest request, RequestId id, long asked)
    {
        try
        {
            var lease = await _hotPath.CallAsync(() => key.LeaseAsync(request), HotPathRetry.UntilAnswered, "API key");
            entry.ApplyLate(lease, asked);
        }
        catch (Exception exception)
        {
            // The key gives a lease nobody reports back once this front door falls silent for its key.
            LogResolveFailed(_logger, entry.KeyId, exception.Message);
        }
        finally
        {
            _requests.Close(id);
            entry.EndResolving();
        }
    }

    private IKeyLeaseHolder? Observer()
    {
        if (!_options.PushChanges)
        {
            return null;
        }

        if (_observer is null && Interlocked.Exchange(ref _observerAsked, 1) == 0)
        {
            try
            {
                _observer = _grains.CreateObjectReference<IKeyLeaseHolder>(this);
            }
            catch (Exception exception)
            {
                // Without pushes a key's change still takes effect when the lease lapses.
                LogNoObserver(_logger, exception.Message);
            }
        }

        return _observer;
    }

    /// <inheritdoc />
    public Task KeyChanged(string keyId)
    {
        foreach (var (id, entry) in _entries)
        {
            if (id.KeyId == keyId)
            {
                entry.Drop();
                _ = ReportAsync(entry);
            }
        }

        return Task.CompletedTask;
    }

    // Reports ended leases and lets idle entries go: what a lease did not spend goes back to its key within a lifetime.
    private void Sweep()
    {
        var now = _time.GetTimestamp();
        foreach (var (id, entry) in _entries)
        {
            entry.Expire(now);
            if (entry.ReportDue(now, _lifetime))
            {
                _ = ReportAsync(entry);
            }
            else if (entry.IsIdle(now, _lifetime))
            {
                _entries.TryRemove(new KeyValuePair<(string, string), Entry>(id, entry));
            }
        }
    }

    private async Task ReportAsync(Entry entry)
    {
        var ended = entry.TakeEnded(_time.GetTimestamp());
        if (ended.Count == 0)
        {
            return;
        }

        try
        {
            var key = _keys.Get(entry.KeyId);
            var attempts = 0;
            await _hotPath.CallAsync(async () =>
            {
                // A repeat follows a fault after which the first attempt may have run.
                await key.EndLeasesAsync(Holder, attempts++ == 0 ? ended : Resent(ended));
                return true;
            }, HotPathRetry.WhenSafe, "API key");
        }
        catch (Exception exception)
        {
            // Sent again with the next request or sweep: the key ends a lease once, by its id, however often it is reported.
            entry.Restore(Resent(ended));
            LogReportFailed(_logger, entry.KeyId, exception.Message);
        }
    }

    // Reports that may have reached a key activation already: a later activation must not take their unspent calls off what
    // it withholds for that one (see LeaseReport.Resent).
    private static List<LeaseReport> Resent(IReadOnlyList<LeaseReport> reports) => [.. reports.Select(report => report with { Resent = true })];

    /// <inheritdoc />
    public void Dispose() => _sweep.Dispose();

    // The service and price a call is admitted at.
    private readonly record struct Priced(string ServiceId, long Price, string Currency);

    private enum Take
    {
        Admitted,
        Refused,
        NoAllowance,
        UnknownProof,
    }

    // One key and service: the newest credentials, the open leases' allowances, the ended leases to report. Guarded by its lock.
    private sealed class Entry(string keyId, long lifetime, long frequency)
    {
        private readonly Lock _gate = new();
        private readonly List<OpenLease> _open = [];
        private readonly List<LeaseReport> _ended = [];
        private KeyLease? _newest;
        private long _credentialsUntil;
        private long _lastUsed;
        private int _wanted = 1;
        private int _takesSinceGrant;
        private long _askedAt;
        private int _resolving;
        private Task<KeyLease>? _refill;

        // The proof last verified against the newest credentials, and until when its secret or token is valid: a busy key's
        // callers are compared in constant time instead of hashed on every call. New credentials (a rotation, a revoked
        // token, any change the key pushes or a new lease carries) are a new object, which no remembered proof matches.
        private KeyCredentials? _verifiedFor;
        private string _verifiedProof = string.Empty;
        private CredentialKind _verifiedKind;
        private DateTimeOffset _verifiedUntil;

        public string KeyId { get; } = keyId;

        // A lease asked for on behalf of a waiting caller; others wait for it before asking themselves.
        private Task<KeyLease>? _waiting;

        // The request in flight, if any: a caller finding no allowance waits for it before asking itself.
        public Task<KeyLease>? InFlight
        {
            get
            {
                lock (_gate)
                {
                    return _waiting ?? _refill;
                }
            }
        }

        public void StartWaiting(Task<KeyLease> waiting)
        {
            lock (_gate)
            {
                _waiting ??= waiting;
            }
        }

        public bool HasCredentials
        {
            get
            {
                lock (_gate)
                {
                    return _newest is not null;
                }
            }
        }

        // Ended leases wait for the next request to carry them; the sweep sends them when none was asked for in half a lifetime.
        public bool ReportDue(long timestamp, long lifetime)
        {
            lock (_gate)
            {
                return _ended.Count > 0 && _refill is null && _waiting is null && timestamp - _askedAt >= lifetime / 2;
            }
        }

        public Take TryTake(string proof, CredentialKind kind, Priced route, DateTimeOffset now, long timestamp, out AdmitResult? result)
        {
            result = null;
            lock (_gate)
            {
                _lastUsed = timestamp;
                ExpireLocked(timestamp);
                if (_newest is not { Credentials: { } credentials } newest || timestamp >= _credentialsUntil)
                {
                    return Take.NoAllowance;
                }

                if (newest.Price != route.Price || newest.Currency != route.Currency)
                {
                    // The service's price changed: what was leased at the old one goes back.
                    DropLocked();
                    return Take.NoAllowance;
                }

                switch (CheckLocked(credentials, proof, kind, now))
                {
                    case AdmitOutcome.InvalidCredentials or AdmitOutcome.TokenInvalid:
                        return Take.UnknownProof;
                    case { } refusal:
                        result = AdmitResult.Refused(refusal);
                        return Take.Refused;
                }

                if (!SpendLocked(newest, out result))
                {
                    return Take.NoAllowance;
                }

                _takesSinceGrant++;
                return Take.Admitted;
            }
        }

        // A lease just granted to this waiting caller: spent at once when it carries a call (another caller may have taken it).
        public bool TryTakeGranted(KeyLease lease, string proof, CredentialKind kind, DateTimeOffset now, out AdmitResult? result)
        {
            result = null;
            lock (_gate)
            {
                return lease.Credentials is { } credentials && CheckLocked(credentials, proof, kind, now) is null
                    && SpendLocked(lease, out result);
            }
        }

        private AdmitOutcome? CheckLocked(KeyCredentials credentials, string proof, CredentialKind kind, DateTimeOffset now)
        {
            if (ReferenceEquals(credentials, _verifiedFor) && kind == _verifiedKind && now < _verifiedUntil
                && CryptographicOperations.FixedTimeEquals(MemoryMarshal.AsBytes(proof.AsSpan()), MemoryMarshal.AsBytes(_verifiedProof.AsSpan())))
            {
                return KeyCredentialCheck.StatusRefusal(credentials, now);
            }

            var outcome = KeyCredentialCheck.Check(credentials, proof, kind, now, out var validUntil);
            if (validUntil > now)
            {
                (_verifiedFor, _verifiedProof, _verifiedKind, _verifiedUntil) = (credentials, proof, kind, validUntil);
            }

            return outcome;
        }

        private bool SpendLocked(KeyLease newest, out AdmitResult? result)
        {
            result = null;
            foreach (var open in _open)
            {
                if (open.TryTake(out var hold))
                {
                    var left = 0L;
                    foreach (var other in _open)
                    {
                        left += other.Left;
                    }

                    var limit = newest.Limit is { } status ? status with { Remaining = status.Remaining + left } : null;
                    result = AdmitResult.Admitted(newest.AccountId!, newest.Price, newest.Available + (left * newest.Price), newest.Currency!,
                        limit, hold, newest.WindowOffsetMinutes, open.Epoch);
                    return true;
                }
            }

            return false;
        }

        // Asks ahead when the allowance is down to half of what is wanted, or the newest lease is half through its life.
        public bool ShouldRefill(long timestamp, long lifetime)
        {
            lock (_gate)
            {
                if (_refill is not null)
                {
                    return false;
                }

                var left = 0;
                foreach (var open in _open)
                {
                    left += open.Left;
                }

                // Only a key called again within its lease's life is asked for ahead: a key called now and then costs one
                // grain call per call, as it would without leases, and no lease to report.
                return _takesSinceGrant >= 2 && (left * 2 <= _wanted || timestamp >= _credentialsUntil - (lifetime / 2));
            }
        }

        public bool TryStartRefill(Task<KeyLease> refill)
        {
            lock (_gate)
            {
                if (_refill is not null)
                {
                    return false;
                }

                _refill = refill;
                return true;
            }
        }

        public void EndRefill(Task<KeyLease> refill)
        {
            lock (_gate)
            {
                if (_refill == refill)
                {
                    _refill = null;
                }

                if (_waiting == refill)
                {
                    _waiting = null;
                }
            }
        }

        // A caller that found nothing doubles what is asked for; a lease that lapsed half unspent halves it.
        public int Wanted(bool waiting, int max)
        {
            lock (_gate)
            {
                if (waiting && _newest is not null)
                {
                    _wanted = Math.Min(max, _wanted * 2);
                }

                return _wanted;
            }
        }

        public void Apply(KeyLease lease, long timestamp)
        {
            lock (_gate)
            {
                if (lease.Outcome != AdmitOutcome.Admitted)
                {
                    // A key that refuses every call (revoked, suspended, expired, a credential or service it no longer
                    // accepts) ends what is open; a limit reached leaves the allowance already leased to be spent.
                    if (lease.Outcome is not (AdmitOutcome.RateLimited or AdmitOutcome.QuotaExhausted or AdmitOutcome.InsufficientBalance
                        or AdmitOutcome.AccountCapReached))
                    {
                        DropLocked();
                    }

                    return;
                }

                _newest = lease;
                _credentialsUntil = timestamp + Math.Min(lifetime, (long)(lease.Lifetime.TotalSeconds * frequency));
                if (lease.Allowance.Count > 0)
                {
                    _open.Add(new OpenLease(lease.LeaseId, lease.Allowance, _credentialsUntil, lease.Epoch));
                }

                _takesSinceGrant = 0;
                _askedAt = timestamp;
            }
        }

        public List<LeaseReport> TakeEnded(long timestamp)
        {
            lock (_gate)
            {
                ExpireLocked(timestamp);
                if (_ended.Count == 0)
                {
                    return [];
                }

                var ended = new List<LeaseReport>(_ended);
                _ended.Clear();
                return ended;
            }
        }

        // Reports that did not reach the key are sent with the next request.
        public void Restore(IReadOnlyList<LeaseReport> ended)
        {
            if (ended.Count == 0)
            {
                return;
            }

            lock (_gate)
            {
                _ended.AddRange(ended);
            }
        }

        public void Expire(long timestamp)
        {
            lock (_gate)
            {
                ExpireLocked(timestamp);
            }
        }

        public void Drop()
        {
            lock (_gate)
            {
                DropLocked();
            }
        }

        public bool IsIdle(long timestamp, long lifetime)
        {
            lock (_gate)
            {
                return _open.Count == 0 && _ended.Count == 0 && _refill is null && _waiting is null && _resolving == 0
                    && timestamp - _lastUsed > 2 * lifetime;
            }
        }

        // A request whose outcome is unknown is being sent again: the entry stays, so a lease it brings back is reported.
        public void StartResolving()
        {
            lock (_gate)
            {
                _resolving++;
            }
        }

        public void EndResolving()
        {
            lock (_gate)
            {
                _resolving--;
            }
        }

        // A lease whose first answer was lost: its allowance is open to spend until a lifetime after it was asked for, but
        // its credentials do not replace newer ones. One granted at another price than the newest lease's goes back unspent.
        public void ApplyLate(KeyLease lease, long askedAt)
        {
            if (lease.Outcome != AdmitOutcome.Admitted || lease.Allowance.Count == 0)
            {
                return;
            }

            lock (_gate)
            {
                if (_newest is null || _newest.Price != lease.Price || _newest.Currency != lease.Currency)
                {
                    _ended.Add(new LeaseReport(lease.LeaseId, 0, lease.Epoch, lease.Allowance.Sum(part => part.Calls)));
                    return;
                }

                _open.Add(new OpenLease(lease.LeaseId, lease.Allowance, askedAt + Math.Min(lifetime, (long)(lease.Lifetime.TotalSeconds * frequency)),
                    lease.Epoch));
            }
        }

        // Ends the open leases and forgets the credentials.
        private void DropLocked()
        {
            _newest = null;
            _credentialsUntil = 0;
            foreach (var open in _open)
            {
                _ended.Add(open.Report());
            }

            _open.Clear();
        }

        // Used-up and lapsed leases end; a lease that lapsed more than half unspent halves what is asked for next.
        private void ExpireLocked(long timestamp)
        {
            for (var i = 0; i < _open.Count;)
            {
                var open = _open[i];
                if (open.Left > 0 && timestamp < open.Until)
                {
                    i++;
                    continue;
                }

                if (open.Left * 2 > open.Calls)
                {
                    _wanted = Math.Max(1, _wanted / 2);
                }

                _ended.Add(open.Report());
                _open.RemoveAt(i);
            }

            if (_newest is not null && timestamp >= _credentialsUntil)
            {
                _newest = null;
            }
        }
    }

    // One lease's allowance as the front door spends it: its parts in order, each a hold and the calls left in it, and the
    // epoch of the key activation that granted it (each call spent from it carries that to its settlement).
    private sealed class OpenLease(long id, IReadOnlyList<LeaseAllowance> allowance, long until, long epoch)
    {
        private readonly LeaseAllowance[] _parts = [.. allowance];
        private int _part;

        public long Id { get; } = id;

        public long Epoch { get; } = epoch;

        public long Until { get; } = until;

        public int Calls { get; } = allowance.Sum(part => part.Calls);

        public int Used { get; private set; }

        public int Left => Calls - Used;

        public LeaseReport Report() => new(Id, Used, Epoch, Calls);

        public bool TryTake(out long hold)
        {
            while (_part < _parts.Length)
            {
                var part = _parts[_part];
                if (part.Calls > 0)
                {
                    _parts[_part] = part with { Calls = part.Calls - 1 };
                    Used++;
                    hold = part.Hold;
                    return true;
                }

                _part++;
            }

            hold = 0;
            return false;
        }
    }

    [LoggerMessage(Level = LogLevel.Warning, Message = "Lease of key {KeyId} not refilled ahead of need: {Reason}")]
    private static partial void LogRefillFailed(ILogger logger, string keyId, string reason);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Ended leases of key {KeyId} not reported (the key takes them back when they lapse): {Reason}")]
    private static partial void LogReportFailed(ILogger logger, string keyId, string reason);

    [LoggerMessage(Level = LogLevel.Warning, Message = "A lease request to key {KeyId} whose answer was lost stayed unanswered (the key takes back what it granted once this front door falls silent): {Reason}")]
    private static partial void LogResolveFailed(ILogger logger, string keyId, string reason);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Key changes cannot be pushed to this front door (leases lapse instead): {Reason}")]
    private static partial void LogNoObserver(ILogger logger, string reason);
}
