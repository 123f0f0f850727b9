using Marketplace.Grains;
using Marketplace.Silo.FrontDoor;
using Microsoft.AspNetCore.Http.HttpResults;

namespace Marketplace.Silo.Apis;

/// <summary>Admin API for consumer accounts, their balances and their API keys.</summary>
public static class AccountsApi
{
    /// <summary>Maps <c>/admin/accounts</c> and <c>/admin/keys</c>.</summary>
    public static RouteGroupBuilder MapAccountsApi(this RouteGroupBuilder admin)
    {
        var accounts = admin.MapGroup("/accounts").WithTags("Accounts");
        accounts.MapPost("/", CreateAccount);
        accounts.MapGet("/", ListAccounts);
        accounts.MapGet("/{id}", GetAccount);
        accounts.MapGet("/{id}/usage", GetAccount);
        accounts.MapPost("/{id}/top-ups", TopUp);
        accounts.MapPost("/{id}/keys", CreateKey);

        var keys = admin.MapGroup("/keys").WithTags("Keys");
        keys.MapGet("/{keyId}", GetKey);
        keys.MapPost("/{keyId}/revoke", (string keyId, IGrainFactory grains, AuditLog audit, HttpContext context) =>
            SetKeyStatus(keyId, ApiKeyStatus.Revoked, grains, audit, context));
        keys.MapPost("/{keyId}/suspend", (string keyId, IGrainFactory grains, AuditLog audit, HttpContext context) =>
            SetKeyStatus(keyId, ApiKeyStatus.Suspended, grains, audit, context));
        keys.MapPost("/{keyId}/resume", (string keyId, IGrainFactory grains, AuditLog audit, HttpContext context) =>
            SetKeyStatus(keyId, ApiKeyStatus.Active, grains, audit, context));
        return accounts;
    }

    /// <summary>Opens an account.</summary>
    public static async Task<Results<Created<AccountInfo>, ValidationProblem>> CreateAccount(
        CreateAccountRequest request, IGrainFactory grains, AuditLog audit, HttpContext context)
    {
        var id = request.Id ?? string.Empty;
        var spec = new AccountSpec(request.Name ?? string.Empty, request.Currency ?? string.Empty, request.CreditLimit ?? 0);
        var errors = Validation.Check(id, spec);
        if (errors.Count > 0)
        {
            return Problems.Validation(errors);
        }

        var info = await grains.GetGrain<IAccountGrain>(id).CreateAsync(spec);
        await audit.RecordAsync(context, "account.upsert", "account", id, spec);
        return TypedResults.Created($"/admin/accounts/{id}", info);
    }

    /// <summary>Lists account ids.</summary>
    public static async Task<Ok<IReadOnlyList<string>>> ListAccounts(IGrainFactory grains) =>
        TypedResults.Ok(await grains.GetGrain<IRegistryGrain>(IRegistryGrain.Default).ListAsync(EntityKind.Account));

    /// <summary>Reads an account: balance, reservations and call counts.</summary>
    public static async Task<Results<Ok<AccountInfo>, ProblemHttpResult>> GetAccount(string id, IGrainFactory grains) =>
        Ids.IsValid(id) && await grains.GetGrain<IAccountGrain>(id).GetAsync() is { } info
            ? TypedResults.Ok(info)
            : Problems.NotFound("account", id);

    /// <summary>Adds money to an account, with a reason that is audited.</summary>
    public static async Task<Results<Ok<AccountInfo>, ValidationProblem, ProblemHttpResult>> TopUp(
        string id, TopUpRequest request, IGrainFactory grains, AuditLog audit, HttpContext context)
    {
        var errors = Validation.CheckTopUp(request.Amount ?? 0, request.Reason);
        if (errors.Count > 0)
        {
            return Problems.Validation(errors);
        }

        var account = grains.GetGrain<IAccountGrain>(id);
        if (!Ids.IsValid(id) || await account.GetAsync() is null)
        {
            return Problems.NotFound("account", id);
        }

        var info = await account.TopUpAsync(request.Amount!.Value, request.Reason!);
        await audit.RecordAsync(context, "account.top-up", "account", id, new { request.Amount, request.Reason });
        return TypedResults.Ok(info);
    }

    /// <summary>Issues an API key for the account; the response is the only place its secret appears.</summary>
    public static async Task<Results<Created<ApiKeyCreated>, ValidationProblem, ProblemHttpResult>> CreateKey(
        string id, CreateKeyRequest request, IGrainFactory grains, TimeProvider time, AuditLog audit, HttpContext context)
    {
        var spec = new ApiKeySpec(id, request.Name ?? string.Empty, request.Services ?? [], request.ExpiresAt);
        var errors = Validation.Check(spec, time.GetUtcNow());
        if (errors.Count > 0)
        {
            return Problems.Validation(errors);
        }

        if (await grains.GetGrain<IAccountGrain>(id).GetAsync() is null)
        {
            return Problems.NotFound("account", id);
        }

        var keyId = ApiKeySecrets.NewKeyId();
        var created = await grains.GetGrain<IApiKeyGrain>(keyId).CreateAsync(spec);
        await audit.RecordAsync(context, "key.create", "key", keyId, new { spec.AccountId, spec.Name, spec.Services, spec.ExpiresAt });
        context.Response.Headers.CacheControl = "no-store";
        return TypedResults.Created($"/admin/keys/{keyId}", created);
    }

    /// <summary>Reads a key (never its secret).</summary>
    public static async Task<Results<Ok<ApiKeyInfo>, ProblemHttpResult>> GetKey(string keyId, IGrainFactory grains) =>
        ApiKeySecrets.IsValidKeyId(keyId) && await grains.GetGrain<IApiKeyGrain>(keyId).GetAsync() is { } info
            ? TypedResults.Ok(info)
            : Problems.NotFound("API key", keyId);

    private static async Task<Results<Ok<ApiKeyInfo>, ProblemHttpResult>> SetKeyStatus(
        string keyId, ApiKeyStatus status, IGrainFactory grains, AuditLog audit, HttpContext context)
    {
        if (!ApiKeySecrets.IsValidKeyId(keyId) || await grains.GetGrain<IApiKeyGrain>(keyId).SetStatusAsync(status) is not { } info)
        {
            return Problems.NotFound("API key", keyId);
        }

        await audit.RecordAsync(context, $"key.{status.ToString().ToLowerInvariant()}", "key", keyId);
        return TypedResults.Ok(info);
    }
}
