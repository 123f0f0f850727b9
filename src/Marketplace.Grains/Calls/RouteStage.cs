namespace Marketplace.Grains;

/// <summary>
/// Stage 1, route: the service (from the route cache) and whether it takes calls, the request's form (Idempotency-Key,
/// credential), and the service's upstream rate limit on this node. No grain call, nothing reserved.
/// </summary>
internal sealed class RouteStage(ServiceRouteCache routes, UpstreamLimiter upstreamLimiter)
{
    /// <summary>A refusal, or null with the route and the credential in <paramref name="trace"/>.</summary>
    public async ValueTask<CallResult?> RunAsync(CallRequest request, CallTrace trace)
    {
        if (!Ids.IsValid(request.ServiceId))
        {
            return trace.Refused(CallOutcome.UnknownService);
        }

        trace.ServiceId = request.ServiceId;
        var compiled = await routes.GetAsync(request.ServiceId);
        if (compiled is null || compiled.Route.Status is ServiceStatus.Draft or ServiceStatus.Retired)
        {
            return trace.Refused(CallOutcome.UnknownService);
        }

        var route = compiled.Route;
        trace.Compiled = compiled;
        trace.Route = route;
        if (route.Status == ServiceStatus.Suspended)
        {
            return trace.Refused(CallOutcome.ServiceSuspended) with { RetryAfterSeconds = 60 };
        }

        if (request.IdempotencyKey is not null && !IdempotencyOptions.IsWellFormed(request.IdempotencyKey))
        {
            return trace.Refused(CallOutcome.BadRequest) with
            {
                Detail = "The Idempotency-Key must be 1 to 128 characters of letters, digits, '-', '_', '.' or ':'.",
            };
        }

        if (!ApiKeySecrets.TryParseCredential(request.Credential, out var keyId, out var kind, out var proof))
        {
            return trace.Refused(CallOutcome.Rejected, AdmitOutcome.InvalidCredentials);
        }

        (trace.KeyId, trace.Kind, trace.Proof) = (keyId, kind, proof);
        if (!upstreamLimiter.TryAcquire(route, out var upstreamLimit))
        {
            return trace.Refused(CallOutcome.UpstreamRateLimited) with { Limit = upstreamLimit };
        }

        return null;
    }
}
