using Marketplace.Grains;
using Marketplace.Silo.FrontDoor;
using Microsoft.AspNetCore.Http.HttpResults;

namespace Marketplace.Silo.Apis;

/// <summary>Admin API for data services.</summary>
public static class ServicesApi
{
    /// <summary>Default upstream timeout when a service does not set one.</summary>
    public const int DefaultTimeoutMs = 10_000;

    /// <summary>Maps <c>/admin/services</c>.</summary>
    public static RouteGroupBuilder MapServicesApi(this RouteGroupBuilder admin)
    {
        var group = admin.MapGroup("/services").WithTags("Services");
        group.MapPost("/", CreateService);
        group.MapPut("/{id}", UpdateService);
        group.MapGet("/", ListServices);
        group.MapGet("/{id}", GetService);
        return group;
    }

    /// <summary>Publishes a data service (or changes it when it exists).</summary>
    public static Task<Results<Created<DataServiceInfo>, ValidationProblem, ProblemHttpResult>> CreateService(
        UpsertServiceRequest request, IGrainFactory grains, ServiceRouteCache routes, AuditLog audit, HttpContext context) =>
        UpsertAsync(request.Id ?? string.Empty, request, grains, routes, audit, context);

    /// <summary>Changes a data service.</summary>
    public static Task<Results<Created<DataServiceInfo>, ValidationProblem, ProblemHttpResult>> UpdateService(
        string id, UpsertServiceRequest request, IGrainFactory grains, ServiceRouteCache routes, AuditLog audit, HttpContext context) =>
        UpsertAsync(id, request, grains, routes, audit, context);

    /// <summary>Lists data service ids.</summary>
    public static async Task<Ok<IReadOnlyList<string>>> ListServices(IGrainFactory grains) =>
        TypedResults.Ok(await grains.GetGrain<IRegistryGrain>(IRegistryGrain.Default).ListAsync(EntityKind.Service));

    /// <summary>Reads a data service with its counters.</summary>
    public static async Task<Results<Ok<DataServiceInfo>, ProblemHttpResult>> GetService(string id, IGrainFactory grains) =>
        Ids.IsValid(id) && await grains.GetGrain<IDataServiceGrain>(id).GetAsync() is { } info
            ? TypedResults.Ok(info)
            : Problems.NotFound("data service", id);

    private static async Task<Results<Created<DataServiceInfo>, ValidationProblem, ProblemHttpResult>> UpsertAsync(
        string id, UpsertServiceRequest request, IGrainFactory grains, ServiceRouteCache routes, AuditLog audit, HttpContext context)
    {
        var spec = new DataServiceSpec(
            request.Name ?? string.Empty, request.ProviderId ?? string.Empty, request.UpstreamBaseUrl ?? string.Empty,
            request.PricePerCall ?? -1, request.Currency ?? string.Empty, request.Description, request.TimeoutMs ?? DefaultTimeoutMs,
            request.UpstreamRateLimit);
        var errors = Validation.Check(id, spec);
        if (request.PricePerCall is null)
        {
            errors["pricePerCall"] = ["pricePerCall is required."];
        }

        if (request.Id is not null && request.Id != id)
        {
            errors["id"] = ["id in the body must match the id in the path."];
        }

        if (errors.Count > 0)
        {
            return Problems.Validation(errors);
        }

        if (await grains.GetGrain<IProviderGrain>(spec.ProviderId).GetAsync() is null)
        {
            return Problems.NotFound("provider", spec.ProviderId);
        }

        var info = await grains.GetGrain<IDataServiceGrain>(id).UpsertAsync(spec);
        routes.Invalidate(id);
        await audit.RecordAsync(context, "service.upsert", "service", id, spec);
        return TypedResults.Created($"/admin/services/{id}", info);
    }
}
