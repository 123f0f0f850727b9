using System.Net;
using System.Net.Sockets;
using Microsoft.AspNetCore.Http.HttpResults;

namespace Marketplace.SampleProvider;

/// <summary>Response of <c>GET /ip/geo</c>; for private or loopback addresses everything except <see cref="Ip"/> is null.</summary>
public sealed record IpGeolocation(
    string Ip,
    string? Country,
    string? CountryCode,
    string? City,
    double? Latitude,
    double? Longitude,
    int? Asn,
    string? Isp);

internal static class IpGeoEndpoints
{
    public static RouteGroupBuilder MapIpGeoService(this IEndpointRouteBuilder app)
    {
        var group = app.MapGroup("/ip").WithServiceControls(ControlSwitches.Ip);
        group.MapGet("/geo", Locate);
        return group;
    }

    private static Results<Ok<IpGeolocation>, ProblemHttpResult> Locate(string? ip)
    {
        if (string.IsNullOrWhiteSpace(ip) || !IPAddress.TryParse(ip.Trim(), out var address))
        {
            return TypedResults.Problem(
                detail: "Query parameter 'ip' must be an IPv4 or IPv6 address.",
                statusCode: StatusCodes.Status400BadRequest,
                title: "Invalid IP address");
        }

        if (address.IsIPv4MappedToIPv6)
        {
            address = address.MapToIPv4();
        }

        var text = address.ToString();
        if (IsPrivate(address))
        {
            return TypedResults.Ok(new IpGeolocation(text, null, null, null, null, null, null, null));
        }

        var hash = new StableHash("ip", text);
        var country = hash.Pick(0, ReferenceData.Countries);
        var city = hash.Pick(1, country.Cities);

        return TypedResults.Ok(new IpGeolocation(
            text,
            country.Name,
            country.Code,
            city.Name,
            Jitter(city.Latitude, hash.Fraction(2)),
            Jitter(city.Longitude, hash.Fraction(3)),
            1000 + hash.Range(4, 64000),
            hash.Pick(5, ReferenceData.Isps)));
    }

    private static double Jitter(double coordinate, double fraction) =>
        Math.Round(coordinate + ((fraction - 0.5) * 0.1), 4);

    private static bool IsPrivate(IPAddress address)
    {
        if (IPAddress.IsLoopback(address) || address.Equals(IPAddress.Any) || address.Equals(IPAddress.IPv6Any))
        {
            return true;
        }

        if (address.AddressFamily == AddressFamily.InterNetworkV6)
        {
            var first = address.GetAddressBytes()[0];
            return address.IsIPv6LinkLocal || address.IsIPv6SiteLocal || (first & 0xFE) == 0xFC;
        }

        var b = address.GetAddressBytes();
        return b[0] == 10
            || b[0] == 0
            || (b[0] == 172 && b[1] >= 16 && b[1] <= 31)
            || (b[0] == 192 && b[1] == 168)
            || (b[0] == 169 && b[1] == 254)
            || (b[0] == 100 && b[1] >= 64 && b[1] <= 127);
    }
}
