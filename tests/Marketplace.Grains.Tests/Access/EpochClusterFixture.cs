using Microsoft.Extensions.DependencyInjection;
using Orleans.Hosting;
using Orleans.Storage;
using Orleans.TestingHost;

namespace Marketplace.Grains.Tests;

/// <summary>
/// A two-silo cluster that leases balances, whose grain storage counts and can refuse each grain's writes
/// (<see cref="RecordingGrainStorage"/>), with a wall clock the test moves forward.
/// </summary>
public sealed class EpochClusterFixture : TwoSiloCluster<EpochClusterFixture.SiloConfigurator>
{
    /// <summary>
    /// The clock every silo uses; static because the silo configurator is created by the test cluster. It starts at noon (UTC)
    /// today, so moving it forward by minutes never crosses into another quota day.
    /// </summary>
    public static AdvancingTimeProvider SharedTime { get; } = new(new DateTimeOffset(DateTime.UtcNow.Date.AddHours(12), TimeSpan.Zero));

    public AdvancingTimeProvider Time => SharedTime;

    /// <summary>The key's state as storage holds it (what an activation that starts now reads).</summary>
    public async Task<ApiKeyState> StoredKeyAsync(string keyId)
    {
        var silo = (InProcessSiloHandle)Cluster.Primary!;
        var storage = silo.ServiceProvider.GetRequiredKeyedService<IGrainStorage>(StorageNames.Marketplace);
        var state = new GrainState<ApiKeyState>();
        await storage.ReadStateAsync("apikey", Grains.GetGrain<IApiKeyGrain>(keyId).GetGrainId(), state);
        return state.State!;
    }

    public sealed class SiloConfigurator : ISiloConfigurator
    {
        private const string Inner = "memory";

        public void Configure(ISiloBuilder siloBuilder)
        {
            siloBuilder.AddMemoryGrainStorage(Inner);
            siloBuilder.Services.AddKeyedSingleton<IGrainStorage>(StorageNames.Marketplace,
                (services, _) => new RecordingGrainStorage(services.GetRequiredKeyedService<IGrainStorage>(Inner)));
            siloBuilder.Services.AddMarketplaceGrains();
            siloBuilder.Services.AddSingleton<TimeProvider>(SharedTime);
            siloBuilder.Services.Configure<MeteringOptions>(o => o.LeaseCalls = 32);
            siloBuilder.Services.Configure<LeaseOptions>(o => o.ReclaimAfter = TimeSpan.FromSeconds(5));
        }
    }
}
