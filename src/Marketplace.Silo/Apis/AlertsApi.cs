using Marketplace.Grains;
using Marketplace.Silo.FrontDoor;
using Microsoft.AspNetCore.Http.HttpResults;
using Microsoft.Extensions.Options;

namespace Marketplace.Silo.Apis;

/// <summary>Registers a webhook alert; every field is nullable so a missing one is a clear validation error.</summary>
/// <param name="Events"><c>quota</c> and/or <c>balance</c>.</param>
/// <param name="Thresholds">1 to 5 percentages, each 1 to 100.</param>
public sealed record CreateAlertRequest(string? Url, IReadOnlyList<string?>? Events, IReadOnlyList<int>? Thresholds);

/// <summary>
/// Webhook alerts of a consumer's account (<c>/v1/alerts</c>), managed with any of the account's own API keys. An alert
/// of another account answers 404, as a missing one does.
/// </summary>
public static class AlertsApi
{
    private static readonly Dictionary<string, AlertEvent> EventNames = new(StringComparer.Ordinal)
    {
        ["quota"] = AlertEvent.Quota,
        ["balance"] = AlertEvent.Balance,
    };

    /// <summary>Maps <c>/v1/alerts</c>.</summary>
    public static RouteGroupBuilder MapConsumerAlertsApi(this IEndpointRouteBuilder app)
    {
        var alerts = app.MapGroup("/v1/alerts").WithTags("Consumer alerts");
        alerts.MapPost("/", CreateAsync);
        alerts.MapGet("/", ListAsync);
        alerts.MapGet("/{alertId}", GetAsync);
        alerts.MapDelete("/{alertId}", DeleteAsync);
        return alerts;
    }

    /// <summary>Registers an alert; the answer carries its signing secret, shown this once.</summary>
    public static async Task<Results<Created<AlertCreated>, ValidationProblem, ProblemHttpResult>> CreateAsync(
        CreateAlertRequest request, HttpContext context, IGrainFactory grains, UpstreamSecrets secrets, IOptions<AlertOptions> options, AuditLog audit)
    {
        if (await CallApi.AuthenticateKeyAsync(context, grains) is not { } caller)
        {
            return Unauthorized(context);
        }

        var events = new List<AlertEvent>();
        var eventsKnown = request.Events is not null && request.Events.All(e => e is not null && EventNames.ContainsKey(e));
        if (eventsKnown)
        {
            events.AddRange(request.Events!.Select(e => EventNames[e!]));
        }

        var spec = new AlertSpec(request.Url ?? string.Empty, events, request.Thresholds ?? []);
        var errors = AlertValidation.Check(spec, options.Value.AllowPrivateNetworks);
        if (!eventsKnown)
        {
            errors["events"] = ["events must name each of quota and balance at most once, and at least one of them."];
        }

        if (errors.Count > 0)
        {
            return Problems.Validation(errors);
        }

        if (!secrets.Enabled)
        {
            return Problems.Create(StatusCodes.Status400BadRequest, "alerts-unavailable", "Webhook alerts are not available on this marketplace.",
                "It has no Secrets:Key to keep signing secrets with; ask its operator to configure one.");
        }

        AlertCreated created;
        try
        {
            created = await grains.GetGrain<IAlertGrain>(caller.AccountId).CreateAsync(spec);
        }
        catch (InvalidOperationException exception)
        {
            return Problems.Create(StatusCodes.Status409Conflict, "alert-limit", "The account has as many alerts as it may.", exception.Message);
        }

        var alert = created.Alert;
        await audit.RecordAsync(context, "alert.create", "alert", alert.AlertId,
            new { actor = caller.KeyId, alert.AccountId, alert.Url, alert.Events, alert.Thresholds });
        context.Response.Headers.CacheControl = "no-store";
        return TypedResults.Created($"/v1/alerts/{alert.AlertId}", created);
    }

    /// <summary>The account's alerts, with what they delivered and the last delivery that gave up.</summary>
    public static async Task<Results<Ok<IReadOnlyList<AlertInfo>>, ProblemHttpResult>> ListAsync(HttpContext context, IGrainFactory grains) =>
        await CallApi.AuthenticateKeyAsync(context, grains) is { } caller
            ? TypedResults.Ok(await grains.GetGrain<IAlertGrain>(caller.AccountId).ListAsync())
            : Unauthorized(context);

    /// <summary>One alert of the account.</summary>
    public static async Task<Results<Ok<AlertInfo>, ProblemHttpResult>> GetAsync(string alertId, HttpContext context, IGrainFactory grains)
    {
        if (await CallApi.AuthenticateKeyAsync(context, grains) is not { } caller)
        {
            return Unauthorized(context);
        }

        var alerts = await grains.GetGrain<IAlertGrain>(caller.AccountId).ListAsync();
        return alerts.FirstOrDefault(a => a.AlertId == alertId) is { } alert ? TypedResults.Ok(alert) : Problems.NotFound("alert", alertId);
    }

    /// <summary>Removes an alert; deliveries still waiting for it are dropped.</summary>
    public static async Task<Results<NoContent, ProblemHttpResult>> DeleteAsync(string alertId, HttpContext context, IGrainFactory grains, AuditLog audit)
    {
        if (await CallApi.AuthenticateKeyAsync(context, grains) is not { } caller)
        {
            return Unauthorized(context);
        }

        if (!await grains.GetGrain<IAlertGrain>(caller.AccountId).DeleteAsync(alertId))
        {
            return Problems.NotFound("alert", alertId);
        }

        await audit.RecordAsync(context, "alert.delete", "alert", alertId, new { actor = caller.KeyId, caller.AccountId });
        return TypedResults.NoContent();
    }

    private static ProblemHttpResult Unauthorized(HttpContext context) => Problems.Unauthorized(context,
        "Manage alerts with one of the account's own API keys (X-Api-Key), not an access token.");
}
