using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;

namespace Marketplace.Grains;

/// <inheritdoc cref="IDataServiceGrain"/>
public sealed class DataServiceGrain(
    [PersistentState("service", StorageNames.Marketplace)] IPersistentState<DataServiceState> store,
    IOptions<GrainPersistenceOptions> options,
    ILogger<DataServiceGrain> logger,
    TimeProvider time) : WriteBehindGrain<DataServiceState>(store, options, logger), IDataServiceGrain
{
    public async Task<DataServiceInfo> UpsertAsync(DataServiceSpec spec)
    {
        var id = this.GetPrimaryKeyString();
        Validation.ThrowIfInvalid(Validation.Check(id, spec));
        if (Exists && State.ProviderId != spec.ProviderId)
        {
            throw new InvalidOperationException($"Data service '{id}' belongs to provider '{State.ProviderId}'.");
        }

        var now = time.GetUtcNow();
        if (!Exists)
        {
            State.CreatedAt = now;
        }

        State.Name = spec.Name;
        State.ProviderId = spec.ProviderId;
        State.UpstreamBaseUrl = spec.UpstreamBaseUrl.TrimEnd('/');
        State.PricePerCall = spec.PricePerCall;
        State.Currency = spec.Currency;
        State.Description = spec.Description;
        State.TimeoutMs = spec.TimeoutMs;
        State.UpstreamRatePerSecond = spec.UpstreamRateLimit?.PerSecond;
        State.UpstreamRateBurst = spec.UpstreamRateLimit?.Burst;
        State.UpdatedAt = now;
        State.Revision++;
        await SaveNowAsync();
        await GrainFactory.GetGrain<IRegistryGrain>(IRegistryGrain.Default).AddAsync(EntityKind.Service, id);
        return ToInfo();
    }

    public Task<DataServiceInfo?> GetAsync() => Task.FromResult(Exists ? ToInfo() : null);

    public ValueTask<ServiceRoute?> GetRouteAsync() => ValueTask.FromResult(Exists
        ? new ServiceRoute(this.GetPrimaryKeyString(), State.UpstreamBaseUrl, State.PricePerCall, State.Currency, State.TimeoutMs, State.Revision, UpstreamRate)
        : null);

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
        MarkDirty();
        return Task.CompletedTask;
    }

    public Task RecordBatchAsync(ServiceUsageDelta usage)
    {
        if (!Exists)
        {
            return Task.CompletedTask;
        }

        State.Calls += usage.Calls;
        State.Succeeded += usage.Calls - usage.Failed;
        State.Failed += usage.Failed;
        State.Revenue += usage.Amount;
        MarkDirty();
        return Task.CompletedTask;
    }

    private DataServiceInfo ToInfo() => new(
        this.GetPrimaryKeyString(), State.Name, State.ProviderId, State.UpstreamBaseUrl, State.PricePerCall, State.Currency,
        State.Description, State.TimeoutMs, State.Revision, State.CreatedAt, State.UpdatedAt,
        new ServiceCounters(State.Calls, State.Succeeded, State.Failed, State.Revenue), UpstreamRate);
}
