using Orleans.Configuration;

namespace Marketplace.Silo.Hosting;

/// <summary>How fast the cluster notices a silo that died or hung (Orleans membership settings).</summary>
public static class ClusterMembership
{
    /// <summary>Applies the marketplace's membership settings to a silo.</summary>
    public static ISiloBuilder ConfigureMarketplaceMembership(this ISiloBuilder silo) =>
        silo.Configure<ClusterMembershipOptions>(membership =>
        {
            // A silo that stops answering is voted dead in seconds, not the default minute.
            membership.ProbeTimeout = TimeSpan.FromSeconds(2);
            membership.NumMissedProbesLimit = 2;
            membership.NumVotesForDeathDeclaration = 1;
            membership.TableRefreshTimeout = TimeSpan.FromSeconds(5);

            // A silo that died without a goodbye goes stale in the table within seconds, so its replacement
            // (on another address) can join without waiting half a minute for the old row to age out.
            membership.IAmAliveTablePublishTimeout = TimeSpan.FromSeconds(2);
            membership.NumMissedTableIAmAliveLimit = 3;
        });
}
