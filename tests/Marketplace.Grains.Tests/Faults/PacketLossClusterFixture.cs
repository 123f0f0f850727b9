using Microsoft.Extensions.DependencyInjection;
using Orleans.Hosting;
using Orleans.TestingHost;

namespace Marketplace.Grains.Tests;

/// <summary>
/// A two-silo cluster that leases balances and loses money messages as <see cref="PacketLoss"/> says, with a wall clock the
/// test moves forward to pass lease lifetimes.
/// </summary>
public sealed class PacketLossClusterFixture : TwoSiloCluster<PacketLossClusterFixture.SiloConfigurator>
{
    /// <summary>
    /// The clock every silo uses; static because the silo configurator is created by the test cluster. It starts at noon
    /// (UTC) today, so moving it forward a few seconds never crosses into another quota day.
    /// </summary>
    public static AdvancingTimeProvider SharedTime { get; } = new(new DateTimeOffset(DateTime.UtcNow.Date.AddHours(12), TimeSpan.Zero));

    /// <summary>
    /// How long after its leases lapsed a silent front door is given up on (see <see cref="LeaseOptions.ReclaimAfter"/>):
    /// longer than the test lasts, so a lease whose grant was lost comes back only if its front door learns of it.
    /// </summary>
    public static readonly TimeSpan ReclaimAfter = TimeSpan.FromMinutes(2);

    public AdvancingTimeProvider Time => SharedTime;

    public sealed class SiloConfigurator : ISiloConfigurator
    {
        public void Configure(ISiloBuilder siloBuilder)
        {
            siloBuilder.AddMemoryGrainStorage(StorageNames.Marketplace);
            siloBuilder.Services.AddMarketplaceGrains();
            siloBuilder.Services.AddSingleton<TimeProvider>(SharedTime);
            siloBuilder.Services.Configure<MeteringOptions>(o => o.LeaseCalls = 32);
            siloBuilder.Services.Configure<LeaseOptions>(o => o.ReclaimAfter = ReclaimAfter);
            siloBuilder.AddIncomingGrainCallFilter<PacketLossFilter>();
        }
    }
}
