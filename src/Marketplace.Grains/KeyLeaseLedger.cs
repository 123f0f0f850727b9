namespace Marketplace.Grains;

/// <summary>
/// The leases a key has granted to front doors, by holder: what each allowed, in which holds, and what came back.
/// </summary>
/// <remarks>
/// A lease's calls count against the key's quotas from the moment it is granted; what its holder did not spend comes back
/// when the holder reports the lease ended. A lease left unreported by a holder silent for <c>reclaimAfter</c> (its process
/// was killed) is given up on <c>reclaimAfter</c> after it lapsed: what it spent is then taken to be what its holder's journal settled beyond what the
/// holder had reported, and the rest comes back. Lease ids start at a random number per ledger, so a report meant for a previous
/// activation matches nothing here and gives nothing back twice.
/// </remarks>
public sealed class KeyLeaseLedger
{
    private readonly Dictionary<Guid, Holder> _holders = [];
    private long _lastId = Random.Shared.NextInt64(1, long.MaxValue / 2);

    /// <summary>Holders with open leases, and how to tell them the key changed (null when they gave no observer).</summary>
    public IEnumerable<IKeyLeaseHolder> Observers
    {
        get
        {
            foreach (var holder in _holders.Values)
            {
                if (holder.Observer is { } observer && holder.Open.Count > 0)
                {
                    yield return observer;
                }
            }
        }
    }

    /// <summary>True while any holder has a lease it has not reported.</summary>
    /// <summary>Calls of the leases front doors hold and have not reported: counted in the quota windows, maybe not spent yet.</summary>
    public long OpenCalls => _holders.Values.Sum(holder => holder.Open.Sum(lease => (long)lease.Calls));

    public bool AnyOpen
    {
        get
        {
            foreach (var holder in _holders.Values)
            {
                if (holder.Open.Count > 0)
                {
                    return true;
                }
            }

            return false;
        }
    }

    /// <summary>
    /// True while a holder has a lease of more than one call unreported: calls may lie unspent in it. (A one-call lease went to
    /// a caller waiting for it, which spends it at once.)
    /// </summary>
    public bool AnyBulkOpen
    {
        get
        {
            foreach (var holder in _holders.Values)
            {
                if (holder.Open.Exists(lease => lease.Calls > 1))
                {
                    return true;
                }
            }

            return false;
        }
    }

    /// <summary>Records a granted lease and returns its id.</summary>
    public long Grant(Guid holderId, IKeyLeaseHolder? observer, GrantedLease lease, DateTimeOffset now)
    {
        if (!_holders.TryGetValue(holderId, out var holder))
        {
            holder = new Holder();
            _holders[holderId] = holder;
        }

        holder.Observer = observer ?? holder.Observer;
        holder.LastGrant = now;
        holder.LastSeen = now;
        lease.Id = ++_lastId;
        lease.GrantedAt = now;
        holder.Open.Add(lease);
        return lease.Id;
    }

    /// <summary>Ends the reported leases; returns each with the calls it did not spend. Unknown ids are ignored.</summary>
    public List<Returned> End(Guid holderId, IReadOnlyList<LeaseReport> reports, DateTimeOffset now)
    {
        var returned = new List<Returned>();
        if (!_holders.TryGetValue(holderId, out var holder))
        {
            return returned;
        }

        // Any request or report shows the holder alive: its leases are never reclaimed while it is.
        holder.LastSeen = now;

        foreach (var report in reports)
        {
            var index = holder.Open.FindIndex(lease => lease.Id == report.LeaseId);
            if (index < 0)
            {
                continue;
            }

            var lease = holder.Open[index];
            holder.Open.RemoveAt(index);
            var used = Math.Clamp(report.Used, 0, lease.Calls);
            holder.ReportedUsed += used;
            returned.Add(new Returned(lease, lease.Calls - used));
        }

        return returned;
    }

    /// <summary>Counts calls a holder's journal settled for this key (its deliveries name the holder as their sender).</summary>
    public void Settled(Guid sender, long calls)
    {
        if (_holders.TryGetValue(sender, out var holder))
        {
            holder.Settled += calls;
        }
    }

    /// <summary>
    /// Gives up on leases unreported <paramref name="reclaimAfter"/> after they lapsed (their holder was killed, or never got
    /// the answer): returns each with the calls taken to be unspent, those beyond what the holder's journal settled and it
    /// had not reported (oldest lease first). A live holder reports every lease within its lifetime, so this errs only
    /// towards counting a call as spent.
    /// </summary>
    public List<Returned> Reclaim(DateTimeOffset now, TimeSpan lifetime, TimeSpan reclaimAfter, IReadOnlySet<Guid>? deferred = null)
    {
        var returned = new List<Returned>();
        foreach (var (holderId, holder) in _holders.ToList())
        {
            if (!IsSilent(holder, now, reclaimAfter) || deferred?.Contains(holderId) == true)
            {
                continue;
            }

            for (var i = 0; i < holder.Open.Count;)
            {
                var lease = holder.Open[i];
                if (!HasLapsed(lease, now, lifetime, reclaimAfter))
                {
                    i++;
                    continue;
                }

                var used = (int)Math.Clamp(holder.Settled - holder.ReportedUsed, 0, lease.Calls);
                holder.ReportedUsed += used;
                holder.Open.RemoveAt(i);
                returned.Add(new Returned(lease, lease.Calls - used));
            }

            // A holder is remembered while its settlements may still come: what it spent and reported must stay matched
            // with what its journal settled, or a later reclaim would count its reported calls twice.
            if (holder.Open.Count == 0 && now - holder.LastGrant > ForgetAfter)
            {
                _holders.Remove(holderId);
            }
        }

        return returned;
    }

    /// <summary>
    /// The holders <see cref="Reclaim"/> would take a lease back from now: silent for <paramref name="reclaimAfter"/>, with a
    /// lease that lapsed that long ago. Their journal batches the key never received are fetched first, so that what they
    /// settled is counted before the rest is given back.
    /// </summary>
    public List<Guid> DueForReclaim(DateTimeOffset now, TimeSpan lifetime, TimeSpan reclaimAfter) =>
        [.. _holders.Where(h => IsSilent(h.Value, now, reclaimAfter) && h.Value.Open.Exists(lease => HasLapsed(lease, now, lifetime, reclaimAfter)))
            .Select(h => h.Key)];

    private static bool IsSilent(Holder holder, DateTimeOffset now, TimeSpan reclaimAfter) => now - holder.LastSeen >= reclaimAfter;

    private static bool HasLapsed(GrantedLease lease, DateTimeOffset now, TimeSpan lifetime, TimeSpan reclaimAfter) =>
        now - lease.GrantedAt >= lifetime + reclaimAfter;

    private static readonly TimeSpan ForgetAfter = TimeSpan.FromMinutes(10);

    /// <summary>A lease ended, with the calls it did not spend.</summary>
    public readonly record struct Returned(GrantedLease Lease, int Unused);

    private sealed class Holder
    {
        public List<GrantedLease> Open { get; } = [];

        public IKeyLeaseHolder? Observer { get; set; }

        public long ReportedUsed { get; set; }

        public long Settled { get; set; }

        public DateTimeOffset LastGrant { get; set; }

        public DateTimeOffset LastSeen { get; set; }
    }
}

/// <summary>What one lease took: its calls per hold (with the hold's age), and the quota windows that counted them.</summary>
public sealed class GrantedLease(
    string serviceId, long price, IReadOnlyList<GrantedPart> parts, IReadOnlyList<(string CounterKey, DateTimeOffset WindowStart)> counted)
{
    /// <summary>Set by the ledger.</summary>
    public long Id { get; set; }

    /// <summary>Set by the ledger.</summary>
    public DateTimeOffset GrantedAt { get; set; }

    /// <summary>The generation of the key's unsettled calls that counted the lease's calls (<see cref="UnsettledCalls.Add"/>).</summary>
    public long Generation { get; init; }

    public string ServiceId { get; } = serviceId;

    public long Price { get; } = price;

    public IReadOnlyList<GrantedPart> Parts { get; } = parts;

    public IReadOnlyList<(string CounterKey, DateTimeOffset WindowStart)> Counted { get; } = counted;

    public int Calls { get; } = parts.Sum(part => part.Calls);

    /// <summary>The holds of the last <paramref name="unused"/> calls (a holder spends its parts in order).</summary>
    public IEnumerable<GrantedPart> Unspent(int unused)
    {
        for (var i = Parts.Count - 1; i >= 0 && unused > 0; i--)
        {
            var calls = Math.Min(unused, Parts[i].Calls);
            unused -= calls;
            yield return Parts[i] with { Calls = calls };
        }
    }
}

/// <summary>Calls of a lease carried by one hold of the key's account lease, and when the key took that hold.</summary>
public readonly record struct GrantedPart(long Hold, int Calls, DateTimeOffset HoldAt);
