using Marketplace.Grains;
using Marketplace.Silo.FrontDoor;
using Microsoft.AspNetCore.Http.HttpResults;

namespace Marketplace.Silo.Apis;

/// <summary>
/// API keys, for admins (any key) and for consumers (the keys of their own account, authenticated with one of them).
/// Both go through the same handlers; a consumer asking for another account's key gets the same 404 as for a missing one.
/// </summary>
public static class KeysApi
{
    private static readonly TimeSpan DefaultOverlap = TimeSpan.FromDays(1);

    /// <summary>Maps <c>/admin/accounts/{id}/keys</c> and <c>/admin/keys</c>.</summary>
    public static RouteGroupBuilder MapAdminKeysApi(this RouteGroupBuilder admin)
    {
        admin.MapPost("/accounts/{id}/keys", (string id, CreateKeyRequest request, IGrainFactory grains, TimeProvider time, AuditLog audit, HttpContext context) =>
            CreateAsync(id, request, null, grains, time, audit, context)).WithTags("Keys");
        admin.MapGet("/accounts/{id}/keys", (string id, IGrainFactory grains) => ListAsync(id, grains)).WithTags("Keys");

        var keys = admin.MapGroup("/keys").WithTags("Keys");
        MapKeyOperations(keys, (_, _) => Task.FromResult(new Scope(null, Unauthorized: false)));
        keys.MapPatch("/{keyId}", UpdateAsync);
        return keys;
    }

    /// <summary>Maps <c>/v1/keys</c> for consumers.</summary>
    public static RouteGroupBuilder MapConsumerKeysApi(this IEndpointRouteBuilder app)
    {
        var keys = app.MapGroup("/v1/keys").WithTags("Consumer keys");
        keys.MapGet("/", async (HttpContext context, IGrainFactory grains) =>
            await ConsumerScopeAsync(context, grains) is { Caller: { } caller } ? await ListAsync(caller.AccountId, grains) : ConsumerUnauthorized(context));
        keys.MapPost("/", async (CreateKeyRequest request, IGrainFactory grains, TimeProvider time, AuditLog audit, HttpContext context) =>
            await ConsumerScopeAsync(context, grains) is { Caller: { } caller }
                ? await CreateAsync(caller.AccountId, request, caller, grains, time, audit, context)
                : ConsumerUnauthorized(context));
        MapKeyOperations(keys, ConsumerScopeAsync);
        return keys;
    }

    private static void MapKeyOperations(RouteGroupBuilder keys, Func<HttpContext, IGrainFactory, Task<Scope>> scope)
    {
        keys.MapGet("/{keyId}", async (string keyId, HttpContext context, IGrainFactory grains) =>
            await WithKeyAsync(keyId, context, grains, scope, async (key, _) => TypedResults.Ok(await key.GetAsync())));
        keys.MapPost("/{keyId}/suspend", (string keyId, HttpContext context, IGrainFactory grains, AuditLog audit) =>
            SetStatusAsync(keyId, ApiKeyStatus.Suspended, context, grains, audit, scope));
        keys.MapPost("/{keyId}/resume", (string keyId, HttpContext context, IGrainFactory grains, AuditLog audit) =>
            SetStatusAsync(keyId, ApiKeyStatus.Active, context, grains, audit, scope));
        keys.MapPost("/{keyId}/revoke", (string keyId, HttpContext context, IGrainFactory grains, AuditLog audit) =>
            SetStatusAsync(keyId, ApiKeyStatus.Revoked, context, grains, audit, scope));
        keys.MapPost("/{keyId}/rotate", (string keyId, RotateKeyRequest? request, HttpContext context, IGrainFactory grains, AuditLog audit) =>
            WithKeyAsync(keyId, context, grains, scope, async (key, actor) =>
            {
                if (request?.OverlapSeconds is < 0 or > 2_592_000)
                {
                    return Problems.Validation(new Dictionary<string, string[]> { ["overlapSeconds"] = ["overlapSeconds must be between 0 and 2592000."] });
                }

                var overlap = request?.OverlapSeconds is { } seconds ? TimeSpan.FromSeconds(seconds) : DefaultOverlap;
                var rotated = await key.RotateAsync(overlap);
                await audit.RecordAsync(context, "key.rotate", "key", keyId, new { actor, overlapSeconds = overlap.TotalSeconds });
                context.Response.Headers.CacheControl = "no-store";
                return TypedResults.Ok(rotated);
            }));
        keys.MapDelete("/{keyId}/secrets/{secretId}", (string keyId, string secretId, HttpContext context, IGrainFactory grains, AuditLog audit) =>
            WithKeyAsync(keyId, context, grains, scope, async (key, actor) =>
            {
                var info = await key.RetireSecretAsync(secretId);
                await audit.RecordAsync(context, "key.retire-secret", "key", keyId, new { actor, secretId });
                return TypedResults.Ok(info);
            }));
        keys.MapDelete("/{keyId}", (string keyId, HttpContext context, IGrainFactory grains, AuditLog audit) =>
            WithKeyAsync(keyId, context, grains, scope, async (key, actor) =>
            {
                await key.DeleteAsync();
                await audit.RecordAsync(context, "key.delete", "key", keyId, new { actor });
                return TypedResults.NoContent();
            }));
    }

    private static async Task<IResult> CreateAsync(string accountId, CreateKeyRequest request, ApiKeyInfo? caller,
        IGrainFactory grains, TimeProvider time, AuditLog audit, HttpContext context)
    {
        // A consumer may only hand out what its own key holds: a subset of its services, under its own limits.
        var services = request.Services ?? (caller is null ? [] : caller.Services);
        var limits = caller is null ? request.Limits : caller.Limits;
        var spec = new ApiKeySpec(accountId, request.Name ?? string.Empty, services, request.ExpiresAt, limits);
        var errors = Validation.Check(spec, time.GetUtcNow());
        if (caller is not null && services.Except(caller.Services, StringComparer.Ordinal).Any())
        {
            errors["services"] = ["A key can only be given services that the key creating it may call."];
        }

        if (caller is not null && request.Limits is not null)
        {
            errors["limits"] = ["Only an admin sets limits; a key created by a consumer inherits the creating key's limits."];
        }

        if (errors.Count > 0)
        {
            return Problems.Validation(errors);
        }

        if (!Ids.IsValid(accountId) || await grains.GetGrain<IAccountGrain>(accountId).GetAsync() is null)
        {
            return Problems.NotFound("account", accountId);
        }

        var keyId = ApiKeySecrets.NewKeyId();
        var created = await grains.GetGrain<IApiKeyGrain>(keyId).CreateAsync(spec);
        await audit.RecordAsync(context, "key.create", "key", keyId,
            new { actor = caller?.KeyId ?? "admin", spec.AccountId, spec.Name, spec.Services, spec.ExpiresAt, spec.Limits });
        context.Response.Headers.CacheControl = "no-store";
        return TypedResults.Created($"/admin/keys/{keyId}", created);
    }

    private static async Task<IResult> ListAsync(string accountId, IGrainFactory grains)
    {
        var account = Ids.IsValid(accountId) ? await grains.GetGrain<IAccountGrain>(accountId).GetAsync() : null;
        if (account is null)
        {
            return Problems.NotFound("account", accountId);
        }

        var keys = await Task.WhenAll(account.KeyIds.Select(id => grains.GetGrain<IApiKeyGrain>(id).GetAsync()));
        return TypedResults.Ok(keys.OfType<ApiKeyInfo>().ToList());
    }

    private static async Task<Results<Ok<ApiKeyInfo>, ValidationProblem, ProblemHttpResult>> UpdateAsync(
        string keyId, UpdateKeyRequest request, IGrainFactory grains, AuditLog audit, HttpContext context)
    {
        if (!ApiKeySecrets.IsValidKeyId(keyId) || await grains.GetGrain<IApiKeyGrain>(keyId).UpdateAsync(
                new ApiKeyUpdate(request.Name, request.Services, request.ExpiresAt, request.Limits)) is not { } info)
        {
            return Problems.NotFound("API key", keyId);
        }

        await audit.RecordAsync(context, "key.update", "key", keyId, request);
        return TypedResults.Ok(info);
    }

    private static Task<IResult> SetStatusAsync(string keyId, ApiKeyStatus status, HttpContext context, IGrainFactory grains, AuditLog audit,
        Func<HttpContext, IGrainFactory, Task<Scope>> scope) =>
        WithKeyAsync(keyId, context, grains, scope, async (key, actor) =>
        {
            var info = await key.SetStatusAsync(status);
            await audit.RecordAsync(context, $"key.{status.ToString().ToLowerInvariant()}", "key", keyId, new { actor });
            return TypedResults.Ok(info);
        });

    private static async Task<IResult> WithKeyAsync(string keyId, HttpContext context, IGrainFactory grains,
        Func<HttpContext, IGrainFactory, Task<Scope>> scope, Func<IApiKeyGrain, string, Task<IResult>> action)
    {
        var resolved = await scope(context, grains);
        if (resolved.Unauthorized)
        {
            return ConsumerUnauthorized(context);
        }

        var key = grains.GetGrain<IApiKeyGrain>(keyId);
        var info = ApiKeySecrets.IsValidKeyId(keyId) ? await key.GetAsync() : null;
        if (info is null || (resolved.Caller is { } caller && caller.AccountId != info.AccountId))
        {
            return Problems.NotFound("API key", keyId);
        }

        return await action(key, resolved.Caller?.KeyId ?? "admin");
    }

    private static async Task<Scope> ConsumerScopeAsync(HttpContext context, IGrainFactory grains) =>
        await CallApi.AuthenticateKeyAsync(context, grains) is { } caller ? new Scope(caller, Unauthorized: false) : new Scope(null, Unauthorized: true);

    private static ProblemHttpResult ConsumerUnauthorized(HttpContext context) => Problems.Unauthorized(context,
        "Manage keys with one of the account's own API keys (X-Api-Key), not an access token.");

    // Who may act: an admin (no caller) or a consumer's authenticated key.
    private sealed record Scope(ApiKeyInfo? Caller, bool Unauthorized);
}
