using System.Security.Cryptography;
using System.Text;
using Marketplace.Silo.Hosting;
using Microsoft.Extensions.Options;
using Microsoft.Net.Http.Headers;

namespace Marketplace.Silo.FrontDoor;

/// <summary>
/// Admin authentication for the admin API and the dashboard: the admin key in <c>X-Admin-Key</c>,
/// as a bearer token, or as the password of HTTP Basic (so a browser can open the dashboard).
/// Compared as SHA-256 digests in constant time.
/// </summary>
public sealed class AdminAuthentication(IOptions<MarketplaceOptions> options) : IEndpointFilter
{
    /// <summary>Header that carries the admin key.</summary>
    public const string Header = "X-Admin-Key";

    private readonly byte[] _expected = SHA256.HashData(Encoding.UTF8.GetBytes(options.Value.AdminKey));

    /// <summary>True when the request carries the admin key.</summary>
    public bool IsAdmin(HttpRequest request)
    {
        var presented = request.Headers[Header].ToString();
        if (presented.Length == 0)
        {
            var authorization = request.Headers[HeaderNames.Authorization].ToString();
            if (authorization.StartsWith("Bearer ", StringComparison.OrdinalIgnoreCase))
            {
                presented = authorization["Bearer ".Length..].Trim();
            }
            else if (authorization.StartsWith("Basic ", StringComparison.OrdinalIgnoreCase))
            {
                presented = BasicPassword(authorization["Basic ".Length..].Trim());
            }
        }

        return presented.Length is > 0 and <= 1024
            && CryptographicOperations.FixedTimeEquals(SHA256.HashData(Encoding.UTF8.GetBytes(presented)), _expected);
    }

    /// <inheritdoc />
    public async ValueTask<object?> InvokeAsync(EndpointFilterInvocationContext context, EndpointFilterDelegate next)
    {
        if (IsAdmin(context.HttpContext.Request))
        {
            return await next(context);
        }

        context.HttpContext.Response.Headers.WWWAuthenticate = "Basic realm=\"marketplace-admin\", charset=\"UTF-8\"";
        return Problems.Create(StatusCodes.Status401Unauthorized, "admin-unauthorized", "Admin credentials are required.",
            $"Send the admin key in the {Header} header.");
    }

    private static string BasicPassword(string encoded)
    {
        try
        {
            var decoded = Encoding.UTF8.GetString(Convert.FromBase64String(encoded));
            var colon = decoded.IndexOf(':');
            return colon < 0 ? string.Empty : decoded[(colon + 1)..];
        }
        catch (FormatException)
        {
            return string.Empty;
        }
    }
}
