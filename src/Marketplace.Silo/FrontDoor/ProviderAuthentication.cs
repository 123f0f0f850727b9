using Marketplace.Grains;
using Microsoft.Net.Http.Headers;

namespace Marketplace.Silo.FrontDoor;

/// <summary>
/// Authenticates a provider by its key (<c>mp_&lt;providerId&gt;.&lt;secret&gt;</c>) in <c>X-Provider-Key</c> or as a bearer
/// token, and puts the provider id on the request for the handlers; everything a provider does is limited to it.
/// </summary>
public sealed class ProviderAuthentication(IGrainFactory grains) : IEndpointFilter
{
    /// <summary>Header that carries the provider key.</summary>
    public const string Header = "X-Provider-Key";

    private const string ItemKey = "mk.providerId";

    /// <summary>The authenticated provider of the request.</summary>
    public static string ProviderId(HttpContext context) =>
        TryGetProviderId(context) ?? throw new InvalidOperationException("The request was not authenticated as a provider.");

    /// <summary>The authenticated provider of the request, or null when it was not made with a provider key.</summary>
    public static string? TryGetProviderId(HttpContext context) => context.Items[ItemKey] as string;

    /// <inheritdoc />
    public async ValueTask<object?> InvokeAsync(EndpointFilterInvocationContext context, EndpointFilterDelegate next)
    {
        var request = context.HttpContext.Request;
        var presented = request.Headers[Header].ToString();
        if (presented.Length == 0 && request.Headers[HeaderNames.Authorization].ToString() is { } authorization
            && authorization.StartsWith("Bearer ", StringComparison.OrdinalIgnoreCase))
        {
            presented = authorization["Bearer ".Length..].Trim();
        }

        if (ProviderKeys.TryParse(presented, out var providerId, out var secret)
            && await grains.GetGrain<IProviderGrain>(providerId).AuthenticateAsync(secret))
        {
            context.HttpContext.Items[ItemKey] = providerId;
            return await next(context);
        }

        return Problems.Unauthorized(context.HttpContext, $"Send a provider key (mp_...) in the {Header} header or as a bearer token.",
            "provider-unauthorized", "A valid provider key is required.");
    }
}
