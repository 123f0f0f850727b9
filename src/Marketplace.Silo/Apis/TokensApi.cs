using System.Text.Json;
using Marketplace.Grains;
using Marketplace.Silo.FrontDoor;

namespace Marketplace.Silo.Apis;

/// <summary>
/// Short-lived access tokens issued from an API key (<c>POST /v1/token</c>), refreshed with single-use refresh
/// tokens, and revoked one by one. Field names follow OAuth 2.0 (RFC 6749, RFC 7009); form and JSON bodies are accepted.
/// </summary>
public static class TokensApi
{
    /// <summary>Maps <c>/v1/token</c> and <c>/v1/token/revoke</c>.</summary>
    public static RouteGroupBuilder MapTokensApi(this IEndpointRouteBuilder app)
    {
        var group = app.MapGroup("/v1/token").WithTags("Tokens");
        group.MapPost("/", IssueAsync);
        group.MapPost("/revoke", RevokeAsync);
        return group;
    }

    /// <summary>
    /// <c>grant_type=client_credentials</c> with the API key (X-Api-Key, Bearer, or <c>client_secret</c>), or
    /// <c>grant_type=refresh_token</c> with <c>refresh_token</c>.
    /// </summary>
    public static async Task<IResult> IssueAsync(HttpContext context, IGrainFactory grains, TimeProvider time)
    {
        var fields = await ReadFieldsAsync(context.Request);
        if (fields is null)
        {
            return Problems.Create(StatusCodes.Status400BadRequest, "bad-request", "The body must be a form or a JSON object.");
        }

        // An empty body means client_credentials; a body that says something must say which grant it is.
        var grantType = fields.GetValueOrDefault("grant_type") ?? (fields.Count == 0 ? "client_credentials" : null);
        if (grantType is null)
        {
            return Problems.Create(StatusCodes.Status400BadRequest, "unsupported-grant-type", "grant_type is required.",
                "Use client_credentials or refresh_token.");
        }

        TokenResult result;
        switch (grantType)
        {
            case "client_credentials":
                var credential = CallApi.ReadCredential(context.Request) ?? fields.GetValueOrDefault("client_secret");
                if (!ApiKeySecrets.TryParse(credential, out var keyId, out var secret))
                {
                    return InvalidGrant(context, "Send the API key in X-Api-Key, as a bearer token, or as client_secret.");
                }

                result = await grains.GetGrain<IApiKeyGrain>(keyId).IssueTokenAsync(secret);
                break;
            case "refresh_token":
                if (!ApiKeySecrets.TryParseToken(fields.GetValueOrDefault("refresh_token"), ApiKeySecrets.RefreshTokenPrefix, out var refreshKeyId, out var proof))
                {
                    return InvalidGrant(context, "refresh_token is missing or malformed.");
                }

                result = await grains.GetGrain<IApiKeyGrain>(refreshKeyId).RefreshTokenAsync(proof);
                break;
            default:
                return Problems.Create(StatusCodes.Status400BadRequest, "unsupported-grant-type", "Unsupported grant_type.",
                    "Use client_credentials or refresh_token.");
        }

        if (result.Outcome != AdmitOutcome.Admitted || result.Tokens is not { } tokens)
        {
            return result.Outcome switch
            {
                AdmitOutcome.Revoked => Problems.Create(StatusCodes.Status403Forbidden, "key-revoked", "The API key was revoked."),
                AdmitOutcome.Suspended => Problems.Create(StatusCodes.Status403Forbidden, "key-suspended", "The API key is suspended."),
                AdmitOutcome.RateLimited => Problems.Create(StatusCodes.Status429TooManyRequests, "too-many-tokens", "The key holds too many unexpired tokens."),
                AdmitOutcome.Expired => InvalidGrant(context, "The API key has expired."),
                _ => InvalidGrant(context, "The credentials or the refresh token are not valid (a refresh token works once)."),
            };
        }

        var now = time.GetUtcNow();
        context.Response.Headers.CacheControl = "no-store";
        return TypedResults.Ok(new TokenResponse(tokens.AccessToken, "Bearer", (long)(tokens.AccessExpiresAt - now).TotalSeconds,
            tokens.RefreshToken, (long)(tokens.RefreshExpiresAt - now).TotalSeconds));
    }

    /// <summary>Revokes an access or refresh token (<c>token</c> field). Answers 200 whether or not it was valid (RFC 7009).</summary>
    public static async Task<IResult> RevokeAsync(HttpContext context, IGrainFactory grains)
    {
        var fields = await ReadFieldsAsync(context.Request);
        var token = fields?.GetValueOrDefault("token");
        if (token is null)
        {
            return Problems.Validation(new Dictionary<string, string[]> { ["token"] = ["token is required."] });
        }

        if (ApiKeySecrets.TryParseToken(token, ApiKeySecrets.AccessTokenPrefix, out var keyId, out var proof)
            || ApiKeySecrets.TryParseToken(token, ApiKeySecrets.RefreshTokenPrefix, out keyId, out proof))
        {
            await grains.GetGrain<IApiKeyGrain>(keyId).RevokeTokenAsync(proof);
        }

        return TypedResults.Ok();
    }

    private static async Task<Dictionary<string, string?>?> ReadFieldsAsync(HttpRequest request)
    {
        if (request.HasFormContentType)
        {
            try
            {
                var form = await request.ReadFormAsync(request.HttpContext.RequestAborted);
                return form.ToDictionary(f => f.Key, f => (string?)f.Value.ToString(), StringComparer.Ordinal);
            }
            catch (Exception exception) when (exception is InvalidDataException or InvalidOperationException or FormatException)
            {
                // A malformed form (bad multipart boundary, a field over the form limits, bad encoding) is the caller's error.
                return null;
            }
        }

        if (request.ContentLength is 0 || (request.ContentLength is null && request.ContentType is null))
        {
            return new Dictionary<string, string?>(StringComparer.Ordinal);
        }

        try
        {
            using var document = await JsonDocument.ParseAsync(request.Body, cancellationToken: request.HttpContext.RequestAborted);
            if (document.RootElement.ValueKind != JsonValueKind.Object)
            {
                return null;
            }

            return document.RootElement.EnumerateObject()
                .Where(p => p.Value.ValueKind == JsonValueKind.String)
                .ToDictionary(p => p.Name, p => p.Value.GetString(), StringComparer.Ordinal);
        }
        catch (JsonException)
        {
            return null;
        }
    }

    private static IResult InvalidGrant(HttpContext context, string detail) =>
        Problems.Unauthorized(context, detail, "invalid-grant", "The token request was refused.");
}
