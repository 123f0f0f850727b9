using System.ComponentModel.DataAnnotations;
using System.Net;

namespace Marketplace.Silo.Hosting;

/// <summary>Settings of the front door and admin API (section <c>Marketplace</c>).</summary>
public sealed class MarketplaceOptions
{
    /// <summary>Configuration section.</summary>
    public const string Section = "Marketplace";

    /// <summary>The admin API key (header <c>X-Admin-Key</c>). Required; at least 16 characters; never logged.</summary>
    [Required(ErrorMessage = "Marketplace:AdminKey is required (set it in appsettings or the environment variable Marketplace__AdminKey).")]
    [MinLength(16, ErrorMessage = "Marketplace:AdminKey must be at least 16 characters long.")]
    public string AdminKey { get; set; } = string.Empty;

    /// <summary>Largest request body accepted on any endpoint, in bytes.</summary>
    [Range(1024, 64 * 1024 * 1024, ErrorMessage = "Marketplace:MaxRequestBodyBytes must be between 1024 and 67108864.")]
    public long MaxRequestBodyBytes { get; set; } = 1024 * 1024;

    /// <summary>Largest total size of a request's headers, in bytes (bigger: 431 from Kestrel).</summary>
    [Range(4 * 1024, 1024 * 1024, ErrorMessage = "Marketplace:MaxRequestHeadersBytes must be between 4096 and 1048576.")]
    public int MaxRequestHeadersBytes { get; set; } = 32 * 1024;

    /// <summary>Longest request line (method, path, query), in bytes (longer: 414 from Kestrel).</summary>
    [Range(1024, 1024 * 1024, ErrorMessage = "Marketplace:MaxRequestLineBytes must be between 1024 and 1048576.")]
    public int MaxRequestLineBytes { get; set; } = 8 * 1024;

    /// <summary>How long a client may take to send its request headers (slower: the connection is closed).</summary>
    [Range(typeof(TimeSpan), "00:00:01", "00:05:00", ErrorMessage = "Marketplace:RequestHeadersTimeout must be between 1 second and 5 minutes.")]
    public TimeSpan RequestHeadersTimeout { get; set; } = TimeSpan.FromSeconds(10);

    /// <summary><c>text</c> (default) for human-readable console logs, <c>json</c> for compact JSON.</summary>
    [RegularExpression("^(text|json)$", ErrorMessage = "Marketplace:LogFormat must be 'text' or 'json'.")]
    public string LogFormat { get; set; } = "text";
}

/// <summary>What this process runs (section <c>Host</c>): the same binary is a whole marketplace, a silo or a front door.</summary>
public sealed class HostRoleOptions
{
    /// <summary>Configuration section.</summary>
    public const string Section = "Host";

    /// <summary>A silo with the front door, the admin API and the dashboard in one process (the default).</summary>
    public const string All = "all";

    /// <summary>A silo only: grains, the call pipeline for internal clients, health, metrics and the dashboard; no public API.</summary>
    public const string Silo = "silo";

    /// <summary>The HTTP front door and admin API alone, joined to the cluster as an Orleans client.</summary>
    public const string FrontDoor = "frontdoor";

    /// <summary><c>all</c> (default), <c>silo</c> or <c>frontdoor</c>.</summary>
    public string Role { get; set; } = All;

    /// <summary>True when this process hosts a silo.</summary>
    public bool RunsSilo => Normalized is All or Silo;

    /// <summary>True when this process serves the public and admin HTTP API.</summary>
    public bool RunsFrontDoor => Normalized is All or FrontDoor;

    /// <summary>The role in lower case.</summary>
    public string Normalized => (Role ?? string.Empty).Trim().ToLowerInvariant();

    /// <summary>Names the setting and the accepted values when the role is not one of them.</summary>
    public IEnumerable<string> Validate()
    {
        if (Normalized is not (All or Silo or FrontDoor))
        {
            yield return $"Host:Role must be '{All}', '{Silo}' or '{FrontDoor}' (was '{Role}').";
        }
    }
}

/// <summary>Settings of metrics (section <c>Metrics</c>).</summary>
public sealed class MetricsOptions
{
    /// <summary>Configuration section.</summary>
    public const string Section = "Metrics";

    /// <summary>
    /// Collect the marketplace's and Orleans' metrics and serve them to Prometheus at <c>/metrics</c>
    /// (admin credentials required, e.g. the admin key as a bearer token).
    /// </summary>
    public bool Enabled { get; set; } = true;
}

/// <summary>Settings of the Orleans silo (section <c>Silo</c>).</summary>
public sealed class SiloHostOptions
{
    /// <summary>Configuration section.</summary>
    public const string Section = "Silo";

    /// <summary>Silos with the same cluster id form one cluster.</summary>
    [Required, RegularExpression("^[A-Za-z0-9._-]{1,100}$", ErrorMessage = "Silo:ClusterId must be 1-100 characters of [A-Za-z0-9._-].")]
    public string ClusterId { get; set; } = "marketplace";

    /// <summary>Identifies stored grain state; keep it stable across deployments.</summary>
    [Required, RegularExpression("^[A-Za-z0-9._-]{1,100}$", ErrorMessage = "Silo:ServiceId must be 1-100 characters of [A-Za-z0-9._-].")]
    public string ServiceId { get; set; } = "marketplace";

    /// <summary>Port for silo-to-silo traffic.</summary>
    [Range(1, 65535, ErrorMessage = "Silo:SiloPort must be between 1 and 65535.")]
    public int SiloPort { get; set; } = 11111;

    /// <summary>Port Orleans clients (internal .NET services, separate front doors) connect to.</summary>
    [Range(1, 65535, ErrorMessage = "Silo:GatewayPort must be between 1 and 65535.")]
    public int GatewayPort { get; set; } = 30000;

    /// <summary>The address other silos and clients reach this silo on.</summary>
    [Required]
    public string AdvertisedAddress { get; set; } = "127.0.0.1";

    /// <summary>Serve the Orleans dashboard at <c>/dashboard</c> (admin credentials required).</summary>
    public bool Dashboard { get; set; } = true;

    /// <summary>
    /// Where the cluster records which silo runs each grain: <c>Distributed</c> (the default) or <c>Default</c>.
    /// <c>Distributed</c> is Orleans' strongly consistent directory: while silos join and leave, a grain (a key, an
    /// account) never has two activations, so no two copies admit calls against one quota or balance at once.
    /// <c>Default</c> is Orleans' own default directory, only eventually consistent during membership changes (two
    /// activations of one grain can run until it converges). Every silo of a cluster must use the same one; see
    /// <see cref="ClusterGrainDirectory"/>.
    /// </summary>
    public string GrainDirectory { get; set; } = ClusterGrainDirectory.Distributed;

    /// <summary>
    /// With the <c>Distributed</c> directory: how long after a silo stopped answering (estimated as the time it was
    /// declared dead minus the membership's failure-detection window, 8 s) no other silo may activate the grains it held,
    /// in case it still runs them (hung or cut off rather than gone). The default, 8.5 s, holds them for half a second
    /// after the declaration; 8 s or less (0 included) turns the hold off. Each second above 8 s delays recovery from a
    /// killed or hung silo by a second; Orleans' default, 30 s, delayed it by 22 s. See <see cref="ClusterGrainDirectory"/>.
    /// </summary>
    public TimeSpan GrainDirectoryLease { get; set; } = ClusterGrainDirectory.DefaultLease;

    /// <summary>Checks that cannot be expressed as attributes.</summary>
    public IEnumerable<string> Validate()
    {
        var context = new ValidationContext(this);
        var results = new List<ValidationResult>();
        Validator.TryValidateObject(this, context, results, validateAllProperties: true);
        foreach (var result in results)
        {
            yield return result.ErrorMessage ?? "Invalid Silo settings.";
        }

        if (!IPAddress.TryParse(AdvertisedAddress, out _))
        {
            yield return $"Silo:AdvertisedAddress '{AdvertisedAddress}' is not an IP address.";
        }

        if (SiloPort == GatewayPort)
        {
            yield return "Silo:SiloPort and Silo:GatewayPort must differ.";
        }

        if (!ClusterGrainDirectory.IsKnown(GrainDirectory))
        {
            yield return $"Silo:GrainDirectory must be '{ClusterGrainDirectory.Distributed}' or '{ClusterGrainDirectory.Default}' (was '{GrainDirectory}').";
        }

        if (GrainDirectoryLease < TimeSpan.Zero || GrainDirectoryLease > ClusterGrainDirectory.MaxLease)
        {
            yield return $"Silo:GrainDirectoryLease must be between 00:00:00 and {ClusterGrainDirectory.MaxLease:c} (was {GrainDirectoryLease:c}).";
        }
    }
}

/// <summary>Demo catalog loaded at start (section <c>Demo</c>), so a new user's first curl works.</summary>
public sealed class DemoOptions
{
    /// <summary>Configuration section.</summary>
    public const string Section = "Demo";

    /// <summary>Load the demo catalog.</summary>
    public bool Enabled { get; set; }

    /// <summary>Where the sample provider listens.</summary>
    public string ProviderBaseUrl { get; set; } = "http://127.0.0.1:5080";

    /// <summary>The demo consumer's API key (<c>mk_demo.&lt;secret&gt;</c>); only its hash is stored.</summary>
    public string? ApiKey { get; set; }
}
