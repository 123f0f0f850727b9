using Marketplace.Grains;
using Marketplace.Silo.FrontDoor;
using Microsoft.AspNetCore.Http.HttpResults;

namespace Marketplace.Silo.Apis;

/// <summary>
/// Managing data services: the admin API (<c>/admin/services</c>, any service) and the provider API
/// (<c>/provider/services</c>, the authenticated provider's own services only) share these handlers; the only
/// difference is the acting provider, null for an admin. A provider never learns whether another provider's service exists.
/// </summary>
public static class ServicesApi
{
    /// <summary>Default upstream timeout when a service does not set one.</summary>
    public const int DefaultTimeoutMs = 10_000;

    /// <summary>Maps <c>/admin/services</c>.</summary>
    public static RouteGroupBuilder MapServicesApi(this RouteGroupBuilder admin)
    {
        var group = admin.MapGroup("/services").WithTags("Services");
        MapManagement(group, _ => null);
        return group;
    }

    /// <summary>Maps <c>/provider/services</c> behind provider authentication.</summary>
    public static RouteGroupBuilder MapProviderServicesApi(this IEndpointRouteBuilder app)
    {
        var group = app.MapGroup("/provider/services").WithTags("Provider").AddEndpointFilter<ProviderAuthentication>();
        MapManagement(group, ProviderAuthentication.ProviderId);
        return group;
    }

    private static void MapManagement(RouteGroupBuilder group, Func<HttpContext, string?> acting)
    {
        group.MapPost("/", (UpsertServiceRequest request, IGrainFactory grains, ServiceRouteCache routes, AuditLog audit, HttpContext context) =>
            UpsertAsync(request.Id ?? string.Empty, request, acting(context), grains, routes, audit, context));
        group.MapPut("/{id}", (string id, UpsertServiceRequest request, IGrainFactory grains, ServiceRouteCache routes, AuditLog audit, HttpContext context) =>
            UpsertAsync(id, request, acting(context), grains, routes, audit, context));
        group.MapGet("/", (string? search, string? category, string? providerId, ServiceStatus? status, int? page, int? pageSize, IGrainFactory grains, HttpContext context) =>
            SearchAsync(grains, new CatalogQuery(search, category, acting(context) ?? providerId, status is { } s ? [s] : null, page ?? 1, pageSize ?? 20)));
        group.MapGet("/{id}", (string id, IGrainFactory grains, HttpContext context) => GetAsync(id, acting(context), grains));
        group.MapPut("/{id}/versions/{version}", (string id, string version, UpsertVersionRequest request, IGrainFactory grains, ServiceRouteCache routes, AuditLog audit, HttpContext context) =>
            UpsertVersionAsync(id, version, request, acting(context), grains, routes, audit, context));
        group.MapDelete("/{id}/versions/{version}", (string id, string version, IGrainFactory grains, ServiceRouteCache routes, AuditLog audit, HttpContext context) =>
            ChangeAsync(id, acting(context), routes, audit, context, "service.version.delete", version,
                service => service.DeleteVersionAsync(version, acting(context)), grains));
        group.MapPut("/{id}/release", (string id, SetReleaseRequest request, IGrainFactory grains, ServiceRouteCache routes, AuditLog audit, HttpContext context) =>
            ChangeAsync(id, acting(context), routes, audit, context, "service.release", request,
                service => service.SetReleaseAsync(new ReleaseSpec(request.Weights ?? [], request.Pins), acting(context)), grains));
        group.MapPost("/{id}/rollback", (string id, IGrainFactory grains, ServiceRouteCache routes, AuditLog audit, HttpContext context) =>
            ChangeAsync(id, acting(context), routes, audit, context, "service.rollback", null,
                service => service.RollbackAsync(acting(context)), grains));
        group.MapPost("/{id}/status", (string id, SetStatusRequest request, IGrainFactory grains, ServiceRouteCache routes, AuditLog audit, HttpContext context) =>
            request.Status is { } status
                ? ChangeAsync(id, acting(context), routes, audit, context, "service.status", request, service => service.SetStatusAsync(status, acting(context)), grains)
                : Task.FromResult<Results<Ok<DataServiceInfo>, ValidationProblem, ProblemHttpResult>>(
                    Problems.Validation(new Dictionary<string, string[]> { ["status"] = ["status is required: draft, published, suspended or retired."] })));
    }

    /// <summary>A page of services (all statuses unless one is asked for), sorted by name.</summary>
    public static async Task<Ok<CatalogPage>> SearchAsync(IGrainFactory grains, CatalogQuery query) =>
        TypedResults.Ok(await grains.GetGrain<ICatalogGrain>(ICatalogGrain.Default).SearchAsync(query));

    /// <summary>A data service with its versions, release and counters.</summary>
    public static async Task<Results<Ok<DataServiceInfo>, ProblemHttpResult>> GetAsync(string id, string? actingProviderId, IGrainFactory grains) =>
        Ids.IsValid(id) && await grains.GetGrain<IDataServiceGrain>(id).GetAsAsync(actingProviderId) is { } info
            ? TypedResults.Ok(info)
            : Problems.NotFound("data service", id);

    private static async Task<Results<Created<DataServiceInfo>, ValidationProblem, ProblemHttpResult>> UpsertAsync(
        string id, UpsertServiceRequest request, string? actingProviderId, IGrainFactory grains, ServiceRouteCache routes, AuditLog audit, HttpContext context)
    {
        var providerId = actingProviderId ?? request.ProviderId ?? string.Empty;
        var spec = new DataServiceSpec(
            request.Name ?? string.Empty, providerId, request.UpstreamBaseUrl ?? string.Empty,
            request.PricePerCall ?? -1, request.Currency ?? string.Empty, request.Description, request.TimeoutMs ?? DefaultTimeoutMs,
            request.UpstreamRateLimit, request.Category, request.ChargeRule ?? ChargeRule.PerSuccess, request.Status, request.Parameters, request.ResponseFields);
        var errors = Validation.Check(id, spec);
        if (request.PricePerCall is null)
        {
            errors["pricePerCall"] = ["pricePerCall is required."];
        }

        if (request.Id is not null && request.Id != id)
        {
            errors["id"] = ["id in the body must match the id in the path."];
        }

        if (actingProviderId is not null && request.ProviderId is not null && request.ProviderId != actingProviderId)
        {
            errors["providerId"] = ["A provider publishes services under its own id; omit providerId."];
        }

        if (errors.Count > 0)
        {
            return Problems.Validation(errors);
        }

        if (await grains.GetGrain<IProviderGrain>(spec.ProviderId).GetAsync() is null)
        {
            return Problems.NotFound("provider", spec.ProviderId);
        }

        var service = grains.GetGrain<IDataServiceGrain>(id);
        if (actingProviderId is not null && await service.GetAsync() is { } existing && existing.ProviderId != actingProviderId)
        {
            return Problems.Create(StatusCodes.Status409Conflict, "id-taken", "A data service with this id exists.", "Choose another id.");
        }

        var info = await service.UpsertAsync(spec);
        routes.Invalidate(id);
        await audit.RecordAsync(context, "service.upsert", "service", id, spec);
        return TypedResults.Created($"/admin/services/{id}", info);
    }

    private static Task<Results<Ok<DataServiceInfo>, ValidationProblem, ProblemHttpResult>> UpsertVersionAsync(
        string id, string version, UpsertVersionRequest request, string? actingProviderId, IGrainFactory grains, ServiceRouteCache routes, AuditLog audit, HttpContext context)
    {
        var spec = new ServiceVersionSpec(
            request.BaseUrl ?? string.Empty, request.TimeoutMs ?? DefaultTimeoutMs, request.Method?.ToUpperInvariant(), request.PathTemplate, request.ParameterMap,
            request.Headers, request.SecretHeaders, request.ResponseFields, request.Hit, request.Protection);
        var errors = Validation.Check(version, spec);
        if (errors.Count > 0)
        {
            return Task.FromResult<Results<Ok<DataServiceInfo>, ValidationProblem, ProblemHttpResult>>(Problems.Validation(errors));
        }

        // The audit keeps which secret headers changed, never their values.
        var audited = spec with { SecretHeaders = spec.SecretHeaders?.ToDictionary(h => h.Key, _ => DataServiceGrain.Hidden) };
        return ChangeAsync(id, actingProviderId, routes, audit, context, "service.version", new { version, spec = audited },
            service => service.UpsertVersionAsync(version, spec, actingProviderId), grains);
    }

    private static async Task<Results<Ok<DataServiceInfo>, ValidationProblem, ProblemHttpResult>> ChangeAsync(
        string id, string? actingProviderId, ServiceRouteCache routes, AuditLog audit, HttpContext context, string action, object? details,
        Func<IDataServiceGrain, Task<DataServiceInfo>> change, IGrainFactory grains)
    {
        if (!Ids.IsValid(id))
        {
            return Problems.NotFound("data service", id);
        }

        // The grain checks existence and ownership itself (KeyNotFoundException, below): one grain call per change.
        DataServiceInfo info;
        try
        {
            info = await change(grains.GetGrain<IDataServiceGrain>(id));
        }
        catch (ArgumentException exception)
        {
            return Problems.Create(StatusCodes.Status400BadRequest, "validation", "The request is invalid.", exception.Message);
        }
        catch (KeyNotFoundException exception)
        {
            return Problems.Create(StatusCodes.Status404NotFound, "not-found", "Not found.", exception.Message);
        }
        catch (InvalidOperationException exception)
        {
            return Problems.Create(StatusCodes.Status409Conflict, "conflict", "The request conflicts with the service's state.", exception.Message);
        }

        routes.Invalidate(id);
        await audit.RecordAsync(context, action, "service", id, details);
        return TypedResults.Ok(info);
    }
}
