using Marketplace.Grains;
using Marketplace.Silo.FrontDoor;
using Microsoft.AspNetCore.Http.HttpResults;

namespace Marketplace.Silo.Apis;

/// <summary>Admin API for providers (data sellers).</summary>
public static class ProvidersApi
{
    /// <summary>Maps <c>/admin/providers</c>.</summary>
    public static RouteGroupBuilder MapProvidersApi(this RouteGroupBuilder admin)
    {
        var group = admin.MapGroup("/providers").WithTags("Providers");
        group.MapPost("/", CreateProvider);
        group.MapGet("/", ListProviders);
        group.MapGet("/{id}", GetProvider);
        group.MapPost("/{id}/keys", IssueKey);
        group.MapDelete("/{id}/keys", RevokeKeys);
        return group;
    }

    /// <summary>Creates or updates a provider.</summary>
    public static async Task<Results<Created<ProviderInfo>, ValidationProblem>> CreateProvider(
        CreateProviderRequest request, IGrainFactory grains, AuditLog audit, HttpContext context)
    {
        var id = request.Id ?? string.Empty;
        var spec = new ProviderSpec(request.Name ?? string.Empty, request.ContactEmail);
        var errors = Validation.Check(id, spec);
        if (errors.Count > 0)
        {
            return Problems.Validation(errors);
        }

        var info = await grains.GetGrain<IProviderGrain>(id).UpsertAsync(spec);
        await audit.RecordAsync(context, "provider.upsert", "provider", id, spec);
        return TypedResults.Created($"/admin/providers/{id}", info);
    }

    /// <summary>Lists providers.</summary>
    public static async Task<Ok<IReadOnlyList<string>>> ListProviders(IGrainFactory grains) =>
        TypedResults.Ok(await grains.GetGrain<IRegistryGrain>(IRegistryGrain.Default).ListAsync(EntityKind.Provider));

    /// <summary>Issues a provider key for the provider API; the key is shown only in this answer.</summary>
    public static async Task<Results<Created<ProviderKeyResponse>, ProblemHttpResult>> IssueKey(string id, IGrainFactory grains, AuditLog audit, HttpContext context)
    {
        if (!Ids.IsValid(id) || await grains.GetGrain<IProviderGrain>(id).GetAsync() is null)
        {
            return Problems.NotFound("provider", id);
        }

        var key = await grains.GetGrain<IProviderGrain>(id).IssueKeyAsync();
        await audit.RecordAsync(context, "provider.key.issue", "provider", id);
        return TypedResults.Created($"/admin/providers/{id}", new ProviderKeyResponse(id, key));
    }

    /// <summary>Retires every key of a provider.</summary>
    public static async Task<Results<NoContent, ProblemHttpResult>> RevokeKeys(string id, IGrainFactory grains, AuditLog audit, HttpContext context)
    {
        if (!Ids.IsValid(id) || await grains.GetGrain<IProviderGrain>(id).GetAsync() is null)
        {
            return Problems.NotFound("provider", id);
        }

        await grains.GetGrain<IProviderGrain>(id).RevokeKeysAsync();
        await audit.RecordAsync(context, "provider.key.revoke", "provider", id);
        return TypedResults.NoContent();
    }

    /// <summary>Reads a provider.</summary>
    public static async Task<Results<Ok<ProviderInfo>, ProblemHttpResult>> GetProvider(string id, IGrainFactory grains) =>
        Ids.IsValid(id) && await grains.GetGrain<IProviderGrain>(id).GetAsync() is { } info
            ? TypedResults.Ok(info)
            : Problems.NotFound("provider", id);
}
