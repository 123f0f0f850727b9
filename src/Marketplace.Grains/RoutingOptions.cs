using System.ComponentModel.DataAnnotations;

namespace Marketplace.Grains;

/// <summary>How each process caches the routes of data services (section <c>Routing</c>).</summary>
public sealed class RoutingOptions
{
    /// <summary>Configuration section.</summary>
    public const string Section = "Routing";

    /// <summary>
    /// How long a cached route is used before it must be fetched again: a change (a release, a suspension) made on any
    /// node is in force everywhere within this while the service's grain answers. A busy route is refetched in the
    /// background after half of it, so calls do not wait.
    /// </summary>
    [Range(typeof(TimeSpan), "00:00:00.100", "00:01:00", ErrorMessage = "Routing:MaxAge must be between 100 ms and 1 minute.")]
    public TimeSpan MaxAge { get; set; } = TimeSpan.FromSeconds(1);

    /// <summary>
    /// How long the last known route keeps serving while its service's grain cannot be reached (its silo hung or died):
    /// calls go on with it, and one shared refetch per service is retried in the background. A route older than this
    /// is refused with 503 and Retry-After.
    /// </summary>
    [Range(typeof(TimeSpan), "00:00:01", "1.00:00:00", ErrorMessage = "Routing:MaxStaleness must be between 1 second and 1 day.")]
    public TimeSpan MaxStaleness { get; set; } = TimeSpan.FromMinutes(5);

    /// <summary>
    /// How long a call waits for the refetch of a route older than <see cref="MaxAge"/> before it goes on with the route
    /// it has. A grain that answers at all answers well within this.
    /// </summary>
    [Range(typeof(TimeSpan), "00:00:00.010", "00:00:05", ErrorMessage = "Routing:RefetchPatience must be between 10 ms and 5 seconds.")]
    public TimeSpan RefetchPatience { get; set; } = TimeSpan.FromMilliseconds(250);
}
