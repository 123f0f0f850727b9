using System.ComponentModel.DataAnnotations;

namespace Marketplace.Grains;

/// <summary>How grains write their in-memory state to storage.</summary>
public sealed class GrainPersistenceOptions
{
    /// <summary>Configuration section these options bind to.</summary>
    public const string Section = "Persistence";

    /// <summary>
    /// Longest time a change to counters or balances stays only in memory. A silo killed with SIGKILL
    /// loses at most this much of per-call state. Admin changes are written before they are acknowledged.
    /// </summary>
    [Range(typeof(TimeSpan), "00:00:00.010", "00:10:00", ErrorMessage = "Persistence:WriteBehindInterval must be between 10 ms and 10 minutes.")]
    public TimeSpan WriteBehindInterval { get; set; } = TimeSpan.FromSeconds(1);
}
