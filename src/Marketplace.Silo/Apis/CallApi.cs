using System.Globalization;
using Marketplace.Grains;
using Marketplace.Silo.FrontDoor;
using Microsoft.AspNetCore.Http.HttpResults;
using Microsoft.Net.Http.Headers;

namespace Marketplace.Silo.Apis;

/// <summary>The consumer API: calling data services and reading one's own usage.</summary>
public static class CallApi
{
    /// <summary>Header that carries the API key (alternatively <c>Authorization: Bearer</c>).</summary>
    public const string ApiKeyHeader = "X-Api-Key";

    /// <summary>Header that makes a call idempotent: a retry with the same value gets the first answer and no second charge.</summary>
    public const string IdempotencyKeyHeader = "Idempotency-Key";

    /// <summary>Response header with the call's own id (its journal row: <c>/admin/calls/id/{callId}</c>).</summary>
    public const string CallIdHeader = "X-Call-Id";

    private static readonly string[] CallMethods = ["GET", "POST", "PUT", "PATCH", "DELETE"];

    /// <summary>Maps <c>/v1/call/{serviceId}/...</c> and <c>/v1/usage</c>.</summary>
    public static RouteGroupBuilder MapCallApi(this IEndpointRouteBuilder app)
    {
        var group = app.MapGroup("/v1").WithTags("Consumer");
        group.MapMethods("/call/{serviceId}/{**path}", CallMethods, CallService);
        group.MapGet("/usage", GetUsage);
        group.MapGet("/services", ListServices);
        group.MapGet("/services/{id}", GetService);
        return group;
    }

    /// <summary>Calls a data service through the whole pipeline.</summary>
    public static async Task<IResult> CallService(string serviceId, HttpContext context, CallPipeline pipeline, CallerConnections connections)
    {
        var credential = ReadCredential(context.Request);
        if (credential is null)
        {
            return Unauthorized(context, "No API key was sent. Send it in the X-Api-Key header or as a bearer token.");
        }

        // The raw path keeps the caller's escaping; the pipeline re-validates every segment.
        var prefix = $"/v1/call/{serviceId}";
        var path = context.Request.Path.Value is { } full && full.Length > prefix.Length ? full[prefix.Length..] : string.Empty;
        var body = await ReadBodyAsync(context.Request, context.RequestAborted);
        var idempotencyKey = context.Request.Headers[IdempotencyKeyHeader] is { Count: > 0 } values ? values.ToString() : null;
        if (idempotencyKey is not null && !IdempotencyOptions.IsWellFormed(idempotencyKey))
        {
            return Problems.Create(StatusCodes.Status400BadRequest, "bad-idempotency-key", "The Idempotency-Key header is not valid.",
                "Send 1 to 128 characters of letters, digits, '-', '_', '.' or ':' (a UUID works).");
        }

        var request = new CallRequest(serviceId, credential, context.Request.Method, path, context.Request.QueryString.Value ?? string.Empty,
            context.Request.ContentType, body, context.GetTrackId(), idempotencyKey);
        var result = await pipeline.CallAsync(request, connections.For(context), context.RequestAborted);

        // A pass-through answer went to the caller as it arrived (or its connection was aborted when the answer broke off).
        return result.Forwarded ? Results.Empty : ToHttp(context, result);
    }

    /// <summary>A consumer's own balance and call counts, for the key it presents.</summary>
    public static async Task<Results<Ok<UsageResponse>, ProblemHttpResult>> GetUsage(HttpContext context, IGrainFactory grains)
    {
        if (await AuthenticateKeyAsync(context, grains) is not { } key)
        {
            return Unauthorized(context, "Send a valid API key in the X-Api-Key header or as a bearer token.");
        }

        var account = await grains.GetGrain<IAccountGrain>(key.AccountId).GetAsync();
        return account is null ? Problems.NotFound("account", key.AccountId) : TypedResults.Ok(new UsageResponse(account, key));
    }

    /// <summary>The catalog: published data services, searchable by name and category, paged.</summary>
    public static async Task<Results<Ok<CatalogPage>, ValidationProblem>> ListServices(string? search, string? category, int? page, int? pageSize, IGrainFactory grains)
    {
        if (page is < 1 or > 100_000 || pageSize is < 1 or > CatalogGrain.MaxPageSize || search is { Length: > 200 } || category is { Length: > 64 })
        {
            return Problems.Validation(new Dictionary<string, string[]>
            {
                ["query"] = [$"page starts at 1; pageSize is 1 to {CatalogGrain.MaxPageSize}; search at most 200 and category at most 64 characters."],
            });
        }

        var query = new CatalogQuery(search, category, null, [ServiceStatus.Published], page ?? 1, pageSize ?? 20);
        return TypedResults.Ok(await grains.GetGrain<ICatalogGrain>(ICatalogGrain.Default).SearchAsync(query));
    }

    /// <summary>One published data service of the catalog.</summary>
    public static async Task<Results<Ok<CatalogEntry>, ProblemHttpResult>> GetService(string id, IGrainFactory grains) =>
        Ids.IsValid(id) && await grains.GetGrain<IDataServiceGrain>(id).GetAsync() is { Status: ServiceStatus.Published } info
            ? TypedResults.Ok(new CatalogEntry(info.Id, info.Name, info.ProviderId, info.Category, info.Description, info.PricePerCall, info.Currency,
                info.ChargeRule, info.Status, info.Parameters, info.ResponseFields))
            : Problems.NotFound("data service", id);

    /// <summary>The API key or access token from X-Api-Key or a bearer Authorization header.</summary>
    public static string? ReadCredential(HttpRequest request)
    {
        var header = request.Headers[ApiKeyHeader].ToString();
        if (header.Length > 0)
        {
            return header.Trim();
        }

        var authorization = request.Headers[HeaderNames.Authorization].ToString();
        return authorization.StartsWith("Bearer ", StringComparison.OrdinalIgnoreCase) ? authorization["Bearer ".Length..].Trim() : null;
    }

    private static async Task<byte[]?> ReadBodyAsync(HttpRequest request, CancellationToken cancellationToken)
    {
        if (request.ContentLength == 0 || (request.ContentLength is null && !request.Headers.ContainsKey(HeaderNames.TransferEncoding)))
        {
            return null;
        }

        using var buffer = new MemoryStream();
        await request.Body.CopyToAsync(buffer, cancellationToken);
        return buffer.Length == 0 ? null : buffer.ToArray();
    }

    private static IResult ToHttp(HttpContext context, CallResult result)
    {
        WriteCallHeaders(context.Response.Headers, result);
        if (result.Outcome == CallOutcome.Succeeded || (result.Outcome == CallOutcome.UpstreamRejected && result.Body is not null))
        {
            context.Response.StatusCode = result.UpstreamStatus;
            return TypedResults.Bytes(result.Body ?? [], result.ContentType);
        }

        return Problem(context, result);
    }

    /// <summary>The call's own headers: its id, limits, price, version, and for the upstream's own answer the charge and balance.</summary>
    public static void WriteCallHeaders(IHeaderDictionary headers, CallResult result)
    {
        if (result.CallId != Guid.Empty)
        {
            headers[CallIdHeader] = result.CallId.ToString();
        }

        if (result.Limit is { } limit)
        {
            WriteRateLimitHeaders(headers, limit, refused: result.Outcome is CallOutcome.Rejected or CallOutcome.UpstreamRateLimited);
        }

        if (result.Currency is not null)
        {
            headers["X-Price"] = result.Price.ToString(CultureInfo.InvariantCulture);
            headers["X-Currency"] = result.Currency;
        }

        if (result.Version is not null)
        {
            headers["X-Service-Version"] = result.Version;
            headers["X-Charged"] = result.Charged.ToString(CultureInfo.InvariantCulture);
        }

        if (result.Replayed)
        {
            headers["Idempotent-Replayed"] = "true";
        }

        if (result.RetryAfterSeconds is { } retryAfter)
        {
            headers.RetryAfter = retryAfter.ToString(CultureInfo.InvariantCulture);
        }

        // The upstream's own answer (2xx, or a 4xx it explained): what it cost and what the account has left.
        if (result.Outcome == CallOutcome.Succeeded || (result.Outcome == CallOutcome.UpstreamRejected && (result.Body is not null || result.Forwarded)))
        {
            headers["X-Charged"] = result.Charged.ToString(CultureInfo.InvariantCulture);
            headers["X-Balance-Available"] = result.Available.ToString(CultureInfo.InvariantCulture);
        }
    }

    private static IResult Problem(HttpContext context, CallResult result)
    {
        switch (result.Outcome)
        {
            case CallOutcome.UpstreamRejected:
            case CallOutcome.BadRequest:
                return Problems.Create(StatusCodes.Status400BadRequest, "bad-call", "The call's path or parameters do not fit this data service.",
                    result.Detail + " You were not charged.");
            case CallOutcome.UpstreamUnavailable:
                return Problems.Create(StatusCodes.Status503ServiceUnavailable, "upstream-unavailable", "The data service cannot take this call now.",
                    result.Detail + " You were not charged; retry after the Retry-After seconds.");
            case CallOutcome.IdempotencyConflict:
                return Problems.Create(StatusCodes.Status409Conflict, "idempotency-conflict", "The Idempotency-Key cannot be used for this request now.",
                    result.Detail + " You were not charged for this request.");
            case CallOutcome.ServiceSuspended:
                return Problems.Create(StatusCodes.Status503ServiceUnavailable, "service-suspended", "The data service is suspended.",
                    "Its provider or an admin suspended it; you were not charged.");
            case CallOutcome.UpstreamFailed:
            case CallOutcome.UpstreamUnreachable:
                return Problems.Create(StatusCodes.Status502BadGateway, "upstream-error", "The data service failed.", result.Detail + Charged(result));
            case CallOutcome.UpstreamTimeout:
                return Problems.Create(StatusCodes.Status504GatewayTimeout, "upstream-timeout", "The data service did not answer in time.", result.Detail + Charged(result));
            case CallOutcome.UpstreamRateLimited:
                return Problems.Create(StatusCodes.Status429TooManyRequests, "service-rate-limited", "The data service is taking no more calls right now.",
                    "The service's limit towards its provider is reached; retry after the Retry-After seconds.");
            case CallOutcome.ClusterUnavailable:
                return Problems.Create(StatusCodes.Status503ServiceUnavailable, "cluster-unavailable", "A marketplace node needed by the call is unavailable.",
                    result.Detail + Charged(result));
            case CallOutcome.InternalError:
                return Problems.Create(StatusCodes.Status500InternalServerError, "internal", "An unexpected error occurred.", result.Detail + Charged(result));
            case CallOutcome.UnknownService:
                return Problems.Create(StatusCodes.Status404NotFound, "unknown-service", "No such data service.", "Check the service id against GET /v1/services.");
            default:
                return Rejection(context, result);
        }
    }

    // A service charged per call charges failures too (its rule says so); the answer says which.
    private static string Charged(CallResult result) => result.Charged > 0
        ? $" This data service charges every call: you were charged {result.Charged.ToString(CultureInfo.InvariantCulture)}."
        : " You were not charged.";

    private static ProblemHttpResult Rejection(HttpContext context, CallResult result) => result.Rejection switch
    {
        AdmitOutcome.InvalidCredentials => Unauthorized(context, "The API key is not valid."),
        AdmitOutcome.Expired => Unauthorized(context, "The API key has expired."),
        AdmitOutcome.Revoked => Problems.Create(StatusCodes.Status403Forbidden, "key-revoked", "The API key was revoked."),
        AdmitOutcome.Suspended => Problems.Create(StatusCodes.Status403Forbidden, "key-suspended", "The API key is suspended."),
        AdmitOutcome.NotEntitled => Problems.Create(StatusCodes.Status403Forbidden, "not-entitled", "The API key may not call this data service."),
        AdmitOutcome.InsufficientBalance => Problems.Create(StatusCodes.Status402PaymentRequired, "insufficient-balance", "The account balance does not cover the price.",
            "Top up the account and try again.",
            new Dictionary<string, object?> { ["price"] = result.Price, ["available"] = result.Available, ["currency"] = result.Currency }),
        AdmitOutcome.TokenInvalid => Unauthorized(context, "The access token is not valid: expired, revoked or unknown."),
        AdmitOutcome.RateLimited => Problems.Create(StatusCodes.Status429TooManyRequests, "rate-limited", "Too many calls: the key's rate limit is reached.",
            $"Retry after {result.Limit?.ResetSeconds ?? 1} s.", LimitExtensions(result.Limit)),
        AdmitOutcome.QuotaExhausted => Problems.Create(StatusCodes.Status403Forbidden, "quota-exhausted", "The key's call quota for this period is used up.",
            $"The {result.Limit?.Policy} quota resets in {result.Limit?.ResetSeconds} s.", LimitExtensions(result.Limit)),
        AdmitOutcome.AccountCapReached => Problems.Create(StatusCodes.Status403Forbidden, "account-cap-reached", "The account's monthly call cap is reached."),
        AdmitOutcome.CurrencyMismatch => Problems.Create(StatusCodes.Status409Conflict, "currency-mismatch", "The data service is priced in another currency than the account.",
            $"The service is priced in {result.Currency}."),
        _ => Problems.Create(StatusCodes.Status403Forbidden, "refused", "The call was refused."),
    };

    /// <summary>
    /// IETF RateLimit headers (draft-ietf-httpapi-ratelimit-headers): the policy closest to running out, what is left of it,
    /// and, on a refusal, Retry-After.
    /// </summary>
    private static void WriteRateLimitHeaders(IHeaderDictionary headers, LimitStatus limit, bool refused)
    {
        headers["RateLimit-Policy"] = $"\"{limit.Policy}\";q={limit.Limit};w={limit.WindowSeconds}";
        headers["RateLimit"] = $"\"{limit.Policy}\";r={limit.Remaining};t={limit.ResetSeconds}";
        if (refused)
        {
            headers.RetryAfter = limit.ResetSeconds.ToString(CultureInfo.InvariantCulture);
        }
    }

    private static Dictionary<string, object?>? LimitExtensions(LimitStatus? limit) => limit is null
        ? null
        : new Dictionary<string, object?> { ["policy"] = limit.Policy, ["limit"] = limit.Limit, ["retryAfterSeconds"] = limit.ResetSeconds };

    private static ProblemHttpResult Unauthorized(HttpContext context, string detail) => Problems.Unauthorized(context, detail);

    /// <summary>The key presented with the request (its secret, not a token), when it authenticates.</summary>
    public static async Task<ApiKeyInfo?> AuthenticateKeyAsync(HttpContext context, IGrainFactory grains) =>
        ReadCredential(context.Request) is { } credential && ApiKeySecrets.TryParse(credential, out var keyId, out var secret)
            ? await grains.GetGrain<IApiKeyGrain>(keyId).AuthenticateAsync(secret)
            : null;
}
