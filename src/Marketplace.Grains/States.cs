namespace Marketplace.Grains;

// Stored grain state. The storage writes JSON that carries type names, so these names, namespaces
// and [Alias] values are part of the storage format: never rename them.

/// <summary>Stored state of a provider grain.</summary>
[GenerateSerializer, Alias("mk.state.Provider")]
public sealed class ProviderState
{
    [Id(0)] public string Name { get; set; } = string.Empty;
    [Id(1)] public string? ContactEmail { get; set; }
    [Id(2)] public DateTimeOffset CreatedAt { get; set; }
    [Id(3)] public List<SecretState> Keys { get; set; } = [];
}

/// <summary>Stored state of a data service grain.</summary>
[GenerateSerializer, Alias("mk.state.DataService")]
public sealed class DataServiceState
{
    [Id(0)] public string Name { get; set; } = string.Empty;
    [Id(1)] public string ProviderId { get; set; } = string.Empty;
    [Id(2)] public string UpstreamBaseUrl { get; set; } = string.Empty;
    [Id(3)] public long PricePerCall { get; set; }
    [Id(4)] public string Currency { get; set; } = string.Empty;
    [Id(5)] public string? Description { get; set; }
    [Id(6)] public int TimeoutMs { get; set; }
    [Id(7)] public int Revision { get; set; }
    [Id(8)] public DateTimeOffset CreatedAt { get; set; }
    [Id(9)] public DateTimeOffset UpdatedAt { get; set; }
    [Id(10)] public long Calls { get; set; }
    [Id(11)] public long Succeeded { get; set; }
    [Id(12)] public long Failed { get; set; }
    [Id(13)] public long Revenue { get; set; }
    [Id(14)] public double? UpstreamRatePerSecond { get; set; }
    [Id(15)] public int? UpstreamRateBurst { get; set; }
    [Id(16)] public string? Category { get; set; }
    [Id(17)] public ChargeRule ChargeRule { get; set; }
    [Id(18)] public ServiceStatus Status { get; set; }
    [Id(19)] public List<ServiceField>? Parameters { get; set; }
    [Id(20)] public List<ServiceField>? ResponseFields { get; set; }

    // Ids 2 and 6 (the single upstream's base URL and timeout) are no longer written: that upstream is version "v1" now.
    [Id(21)] public Dictionary<string, ServiceVersionState> Versions { get; set; } = new(StringComparer.Ordinal);
    [Id(22)] public ReleaseState Release { get; set; } = new();
    [Id(23)] public List<ReleaseState> ReleaseHistory { get; set; } = [];
    [Id(24)] public Dictionary<Guid, DeliveryMark> Deliveries { get; set; } = [];
}

/// <summary>Stored state of one version of a data service; secret header values are stored encrypted.</summary>
[GenerateSerializer, Alias("mk.state.ServiceVersion")]
public sealed class ServiceVersionState
{
    [Id(0)] public int Revision { get; set; }
    [Id(1)] public ServiceVersionSpec Spec { get; set; } = new(string.Empty);
    [Id(2)] public DateTimeOffset UpdatedAt { get; set; }
}

/// <summary>Stored gray release of a data service.</summary>
[GenerateSerializer, Alias("mk.state.Release")]
public sealed class ReleaseState
{
    [Id(0)] public Dictionary<string, int> Weights { get; set; } = new(StringComparer.Ordinal);
    [Id(1)] public Dictionary<string, string> Pins { get; set; } = new(StringComparer.Ordinal);
    [Id(2)] public int Number { get; set; }
    [Id(3)] public DateTimeOffset? SetAt { get; set; }
}

/// <summary>Stored state of the catalog grain.</summary>
[GenerateSerializer, Alias("mk.state.Catalog")]
public sealed class CatalogState
{
    [Id(0)] public Dictionary<string, CatalogEntry> Entries { get; set; } = new(StringComparer.Ordinal);
}

/// <summary>Call counters shared by account and key state.</summary>
[GenerateSerializer, Alias("mk.state.Usage")]
public sealed class UsageState
{
    [Id(0)] public long Calls { get; set; }
    [Id(1)] public long Charged { get; set; }
    [Id(2)] public long Failed { get; set; }
    [Id(3)] public Dictionary<string, long> CallsByService { get; set; } = new(StringComparer.Ordinal);

    /// <summary>Counts one settled call.</summary>
    public void Count(string serviceId, bool succeeded, bool charged)
    {
        Calls++;
        if (charged)
        {
            Charged++;
        }

        if (!succeeded)
        {
            Failed++;
        }

        CallsByService[serviceId] = CallsByService.GetValueOrDefault(serviceId) + 1;
    }

    /// <summary>Counts settled calls added up elsewhere.</summary>
    public void Add(ServiceUsageDelta delta)
    {
        Calls += delta.Calls;
        Charged += delta.ChargedCalls;
        Failed += delta.Failed;
        CallsByService[delta.ServiceId] = CallsByService.GetValueOrDefault(delta.ServiceId) + delta.Calls;
    }

    /// <summary>Adds what another activation counted (<paramref name="stored"/> minus <paramref name="baseline"/>).</summary>
    public void Rebase(UsageState baseline, UsageState stored)
    {
        Calls += stored.Calls - baseline.Calls;
        Charged += stored.Charged - baseline.Charged;
        Failed += stored.Failed - baseline.Failed;
        foreach (var (serviceId, calls) in stored.CallsByService)
        {
            var delta = calls - baseline.CallsByService.GetValueOrDefault(serviceId);
            if (delta != 0)
            {
                CallsByService[serviceId] = CallsByService.GetValueOrDefault(serviceId) + delta;
            }
        }
    }

    /// <summary>An immutable copy for the wire.</summary>
    public UsageCounters ToContract() => new(Calls, Charged, Failed, new Dictionary<string, long>(CallsByService));
}

/// <summary>Three-way merges of what two activations of one grain stored (see <c>WriteBehindGrain.Merge</c>).</summary>
internal static class StateMerge
{
    /// <summary>A counter: ours plus what the other activation added.</summary>
    public static long Counter(long ours, long baseline, long stored) => ours + (stored - baseline);

    /// <summary>A setting: the other activation's value when it changed it, otherwise ours.</summary>
    public static T Setting<T>(T ours, T baseline, T stored) => EqualityComparer<T>.Default.Equals(stored, baseline) ? ours : stored;

    /// <summary>A keyed collection: entries the other activation added are added, entries it removed are removed.</summary>
    public static void Keyed<TValue>(Dictionary<string, TValue> ours, Dictionary<string, TValue> baseline, Dictionary<string, TValue> stored)
    {
        foreach (var (key, value) in stored)
        {
            if (!baseline.ContainsKey(key))
            {
                ours.TryAdd(key, value);
            }
        }

        foreach (var key in baseline.Keys)
        {
            if (!stored.ContainsKey(key))
            {
                ours.Remove(key);
            }
        }
    }

    /// <summary>A list of items with ids, merged like <see cref="Keyed{TValue}"/>.</summary>
    public static void Listed<T>(List<T> ours, List<T> baseline, List<T> stored, Func<T, string> id)
    {
        var known = baseline.Select(id).ToHashSet(StringComparer.Ordinal);
        var kept = stored.Select(id).ToHashSet(StringComparer.Ordinal);
        var have = ours.Select(id).ToHashSet(StringComparer.Ordinal);
        ours.RemoveAll(item => known.Contains(id(item)) && !kept.Contains(id(item)));
        ours.AddRange(stored.Where(item => !known.Contains(id(item)) && !have.Contains(id(item))));
    }
}

/// <summary>Stored state of an account grain. Reservations are not stored: they belong to calls in flight.</summary>
[GenerateSerializer, Alias("mk.state.Account")]
public sealed class AccountState
{
    [Id(0)] public string Name { get; set; } = string.Empty;
    [Id(1)] public string Currency { get; set; } = string.Empty;
    [Id(2)] public long Balance { get; set; }
    [Id(3)] public long CreditLimit { get; set; }
    [Id(4)] public long TotalToppedUp { get; set; }
    [Id(5)] public long TotalCharged { get; set; }
    [Id(6)] public UsageState Usage { get; set; } = new();
    [Id(7)] public List<string> KeyIds { get; set; } = [];
    [Id(8)] public List<BalanceEntry> Ledger { get; set; } = [];
    [Id(9)] public DateTimeOffset CreatedAt { get; set; }
    [Id(10)] public long? MonthlyCallCap { get; set; }
    [Id(11)] public DateTimeOffset MonthStart { get; set; }
    [Id(12)] public long CallsThisMonth { get; set; }
    // Ids 2, 5, 6, 11, 12 and 13 (balance, charged, usage, month count, delivery marks) are rebuilt from the journal at
    // activation; what is stored of them is never read back (but Balance and TotalCharged once, to derive Credits).
    [Id(13)] public Dictionary<Guid, DeliveryMark> Deliveries { get; set; } = [];

    // Top-ups and adjustments, net: the balance is this minus what the journal charged. Null when stored before it existed.
    [Id(14)] public long? Credits { get; set; }

    // The most the account may hold for calls in flight and keys' leases, stored before it is exceeded: a new activation
    // withholds it for what the previous one held (see AccountGrain.MakeRoomAsync).
    [Id(15)] public long ReservedCeiling { get; set; }
}

/// <summary>An audited change of balance made by an admin (top-up or adjustment).</summary>
[GenerateSerializer, Alias("mk.state.BalanceEntry")]
public sealed class BalanceEntry
{
    [Id(0)] public DateTimeOffset At { get; set; }
    [Id(1)] public long Amount { get; set; }
    [Id(2)] public string Reason { get; set; } = string.Empty;
    [Id(3)] public long BalanceAfter { get; set; }

    // The sender's id for the change (null for changes stored before ids existed) and its kind, so a resend is recognised.
    [Id(4)] public string? OperationId { get; set; }
    [Id(5)] public BalanceChangeKind Kind { get; set; }
}

/// <summary>Stored state of an API key grain. Holds the secret only as salt and hash.</summary>
[GenerateSerializer, Alias("mk.state.ApiKey")]
public sealed class ApiKeyState
{
    [Id(0)] public string AccountId { get; set; } = string.Empty;
    [Id(1)] public string Name { get; set; } = string.Empty;
    [Id(2)] public ApiKeyStatus Status { get; set; }
    [Id(3)] public List<string> Services { get; set; } = [];
    [Id(4)] public DateTimeOffset? ExpiresAt { get; set; }
    [Id(5)] public DateTimeOffset CreatedAt { get; set; }
    // Ids 6 and 7 held a single secret before rotation; they are retired, never to be reused.
    [Id(8)] public UsageState Usage { get; set; } = new();
    [Id(9)] public string Currency { get; set; } = string.Empty;
    [Id(10)] public List<SecretState> Secrets { get; set; } = [];
    [Id(11)] public LimitsState Limits { get; set; } = new();
    [Id(12)] public Dictionary<string, QuotaCounterState> Quotas { get; set; } = new(StringComparer.Ordinal);
    [Id(13)] public Dictionary<string, TokenState> Tokens { get; set; } = new(StringComparer.Ordinal);
    [Id(14)] public Dictionary<Guid, DeliveryMark> Deliveries { get; set; } = [];

    // At least as many calls as the key's activations counted into its quotas and did not see settled yet (see
    // UnsettledCeiling): what an activation that starts after one went away withholds from the quotas.
    [Id(15)] public long UnsettledCeiling { get; set; }
}

/// <summary>One secret of a key: salted hash only.</summary>
[GenerateSerializer, Alias("mk.state.Secret")]
public sealed class SecretState
{
    [Id(0)] public string Id { get; set; } = string.Empty;
    [Id(1)] public byte[] Salt { get; set; } = [];
    [Id(2)] public byte[] Hash { get; set; } = [];
    [Id(3)] public DateTimeOffset CreatedAt { get; set; }
    [Id(4)] public DateTimeOffset? RetiresAt { get; set; }
}

/// <summary>A key's limits in storage form (concrete types only, so the stored JSON needs no type names).</summary>
[GenerateSerializer, Alias("mk.state.Limits")]
public sealed class LimitsState
{
    [Id(0)] public double? RatePerSecond { get; set; }
    [Id(1)] public int? RateBurst { get; set; }
    [Id(2)] public long? PerDay { get; set; }
    [Id(3)] public long? PerMonth { get; set; }
    [Id(4)] public Dictionary<string, LimitsState> PerService { get; set; } = new(StringComparer.Ordinal);
    [Id(5)] public TimeSpan? WindowOffset { get; set; }

    /// <summary>True when a daily or monthly quota applies to the key or to one of its services.</summary>
    /// <remarks>A method, not a property: stored state is serialized by its properties.</remarks>
    public bool HasQuota()
    {
        if (PerDay is not null || PerMonth is not null)
        {
            return true;
        }

        foreach (var service in PerService.Values)
        {
            if (service.HasQuota())
            {
                return true;
            }
        }

        return false;
    }

    /// <summary>Storage form of a contract.</summary>
    public static LimitsState From(KeyLimits? limits)
    {
        var state = new LimitsState();
        if (limits is null)
        {
            return state;
        }

        state.RatePerSecond = limits.Rate?.PerSecond;
        state.RateBurst = limits.Rate?.Burst;
        state.PerDay = limits.Quota?.PerDay;
        state.PerMonth = limits.Quota?.PerMonth;
        state.WindowOffset = limits.WindowOffset;
        foreach (var (serviceId, service) in limits.PerService ?? new Dictionary<string, ServiceLimits>())
        {
            state.PerService[serviceId] = new LimitsState
            {
                RatePerSecond = service.Rate?.PerSecond,
                RateBurst = service.Rate?.Burst,
                PerDay = service.Quota?.PerDay,
                PerMonth = service.Quota?.PerMonth,
            };
        }

        return state;
    }

    /// <summary>The rate limit, when set.</summary>
    public RateLimit? Rate => RatePerSecond is { } rate && RateBurst is { } burst ? new RateLimit(rate, burst) : null;

    /// <summary>Contract form.</summary>
    public KeyLimits ToContract() => new(
        Rate,
        PerDay is null && PerMonth is null ? null : new Quota(PerDay, PerMonth),
        PerService.Count == 0 ? null : PerService.ToDictionary(p => p.Key, p => new ServiceLimits(p.Value.Rate,
            p.Value.PerDay is null && p.Value.PerMonth is null ? null : new Quota(p.Value.PerDay, p.Value.PerMonth))),
        WindowOffset);
}

/// <summary>Calls counted in a quota window.</summary>
[GenerateSerializer, Alias("mk.state.QuotaCounter")]
public sealed class QuotaCounterState
{
    [Id(0)] public DateTimeOffset WindowStart { get; set; }
    [Id(1)] public long Count { get; set; }
}

/// <summary>An issued access or refresh token: salted hash only.</summary>
[GenerateSerializer, Alias("mk.state.Token")]
public sealed class TokenState
{
    [Id(0)] public bool IsRefresh { get; set; }
    [Id(1)] public byte[] Hash { get; set; } = [];
    [Id(2)] public DateTimeOffset ExpiresAt { get; set; }
    [Id(3)] public bool Used { get; set; }
}

/// <summary>Stored state of the registry grain.</summary>
[GenerateSerializer, Alias("mk.state.Registry")]
public sealed class RegistryState
{
    [Id(0)] public SortedSet<string> Providers { get; set; } = new(StringComparer.Ordinal);
    [Id(1)] public SortedSet<string> Services { get; set; } = new(StringComparer.Ordinal);
    [Id(2)] public SortedSet<string> Accounts { get; set; } = new(StringComparer.Ordinal);
}

/// <summary>Stored state of an Idempotency-Key.</summary>
[GenerateSerializer, Alias("mk.state.Idempotency")]
public sealed class IdempotencyState
{
    [Id(0)] public string Fingerprint { get; set; } = string.Empty;
    [Id(1)] public DateTimeOffset StartedAt { get; set; }
    [Id(2)] public DateTimeOffset ExpiresAt { get; set; }
    [Id(3)] public CallResult? Result { get; set; }
    [Id(4)] public DateTimeOffset? ClaimedUntil { get; set; }
}

/// <summary>Stored state of an alert grain: an account's webhook alerts, what has fired, and deliveries not yet done.</summary>
[GenerateSerializer, Alias("mk.state.Alerts")]
public sealed class AlertsState
{
    [Id(0)] public List<AlertState> Alerts { get; set; } = [];

    // What has fired, so each (alert, key, quota, window, threshold) and (alert, cycle, threshold) fires once; the value is
    // when the entry may be forgotten (its window is over).
    [Id(1)] public Dictionary<string, DateTimeOffset> Fired { get; set; } = new(StringComparer.Ordinal);
    [Id(2)] public List<AlertDeliveryState> Pending { get; set; } = [];
    [Id(3)] public long Version { get; set; }
    [Id(4)] public long? Cycle { get; set; }
    [Id(5)] public long CycleBase { get; set; }
}

/// <summary>One registered webhook alert; the signing secret is stored encrypted (see <see cref="UpstreamSecrets"/>).</summary>
[GenerateSerializer, Alias("mk.state.Alert")]
public sealed class AlertState
{
    [Id(0)] public string Id { get; set; } = string.Empty;
    [Id(1)] public string Url { get; set; } = string.Empty;
    [Id(2)] public List<AlertEvent> Events { get; set; } = [];
    [Id(3)] public List<int> Thresholds { get; set; } = [];
    [Id(4)] public string Secret { get; set; } = string.Empty;
    [Id(5)] public DateTimeOffset CreatedAt { get; set; }
    [Id(6)] public long Delivered { get; set; }
    [Id(7)] public DateTimeOffset? LastDeliveredAt { get; set; }
    [Id(8)] public string? LastError { get; set; }
    [Id(9)] public DateTimeOffset? LastErrorAt { get; set; }
}

/// <summary>A webhook delivery waiting for its first attempt or a retry; the body is fixed when it fires.</summary>
[GenerateSerializer, Alias("mk.state.AlertDelivery")]
public sealed class AlertDeliveryState
{
    [Id(0)] public string Id { get; set; } = string.Empty;
    [Id(1)] public string AlertId { get; set; } = string.Empty;
    [Id(2)] public AlertEvent Event { get; set; }
    [Id(3)] public string Body { get; set; } = string.Empty;
    [Id(4)] public int Attempts { get; set; }
    [Id(5)] public DateTimeOffset NextAttemptAt { get; set; }
    [Id(6)] public string? LastError { get; set; }
}
