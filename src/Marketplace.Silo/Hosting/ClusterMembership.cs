using Orleans.Configuration;

namespace Marketplace.Silo.Hosting;

/// <summary>How fast the cluster notices a silo that died or hung (Orleans membership settings).</summary>
/// <remarks>
/// How Orleans declares a silo dead, and what each setting here changes:
/// <list type="bullet">
/// <item>Every silo probes the others. The time between probes and the probe timeout adapt to the answers seen (a
/// phi-accrual estimate), bounded by <c>[MinProbeTimeout, MaxProbeTimeout]</c>, which default to half and four times
/// <c>ProbeTimeout</c>. A healthy loopback silo answers in microseconds, so a probe goes out about every
/// <c>MinProbeTimeout</c>.</item>
/// <item>After <c>NumMissedProbesLimit - 1</c> missed probes the prober asks another silo to probe the target
/// (indirect probe). When that fails too, the prober votes with two voices (its own and the intermediary's); a
/// failed direct probe votes once <c>NumMissedProbesLimit</c> are missed. <c>min(NumVotesForDeathDeclaration, (active
/// silos + 1) / 2)</c> fresh votes declare the silo dead in the membership table, and gossip tells the others.</item>
/// <item>A vote is suppressed while the connection to the target has received any message within
/// <c>MaxProbeTimeout × NumMissedProbesLimit</c> (connection liveness check), so a silo that is merely slow is not
/// evicted. A killed silo's connections close, so this does not delay it; a hung (SIGSTOPped) silo's connections stay
/// open, so it is declared dead only once that window has passed since its last message. With the defaults that
/// window is 20 s × 3 = 60 s, which is why a hung silo took over a minute to be declared dead.</item>
/// </list>
/// With the settings below (measured by <c>MembershipDetectionTests</c> on three processes): a SIGKILLed silo is
/// declared dead within about 2 s (a probe every ~0.5 s: one direct miss, then one indirect miss that carries two
/// votes); a SIGSTOPped one within about 8–10 s (the 4 s × 2 liveness window, then the next failed probe).
/// </remarks>
public static class ClusterMembership
{
    private static readonly TimeSpan MaxProbeTimeout = TimeSpan.FromSeconds(4);
    private const int NumMissedProbesLimit = 2;

    /// <summary>
    /// The silence after which a silo may be voted dead (<c>MaxProbeTimeout × NumMissedProbesLimit</c>): Orleans dates a
    /// dead silo's failure this long before its declaration (see <see cref="ClusterGrainDirectory"/>).
    /// </summary>
    public static TimeSpan FailureDetectionWindow => MaxProbeTimeout * NumMissedProbesLimit;

    /// <summary>Applies the marketplace's membership settings to a silo.</summary>
    public static ISiloBuilder ConfigureMarketplaceMembership(this ISiloBuilder silo) =>
        silo.Configure<ClusterMembershipOptions>(membership =>
        {
            // Probes every ~0.5 s on a healthy network; a probe may wait up to 4 s when the target answers slowly or
            // the prober is itself degraded (ExtendProbeTimeoutDuringDegradation stays on, so a starved prober
            // lengthens its timeouts rather than voting healthy silos dead).
            membership.ProbeTimeout = TimeSpan.FromSeconds(1);
            membership.MinProbeTimeout = TimeSpan.FromMilliseconds(500);
            membership.MaxProbeTimeout = MaxProbeTimeout;

            // One direct miss, then an indirect probe through another silo; its failure is two votes, enough to evict.
            // The liveness window is MaxProbeTimeout × NumMissedProbesLimit = 8 s: the time a hung silo with open
            // connections survives, and the silence a merely slow silo must exceed before a vote counts against it.
            membership.NumMissedProbesLimit = NumMissedProbesLimit;
            membership.NumVotesForDeathDeclaration = 2;
            membership.EnableIndirectProbes = true;
            membership.EnableConnectionLivenessCheck = true;

            // Every silo reads the table twice a second (gossip tells them of changes at once; this is the fallback). The
            // read is also how a silo that was declared dead while cut off from the others, but not from the database,
            // learns it and stops: the grain directory holds its grains for half a second after the declaration
            // (ClusterGrainDirectory), so its grains stop admitting about when the others may activate them. Two indexed
            // queries per silo per second.
            membership.TableRefreshTimeout = TimeSpan.FromMilliseconds(500);

            // A silo that died without a goodbye goes stale in the table within 6 s: stale silos are not asked to
            // probe for others, do not count towards the votes needed, and a replacement on another address does not
            // wait half a minute for the old row to age out.
            membership.IAmAliveTablePublishTimeout = TimeSpan.FromSeconds(2);
            membership.NumMissedTableIAmAliveLimit = 3;
        });
}
