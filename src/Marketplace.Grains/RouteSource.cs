namespace Marketplace.Grains;

/// <summary>Where <see cref="ServiceRouteCache"/> fetches a data service's route.</summary>
public interface IRouteSource
{
    /// <summary>The service's route, or null when no such service exists; throws when it cannot be fetched.</summary>
    ValueTask<ServiceRoute?> GetRouteAsync(string serviceId);
}

/// <summary>Fetches routes from the data service grains, bounded like every grain call of the call path.</summary>
public sealed class GrainRouteSource(IGrainFactory grains, HotPathCalls calls) : IRouteSource
{
    /// <inheritdoc />
    public ValueTask<ServiceRoute?> GetRouteAsync(string serviceId) =>
        calls.CallAsync(() => grains.GetGrain<IDataServiceGrain>(serviceId).GetRouteAsync(), HotPathRetry.WhenSafe, "data service");
}
