using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;

namespace Marketplace.Grains;

/// <inheritdoc cref="IDataServiceGrain"/>
public sealed class DataServiceGrain(
    [PersistentState("service", StorageNames.Marketplace)] IPersistentState<DataServiceState> store,
    IOptions<GrainPersistenceOptions> options,
    ILogger<DataServiceGrain> logger,
    UpstreamSecrets secrets,
    TimeProvider time,
    IJournalReader journal) : WriteBehindGrain<DataServiceState>(store, options, logger), IDataServiceGrain
{
    // The highest journal batch applied per sender: seeded at activation from the journal read, then advanced by deliveries.
    private readonly Dictionary<Guid, DeliveryMark> _applied = [];

    /// <summary>The version the <see cref="DataServiceSpec.UpstreamBaseUrl"/> shorthand sets.</summary>
    public const string DefaultVersion = "v1";

    /// <summary>What admins and providers see instead of a secret header's value.</summary>
    public const string Hidden = "(hidden)";

    private const int MaxVersions = 50;
    private const int MaxReleaseHistory = 20;

    public async Task<DataServiceInfo> UpsertAsync(DataServiceSpec spec)
    {
        var id = this.GetPrimaryKeyString();
        Validation.ThrowIfInvalid(Validation.Check(id, spec));
        if (Exists && State.ProviderId != spec.ProviderId)
        {
            throw new InvalidOperationException($"Data service '{id}' belongs to provider '{State.ProviderId}'.");
        }

        ThrowIfRetired();
        var now = time.GetUtcNow();
        if (!Exists)
        {
            State.CreatedAt = now;
            State.Status = ServiceStatus.Draft;
        }

        if (spec.Status is { } status)
        {
            ThrowIfBadTransition(status);
            State.Status = status;
        }

        State.Name = spec.Name;
        State.ProviderId = spec.ProviderId;
        State.PricePerCall = spec.PricePerCall;
        State.Currency = spec.Currency;
        State.Description = spec.Description;
        State.Category = spec.Category;
        State.ChargeRule = spec.ChargeRule;
        State.Parameters = spec.Parameters?.ToList();
        State.ResponseFields = spec.ResponseFields?.ToList();
        State.UpstreamRatePerSecond = spec.UpstreamRateLimit?.PerSecond;
        State.UpstreamRateBurst = spec.UpstreamRateLimit?.Burst;
        if (spec.UpstreamBaseUrl.Length > 0)
        {
            // Stored secret values are ciphertext: send them as "(hidden)" so PutVersion keeps them instead of encrypting them again.
            var existing = State.Versions.GetValueOrDefault(DefaultVersion)?.Spec is { } stored
                ? stored with { SecretHeaders = stored.SecretHeaders?.ToDictionary(h => h.Key, _ => Hidden) }
                : null;
            var v1 = (existing ?? new ServiceVersionSpec(string.Empty)) with { BaseUrl = spec.UpstreamBaseUrl.TrimEnd('/'), TimeoutMs = spec.TimeoutMs };
            PutVersion(DefaultVersion, v1, now);
            if (State.Release.Weights.Count == 0)
            {
                State.Release.Weights[DefaultVersion] = 100;
            }
        }

        await CommitAsync(now);
        return ToInfo();
    }

    public Task<DataServiceInfo?> GetAsync() => Task.FromResult(Exists ? ToInfo() : null);

    public Task<DataServiceInfo?> GetAsAsync(string? actingProviderId) =>
        Task.FromResult(Exists && (actingProviderId is null || actingProviderId == State.ProviderId) ? ToInfo() : null);

    public async Task<DataServiceInfo> UpsertVersionAsync(string versionId, ServiceVersionSpec spec, string? actingProviderId)
    {
        ThrowIfNotOwner(actingProviderId);
        ThrowIfRetired();
        Validation.ThrowIfInvalid(Validation.Check(versionId, spec));
        if (!State.Versions.ContainsKey(versionId) && State.Versions.Count >= MaxVersions)
        {
            throw new ArgumentException($"A data service has at most {MaxVersions} versions; delete one first.");
        }

        var now = time.GetUtcNow();
        PutVersion(versionId, spec with { BaseUrl = spec.BaseUrl.TrimEnd('/') }, now);
        await CommitAsync(now);
        return ToInfo();
    }

    public async Task<DataServiceInfo> DeleteVersionAsync(string versionId, string? actingProviderId)
    {
        ThrowIfNotOwner(actingProviderId);
        ThrowIfRetired();
        if (!State.Versions.ContainsKey(versionId))
        {
            throw new KeyNotFoundException($"Data service '{this.GetPrimaryKeyString()}' has no version '{versionId}'.");
        }

        if (State.Release.Weights.GetValueOrDefault(versionId) > 0 || State.Release.Pins.ContainsValue(versionId))
        {
            throw new InvalidOperationException($"Version '{versionId}' still takes traffic or pins; release it first.");
        }

        State.Versions.Remove(versionId);
        State.Release.Weights.Remove(versionId);
        await CommitAsync(time.GetUtcNow());
        return ToInfo();
    }

    public async Task<DataServiceInfo> SetReleaseAsync(ReleaseSpec release, string? actingProviderId)
    {
        ThrowIfNotOwner(actingProviderId);
        ThrowIfRetired();
        Validation.ThrowIfInvalid(Validation.Check(release, State.Versions.Keys));
        var now = time.GetUtcNow();
        PushRelease(new ReleaseState
        {
            Weights = new Dictionary<string, int>(release.Weights, StringComparer.Ordinal),
            Pins = new Dictionary<string, string>(release.Pins ?? new Dictionary<string, string>(), StringComparer.Ordinal),
        }, now);
        await CommitAsync(now);
        return ToInfo();
    }

    public async Task<DataServiceInfo> RollbackAsync(string? actingProviderId)
    {
        ThrowIfNotOwner(actingProviderId);
        ThrowIfRetired();
        if (State.ReleaseHistory.Count == 0)
        {
            throw new InvalidOperationException("There is no earlier release to roll back to.");
        }

        var previous = State.ReleaseHistory[^1];
        if (previous.Weights.Keys.Concat(previous.Pins.Values).Any(v => !State.Versions.ContainsKey(v)))
        {
            throw new InvalidOperationException("The earlier release names a version that was deleted; set the release instead.");
        }

        State.ReleaseHistory.RemoveAt(State.ReleaseHistory.Count - 1);
        var now = time.GetUtcNow();
        State.Release = new ReleaseState
        {
            Weights = new Dictionary<string, int>(previous.Weights, StringComparer.Ordinal),
            Pins = new Dictionary<string, string>(previous.Pins, StringComparer.Ordinal),
            Number = State.Release.Number + 1,
            SetAt = now,
        };
        await CommitAsync(now);
        return ToInfo();
    }

    public async Task<DataServiceInfo> SetStatusAsync(ServiceStatus status, string? actingProviderId)
    {
        ThrowIfNotOwner(actingProviderId);
        if (!Enum.IsDefined(status))
        {
            throw new ArgumentException("status must be draft, published, suspended or retired.");
        }

        ThrowIfRetired();
        ThrowIfBadTransition(status);
        State.Status = status;
        await CommitAsync(time.GetUtcNow());
        return ToInfo();
    }

    public ValueTask<ServiceRoute?> GetRouteAsync()
    {
        if (!Exists)
        {
            return ValueTask.FromResult<ServiceRoute?>(null);
        }

        var versions = State.Versions.Select(v => new VersionRoute(v.Key, v.Value.Revision, v.Value.Spec)).ToList();
        return ValueTask.FromResult<ServiceRoute?>(new ServiceRoute(
            this.GetPrimaryKeyString(), State.PricePerCall, State.Currency, State.Revision, UpstreamRate, State.Status, State.ChargeRule,
            versions, new Dictionary<string, int>(State.Release.Weights), new Dictionary<string, string>(State.Release.Pins)));
    }

    private RateLimit? UpstreamRate =>
        State.UpstreamRatePerSecond is { } rate && State.UpstreamRateBurst is { } burst ? new RateLimit(rate, burst) : null;

    public Task RecordAsync(bool succeeded, long charged)
    {
        if (!Exists)
        {
            return Task.CompletedTask;
        }

        State.Calls++;
        if (succeeded)
        {
            State.Succeeded++;
        }
        else
        {
            State.Failed++;
        }

        State.Revenue += charged;
        return Task.CompletedTask;
    }

    // Counters are not stored per call: they are rebuilt from the journal, which counts every settled call.
    public override async Task OnActivateAsync(CancellationToken cancellationToken)
    {
        await base.OnActivateAsync(cancellationToken);
        if (!Exists)
        {
            return;
        }

        var read = await journal.ReadServiceAsync(this.GetPrimaryKeyString());
        State.Calls = read.Totals.Calls;
        State.Succeeded = read.Totals.Calls - read.Totals.Failed;
        State.Failed = read.Totals.Failed;
        State.Revenue = read.Totals.Charged;
        DeliveryMarks.Seed(_applied, read.Senders, time.GetUtcNow());
    }

    protected override bool MergesConflicts => true;

    // The service's settings stay this activation's (they are written at once when changed); its counters are the
    // journal's, not stored state's, so there is nothing to merge.
    protected override void Merge(DataServiceState target, DataServiceState baseline, DataServiceState stored)
    {
    }

    public Task RecordBatchAsync(ServiceUsageDelta usage, DeliveryId? delivery = null)
    {
        if (!Exists || !DeliveryMarks.TryAccept(_applied, delivery, time.GetUtcNow()))
        {
            return Task.CompletedTask;
        }

        State.Calls += usage.Calls;
        State.Succeeded += usage.Calls - usage.Failed;
        State.Failed += usage.Failed;
        State.Revenue += usage.Amount;
        return Task.CompletedTask;
    }

    private void PutVersion(string versionId, ServiceVersionSpec spec, DateTimeOffset now)
    {
        var previous = State.Versions.GetValueOrDefault(versionId);

        // Secret values are encrypted before they are stored; "(hidden)" (what reads show) keeps the stored value.
        Dictionary<string, string>? secretHeaders = null;
        if (spec.SecretHeaders is { Count: > 0 })
        {
            secretHeaders = new Dictionary<string, string>(StringComparer.OrdinalIgnoreCase);
            foreach (var (name, value) in spec.SecretHeaders)
            {
                var kept = previous?.Spec.SecretHeaders?.FirstOrDefault(h => string.Equals(h.Key, name, StringComparison.OrdinalIgnoreCase)).Value;
                if (value == Hidden)
                {
                    secretHeaders[name] = kept ?? throw new ArgumentException($"secretHeaders: {name} has no stored value to keep; send the value itself.");
                }
                else if (kept is not null && secrets.Decrypt(name, kept) == value)
                {
                    // The same value again: keep its ciphertext, so the version (and its breaker) does not change.
                    secretHeaders[name] = kept;
                }
                else
                {
                    secretHeaders[name] = secrets.Encrypt(name, value);
                }
            }
        }

        var stored = spec with { SecretHeaders = secretHeaders };
        if (previous is not null && SameSpec(previous.Spec, stored))
        {
            return;
        }

        State.Versions[versionId] = new ServiceVersionState { Spec = stored, Revision = (previous?.Revision ?? 0) + 1, UpdatedAt = now };
    }

    private static bool SameSpec(ServiceVersionSpec a, ServiceVersionSpec b) =>
        a.BaseUrl == b.BaseUrl && a.TimeoutMs == b.TimeoutMs && a.Method == b.Method && a.PathTemplate == b.PathTemplate
        && SameMap(a.ParameterMap, b.ParameterMap) && SameMap(a.Headers, b.Headers) && SameMap(a.SecretHeaders, b.SecretHeaders)
        && SameMap(a.ResponseFields, b.ResponseFields) && a.Hit == b.Hit && a.Protection == b.Protection;

    private static bool SameMap(IReadOnlyDictionary<string, string>? a, IReadOnlyDictionary<string, string>? b) =>
        (a is null || a.Count == 0) ? (b is null || b.Count == 0) : b is not null && a.Count == b.Count && a.All(p => b.TryGetValue(p.Key, out var v) && v == p.Value);

    private void PushRelease(ReleaseState next, DateTimeOffset now)
    {
        State.ReleaseHistory.Add(State.Release);
        if (State.ReleaseHistory.Count > MaxReleaseHistory)
        {
            State.ReleaseHistory.RemoveAt(0);
        }

        next.Number = State.Release.Number + 1;
        next.SetAt = now;
        State.Release = next;
    }

    private async Task CommitAsync(DateTimeOffset now)
    {
        State.UpdatedAt = now;
        State.Revision++;
        await SaveNowAsync();
        var id = this.GetPrimaryKeyString();
        await GrainFactory.GetGrain<IRegistryGrain>(IRegistryGrain.Default).AddAsync(EntityKind.Service, id);
        await GrainFactory.GetGrain<ICatalogGrain>(ICatalogGrain.Default).PutAsync(new CatalogEntry(
            id, State.Name, State.ProviderId, State.Category, State.Description, State.PricePerCall, State.Currency, State.ChargeRule, State.Status,
            State.Parameters, State.ResponseFields));
    }

    private void ThrowIfNotOwner(string? actingProviderId)
    {
        if (!Exists || (actingProviderId is not null && actingProviderId != State.ProviderId))
        {
            throw new KeyNotFoundException($"No data service '{this.GetPrimaryKeyString()}'.");
        }
    }

    private void ThrowIfRetired()
    {
        if (Exists && State.Status == ServiceStatus.Retired)
        {
            throw new InvalidOperationException($"Data service '{this.GetPrimaryKeyString()}' is retired and takes no changes.");
        }
    }

    private void ThrowIfBadTransition(ServiceStatus next)
    {
        if (Exists && State.Status != ServiceStatus.Draft && next == ServiceStatus.Draft)
        {
            throw new InvalidOperationException("A service that was published cannot go back to draft; suspend it instead.");
        }
    }

    private DataServiceInfo ToInfo()
    {
        var v1 = State.Versions.GetValueOrDefault(DefaultVersion)?.Spec;
        var versions = State.Versions.OrderBy(v => v.Key, StringComparer.Ordinal).Select(v => new ServiceVersionInfo(v.Key, v.Value.Revision,
                v.Value.Spec with { SecretHeaders = v.Value.Spec.SecretHeaders?.ToDictionary(h => h.Key, _ => Hidden) }, v.Value.UpdatedAt)).ToList();
        return new DataServiceInfo(
            this.GetPrimaryKeyString(), State.Name, State.ProviderId, v1?.BaseUrl ?? string.Empty, State.PricePerCall, State.Currency,
            State.Description, v1?.TimeoutMs ?? 0, State.Revision, State.CreatedAt, State.UpdatedAt,
            new ServiceCounters(State.Calls, State.Succeeded, State.Failed, State.Revenue), UpstreamRate,
            State.Category, State.ChargeRule, State.Status, State.Parameters, State.ResponseFields, versions,
            new ReleaseInfo(new Dictionary<string, int>(State.Release.Weights), new Dictionary<string, string>(State.Release.Pins), State.Release.Number, State.Release.SetAt));
    }
}
