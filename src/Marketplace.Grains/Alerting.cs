using System.ComponentModel.DataAnnotations;
using System.Net;
using System.Net.Sockets;
using System.Security.Cryptography;
using System.Text;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Options;

namespace Marketplace.Grains;

/// <summary>How webhook alerts are delivered (section <c>Alerts</c>).</summary>
public sealed class AlertOptions
{
    /// <summary>Configuration section these options bind to.</summary>
    public const string Section = "Alerts";

    /// <summary>How long one delivery attempt waits for the receiver's answer.</summary>
    [Range(typeof(TimeSpan), "00:00:00.100", "00:01:00", ErrorMessage = "Alerts:Timeout must be between 100 ms and 1 minute.")]
    public TimeSpan Timeout { get; set; } = TimeSpan.FromSeconds(5);

    /// <summary>
    /// Longest real time between two looks at the clock while deliveries wait for a retry. Retries are due by the
    /// <see cref="TimeProvider"/>; a shorter interval only matters where that clock is not the system's (tests).
    /// </summary>
    [Range(typeof(TimeSpan), "00:00:00.010", "00:10:00", ErrorMessage = "Alerts:ClockCheckInterval must be between 10 ms and 10 minutes.")]
    public TimeSpan ClockCheckInterval { get; set; } = TimeSpan.FromSeconds(1);

    /// <summary>
    /// Whether webhooks may go to loopback, private, link-local and other non-public addresses. Off by default, so a
    /// consumer's URL cannot reach the marketplace's own network; checked on registration and again on every connection.
    /// </summary>
    public bool AllowPrivateNetworks { get; set; }
}

/// <summary>Checks on alert registrations; the front door answers with these errors, the alert grain refuses the same input.</summary>
public static class AlertValidation
{
    /// <summary>Longest webhook URL.</summary>
    public const int MaxUrlLength = 2048;

    /// <summary>Most thresholds per alert.</summary>
    public const int MaxThresholds = 5;

    /// <summary>Errors keyed by field name; empty when valid.</summary>
    public static Dictionary<string, string[]> Check(AlertSpec spec, bool allowPrivateNetworks)
    {
        var errors = new Dictionary<string, string[]>();
        if (spec.Url is not { Length: > 0 and <= MaxUrlLength } url
            || !Uri.TryCreate(url, UriKind.Absolute, out var uri)
            || (uri.Scheme != Uri.UriSchemeHttp && uri.Scheme != Uri.UriSchemeHttps)
            || !string.IsNullOrEmpty(uri.UserInfo) || !string.IsNullOrEmpty(uri.Fragment))
        {
            errors["url"] = [$"url must be an absolute http or https URL of at most {MaxUrlLength} characters, without credentials or fragment."];
        }
        else if (!allowPrivateNetworks && !WebhookAddresses.IsPublicHost(uri))
        {
            errors["url"] = ["url must not point to localhost or a private, loopback or link-local address."];
        }

        if (spec.Events is not { Count: > 0 } events || events.Any(e => !Enum.IsDefined(e)) || events.Distinct().Count() != events.Count)
        {
            errors["events"] = ["events must name each of quota and balance at most once, and at least one of them."];
        }

        if (spec.Thresholds is not { Count: > 0 and <= MaxThresholds } thresholds || thresholds.Any(t => t is < 1 or > 100)
            || thresholds.Distinct().Count() != thresholds.Count)
        {
            errors["thresholds"] = [$"thresholds must be 1 to {MaxThresholds} distinct percentages, each from 1 to 100."];
        }

        return errors;
    }
}

/// <summary>Which addresses webhooks may go to.</summary>
public static class WebhookAddresses
{
    /// <summary>False for <c>localhost</c> and for IP literals that are not public; names are checked when they resolve.</summary>
    public static bool IsPublicHost(Uri uri) => uri.HostNameType switch
    {
        UriHostNameType.IPv4 or UriHostNameType.IPv6 => IPAddress.TryParse(uri.IdnHost, out var address) && IsPublic(address),
        _ => !uri.IsLoopback && !uri.IdnHost.Equals("localhost", StringComparison.OrdinalIgnoreCase)
            && !uri.IdnHost.EndsWith(".localhost", StringComparison.OrdinalIgnoreCase),
    };

    /// <summary>True unless the address is loopback, private, link-local, carrier-grade NAT, unspecified or multicast.</summary>
    public static bool IsPublic(IPAddress address)
    {
        if (address.IsIPv4MappedToIPv6)
        {
            address = address.MapToIPv4();
        }

        if (IPAddress.IsLoopback(address))
        {
            return false;
        }

        var bytes = address.GetAddressBytes();
        if (address.AddressFamily == AddressFamily.InterNetwork)
        {
            return !(bytes[0] is 0 or 10 or 127 or >= 224
                || (bytes[0] == 169 && bytes[1] == 254)
                || (bytes[0] == 172 && (bytes[1] & 0xF0) == 16)
                || (bytes[0] == 192 && bytes[1] == 168)
                || (bytes[0] == 100 && (bytes[1] & 0xC0) == 64));
        }

        return !(address.Equals(IPAddress.IPv6None) || address.IsIPv6LinkLocal || address.IsIPv6SiteLocal || address.IsIPv6Multicast
            || (bytes[0] & 0xFE) == 0xFC);
    }

    /// <summary>
    /// Connects only to public addresses of the host (unless private networks are allowed), checked after resolution,
    /// so a name that resolves to an internal address is refused as well.
    /// </summary>
    internal static async ValueTask<Stream> ConnectAsync(SocketsHttpConnectionContext context, bool allowPrivateNetworks, CancellationToken cancellationToken)
    {
        var host = context.DnsEndPoint.Host;
        var addresses = IPAddress.TryParse(host, out var literal) ? [literal] : await Dns.GetHostAddressesAsync(host, cancellationToken);
        var allowed = allowPrivateNetworks ? addresses : [.. addresses.Where(IsPublic)];
        if (allowed.Length == 0)
        {
            throw new HttpRequestException($"{host} has no public address; webhooks are not sent to private networks.");
        }

        var socket = new Socket(SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
        try
        {
            await socket.ConnectAsync(allowed, context.DnsEndPoint.Port, cancellationToken);
            return new NetworkStream(socket, ownsSocket: true);
        }
        catch
        {
            socket.Dispose();
            throw;
        }
    }
}

/// <summary>The <c>X-Marketplace-Signature</c> of a webhook delivery.</summary>
public static class WebhookSignature
{
    /// <summary>Header with <c>t=&lt;unix seconds&gt;,v1=&lt;hex HMAC-SHA256 of "&lt;t&gt;.&lt;body&gt;"&gt;</c>.</summary>
    public const string Header = "X-Marketplace-Signature";

    /// <summary>Header with the event (<c>quota</c> or <c>balance</c>).</summary>
    public const string EventHeader = "X-Marketplace-Event";

    /// <summary>Header with the delivery id, the same on every attempt of one delivery (for de-duplication).</summary>
    public const string DeliveryHeader = "X-Marketplace-Delivery";

    /// <summary>The header value for <paramref name="body"/> signed at <paramref name="timestamp"/> (unix seconds).</summary>
    public static string Sign(string secret, long timestamp, string body)
    {
        var t = timestamp.ToString(System.Globalization.CultureInfo.InvariantCulture);
        var mac = HMACSHA256.HashData(Encoding.UTF8.GetBytes(secret), Encoding.UTF8.GetBytes(t + "." + body));
        return $"t={t},v1={Convert.ToHexStringLower(mac)}";
    }
}

/// <summary>Registration of webhook alerts.</summary>
public static class AlertServiceCollectionExtensions
{
    /// <summary>Adds the alert options and the named HTTP client deliveries use.</summary>
    public static IServiceCollection AddMarketplaceAlerts(this IServiceCollection services)
    {
        services.AddOptions<AlertOptions>()
            .BindConfiguration(AlertOptions.Section)
            .ValidateDataAnnotations()
            .ValidateOnStart();
        services.AddHttpClient(AlertGrain.HttpClientName, client =>
            {
                // Each attempt has its own timeout (AlertOptions.Timeout).
                client.Timeout = Timeout.InfiniteTimeSpan;
                client.DefaultRequestHeaders.UserAgent.ParseAdd("Marketplace-Webhooks/1.0");
            })
            .ConfigurePrimaryHttpMessageHandler(provider =>
            {
                var allowPrivate = provider.GetRequiredService<IOptions<AlertOptions>>().Value.AllowPrivateNetworks;
                return new SocketsHttpHandler
                {
                    PooledConnectionLifetime = TimeSpan.FromMinutes(2),
                    AllowAutoRedirect = false,
                    UseCookies = false,
                    ConnectTimeout = TimeSpan.FromSeconds(5),
                    ConnectCallback = (context, cancellationToken) => WebhookAddresses.ConnectAsync(context, allowPrivate, cancellationToken),
                };
            })
            .RemoveAllLoggers();
        return services;
    }
}
