using Marketplace.Grains;
using Marketplace.Silo.FrontDoor;
using Microsoft.AspNetCore.Http.HttpResults;

namespace Marketplace.Silo.Apis;

/// <summary>Admin API for consumer accounts and their balances.</summary>
public static class AccountsApi
{
    /// <summary>Maps <c>/admin/accounts</c>.</summary>
    public static RouteGroupBuilder MapAccountsApi(this RouteGroupBuilder admin)
    {
        var accounts = admin.MapGroup("/accounts").WithTags("Accounts");
        accounts.MapPost("/", CreateAccount);
        accounts.MapGet("/", ListAccounts);
        accounts.MapGet("/{id}", GetAccount);
        accounts.MapGet("/{id}/usage", GetAccount);
        accounts.MapPost("/{id}/top-ups", TopUp);
        accounts.MapPost("/{id}/adjustments", Adjust);
        accounts.MapGet("/{id}/ledger", GetLedger);
        return accounts;
    }

    /// <summary>Opens an account.</summary>
    public static async Task<Results<Created<AccountInfo>, ValidationProblem>> CreateAccount(
        CreateAccountRequest request, IGrainFactory grains, AuditLog audit, HttpContext context)
    {
        var id = request.Id ?? string.Empty;
        var spec = new AccountSpec(request.Name ?? string.Empty, request.Currency ?? string.Empty, request.CreditLimit ?? 0, request.MonthlyCallCap);
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

    /// <summary>Corrects the balance by a signed amount with a reason; refused if it would pass the credit limit.</summary>
    public static async Task<Results<Ok<AccountInfo>, ValidationProblem, ProblemHttpResult>> Adjust(
        string id, AdjustmentRequest request, IGrainFactory grains, AuditLog audit, HttpContext context)
    {
        var errors = Validation.CheckAdjustment(request.Amount ?? 0, request.Reason);
        if (errors.Count > 0)
        {
            return Problems.Validation(errors);
        }

        var account = grains.GetGrain<IAccountGrain>(id);
        if (!Ids.IsValid(id) || await account.GetAsync() is null)
        {
            return Problems.NotFound("account", id);
        }

        var info = await account.AdjustAsync(request.Amount!.Value, request.Reason!);
        await audit.RecordAsync(context, "account.adjust", "account", id, new { request.Amount, request.Reason });
        return TypedResults.Ok(info);
    }

    /// <summary>The audited top-ups and adjustments.</summary>
    public static async Task<Results<Ok<IReadOnlyList<LedgerEntry>>, ProblemHttpResult>> GetLedger(string id, IGrainFactory grains)
    {
        var account = grains.GetGrain<IAccountGrain>(id);
        return Ids.IsValid(id) && await account.GetAsync() is not null
            ? TypedResults.Ok(await account.GetLedgerAsync())
            : Problems.NotFound("account", id);
    }
}
