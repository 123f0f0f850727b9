using Orleans.Configuration;

namespace Marketplace.Silo.Hosting;

/// <summary>Which grain directory the silos use (<c>Silo:GrainDirectory</c>), and how long it holds a failed silo's grains.</summary>
/// <remarks>
/// <para>
/// Orleans' default directory (a hash ring of per-silo partitions) is only eventually consistent while silos join and
/// leave: a key's or account's grain can briefly run twice, and each copy admits calls against the same quota or balance.
/// The distributed directory (<c>AddDistributedGrainDirectory</c>, experimental in Orleans 10) hands its ranges over
/// between silos under range locks and, when a silo died without handing over, rebuilds the lost ranges by asking every
/// live silo what it runs, so a grain is registered once.
/// </para>
/// <para>
/// Why it once made recovery from a killed silo take 23–30 s: after a silo is declared dead, each directory partition
/// refuses to register a new activation of a grain the dead silo held (and any grain of a range the dead silo owned, whose
/// entries died with it) until a lease runs out, in case the silo is not dead but hung or cut off and still runs them.
/// The lease is <c>GrainDirectoryOptions.RangeLeaseDuration</c> (30 s by default) counted from the estimated failure,
/// that is from the declaration less the failure-detection window (<c>MaxProbeTimeout × NumMissedProbesLimit</c>, 8 s
/// with <see cref="ClusterMembership"/>): 30 − 8 = 22 s after the declaration, on top of the 1–2 s the declaration takes.
/// The range recovery itself asks only silos that are still members, so it does not wait for the dead one.
/// </para>
/// <para>
/// What a lease can and cannot do: a killed silo runs nothing, so any lease only delays its grains' return. A hung silo
/// (SIGSTOP, a long pause) runs nothing while it hangs either; resumed, it learns from the membership table that it was
/// declared dead and stops (Orleans fails fast), and meanwhile only requests already queued on it reach its grains; no
/// fixed lease covers a pause of unknown length. A silo cut off from the other silos but not from the database keeps
/// serving its own front door until its next table read (every half second, <see cref="ClusterMembership"/>) tells it that
/// it is dead. So <see cref="DefaultLease"/> is the failure-detection window plus <see cref="LeaseAfterDeclaration"/>, half
/// a second: the others activate its grains about when it stops. A one-second hold (with a one-second table read) brought a
/// killed silo's grains back 1.95-2.45 s after the kill; the half second is what keeps that within 2 s.
/// What remains (a resumed silo's queued requests, a table read slower than a second) is bounded by the journal (a call
/// is charged once, by its TrackId) and by the state's version check (a stale write re-reads and adds its counts).
/// </para>
/// </remarks>
public static class ClusterGrainDirectory
{
    /// <summary>Orleans' strongly consistent distributed grain directory.</summary>
    public const string Distributed = "Distributed";

    /// <summary>Orleans' default (eventually consistent) grain directory.</summary>
    public const string Default = "Default";

    /// <summary>What the lease covers after the declaration: the time a cut-off silo needs to read that it is dead.</summary>
    public static readonly TimeSpan LeaseAfterDeclaration = TimeSpan.FromMilliseconds(500);

    /// <summary>The default <c>Silo:GrainDirectoryLease</c>: the failure-detection window and <see cref="LeaseAfterDeclaration"/>.</summary>
    public static readonly TimeSpan DefaultLease = ClusterMembership.FailureDetectionWindow + LeaseAfterDeclaration;

    /// <summary>The longest lease accepted (Orleans' default).</summary>
    public static readonly TimeSpan MaxLease = TimeSpan.FromSeconds(30);

    /// <summary>True when <paramref name="directory"/> names a directory (case-insensitive).</summary>
    public static bool IsKnown(string? directory) => IsDistributed(directory) || string.Equals(directory?.Trim(), Default, StringComparison.OrdinalIgnoreCase);

    /// <summary>True when <paramref name="directory"/> names the distributed directory.</summary>
    public static bool IsDistributed(string? directory) => string.Equals(directory?.Trim(), Distributed, StringComparison.OrdinalIgnoreCase);

    /// <summary>Applies <c>Silo:GrainDirectory</c> and <c>Silo:GrainDirectoryLease</c> to a silo.</summary>
    public static ISiloBuilder ConfigureMarketplaceGrainDirectory(this ISiloBuilder silo, SiloHostOptions options)
    {
        if (!IsDistributed(options.GrainDirectory))
        {
            return silo;
        }

        // The API is marked experimental in Orleans 10; it is the one that keeps a grain single-activation through
        // membership changes, which the marketplace's exact quotas and balances rely on.
#pragma warning disable ORLEANSEXP003
        silo.AddDistributedGrainDirectory();
#pragma warning restore ORLEANSEXP003
        return silo.Configure<GrainDirectoryOptions>(directory => directory.RangeLeaseDuration = options.GrainDirectoryLease);
    }
}
