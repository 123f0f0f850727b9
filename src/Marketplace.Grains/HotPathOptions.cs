using System.ComponentModel.DataAnnotations;

namespace Marketplace.Grains;

/// <summary>How long the call path waits on the cluster (section <c>HotPath</c>).</summary>
public sealed class HotPathOptions
{
    /// <summary>Configuration section.</summary>
    public const string Section = "HotPath";

    /// <summary>
    /// The longest a call waits for one grain call on its path (admission, the key's lease refill from its account, a
    /// route fetch, an Idempotency-Key claim), far below Orleans' 30 s response timeout: a hung silo costs a call this
    /// long at most, then the call is answered 503 <c>cluster-unavailable</c>. A call whose connection to a silo drops
    /// fails at once instead (or is retried once where that is safe). Keep it above the slowest admission a healthy
    /// cluster gives (a key waits up to 80% of this for its account to recall balance leased to other keys).
    /// </summary>
    [Range(typeof(TimeSpan), "00:00:00.100", "00:00:30", ErrorMessage = "HotPath:GrainCallTimeout must be between 100 ms and 30 seconds.")]
    public TimeSpan GrainCallTimeout { get; set; } = TimeSpan.FromSeconds(5);
}
