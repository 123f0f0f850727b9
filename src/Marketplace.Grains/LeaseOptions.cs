using System.ComponentModel.DataAnnotations;

namespace Marketplace.Grains;

/// <summary>How front doors hold API keys' leases (section <c>Leases</c>).</summary>
public sealed class LeaseOptions
{
    /// <summary>Configuration section.</summary>
    public const string Section = "Leases";

    /// <summary>
    /// How long a lease is good for once its holder has it: a lease not replaced within it lapses, so a change the holder
    /// was not told of (a lost push) takes effect within it.
    /// </summary>
    [Range(typeof(TimeSpan), "00:00:00.100", "00:00:10", ErrorMessage = "Leases:Lifetime must be between 100 ms and 10 seconds.")]
    public TimeSpan Lifetime { get; set; } = TimeSpan.FromSeconds(1);

    /// <summary>
    /// How long after its leases lapsed a silent holder is given up on and what it did not spend goes back: longer than the
    /// journal takes to settle what the holder spent (its flush interval and a delivery), and longer than a refusal waits for
    /// recalled leases (4/5 of the hot-path timeout), during which a holder's callers may all be waiting at the key.
    /// </summary>
    [Range(typeof(TimeSpan), "00:00:01", "00:10:00", ErrorMessage = "Leases:ReclaimAfter must be between 1 second and 10 minutes.")]
    public TimeSpan ReclaimAfter { get; set; } = TimeSpan.FromSeconds(10);

    /// <summary>Most calls one lease carries.</summary>
    [Range(1, 100_000, ErrorMessage = "Leases:MaxCalls must be between 1 and 100000.")]
    public int MaxCalls { get; set; } = 1_000;

    /// <summary>
    /// Whether a key tells its holders when it changes (revoked, suspended, limits); off only to prove that a lapsing lease
    /// alone bounds how long a change takes.
    /// </summary>
    public bool PushChanges { get; set; } = true;

    /// <summary>
    /// Whether front doors admit from leases; off, every call asks its key grain (the previous design, kept for comparison).
    /// </summary>
    public bool Enabled { get; set; } = true;
}
