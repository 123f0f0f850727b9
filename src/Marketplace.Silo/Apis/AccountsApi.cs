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

    /// <summary>
    /// Adds money to an account, with a reason that is audited. Send an <c>Idempotency-Key</c> to make a repeat safe: the
    /// account applies each key once (for 24 h) and answers a repeat with the same result and <c>Idempotent-Replayed: true</c>.
    /// </summary>
    public static Task<Results<Ok<AccountInfo>, ValidationProblem, ProblemHttpResult>> TopUp(
        string id, TopUpRequest request, IGrainFactory grains, AuditLog audit, HttpContext context, TimeProvider time) =>
        ChangeCreditsAsync(id, BalanceChangeKind.TopUp, request.Amount, request.Reason, grains, audit, context, time);

    /// <summary>
    /// Corrects the balance by a signed amount with a reason; refused if it would pass the credit limit. An
    /// <c>Idempotency-Key</c> makes a repeat safe, as for top-ups.
    /// </summary>
    public static Task<Results<Ok<AccountInfo>, ValidationProblem, ProblemHttpResult>> Adjust(
        string id, AdjustmentRequest request, IGrainFactory grains, AuditLog audit, HttpContext context, TimeProvider time) =>
        ChangeCreditsAsync(id, BalanceChangeKind.Adjustment, request.Amount, request.Reason, grains, audit, context, time);

    private static async Task<Results<Ok<AccountInfo>, ValidationProblem, ProblemHttpResult>> ChangeCreditsAsync(
        string id, BalanceChangeKind kind, long? amount, string? reason, IGrainFactory grains, AuditLog audit, HttpContext context, TimeProvider time)
    {
        var topUp = kind == BalanceChangeKind.TopUp;
        var errors = topUp ? Validation.CheckTopUp(amount ?? 0, reason) : Validation.CheckAdjustment(amount ?? 0, reason);
        if (errors.Count > 0)
        {
            return Problems.Validation(errors);
        }

        var operationId = context.Request.Headers[CallApi.IdempotencyKeyHeader] is { Count: > 0 } values ? values.ToString() : null;
        if (operationId is not null && !IdempotencyOptions.IsWellFormed(operationId))
        {
            return Problems.Create(StatusCodes.Status400BadRequest, "bad-idempotency-key", "The Idempotency-Key header is not valid.",
                "Send 1 to 128 characters of letters, digits, '-', '_', '.' or ':' (a UUID works).");
        }

        var account = grains.GetGrain<IAccountGrain>(id);
        if (!Ids.IsValid(id) || await account.GetAsync() is null)
        {
            return Problems.NotFound("account", id);
        }

        // Without a key from the caller the change still gets an id of its own, so this node's resends apply it once.
        var change = new BalanceChange(kind, amount!.Value, reason!, operationId ?? "op:" + TimeOrderedIds.New(time.GetUtcNow()).ToString("N"));
        var result = await CreditsDelivery.SendAsync(account, change, time);
        if (result.Status == BalanceChangeStatus.Mismatch)
        {
            return Problems.Create(StatusCodes.Status409Conflict, "idempotency-conflict", "The Idempotency-Key was used for another change.",
                "This account already applied a different top-up or adjustment under this Idempotency-Key; nothing changed.");
        }

        if (result.Status == BalanceChangeStatus.Replayed)
        {
            context.Response.Headers["Idempotent-Replayed"] = "true";
        }
        else
        {
            await audit.RecordAsync(context, topUp ? "account.top-up" : "account.adjust", "account", id, new { Amount = amount, Reason = reason, OperationId = change.OperationId });
        }

        return TypedResults.Ok(result.Account);
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
