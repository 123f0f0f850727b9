using Microsoft.AspNetCore.Http.HttpResults;
using Microsoft.AspNetCore.Mvc;

namespace Marketplace.SampleProvider;

/// <summary>The <c>/_control</c> and <c>/_stats</c> endpoints used by tests.</summary>
internal static class AdminEndpoints
{
    public static IEndpointRouteBuilder MapAdminEndpoints(this IEndpointRouteBuilder app)
    {
        app.MapGet("/_control", (ControlSwitches switches) => TypedResults.Ok(switches.GetAll()));
        app.MapPut("/_control/{service}", UpdateControl);
        app.MapDelete("/_control", (ControlSwitches switches) =>
        {
            switches.Reset();
            return TypedResults.Ok(switches.GetAll());
        });

        app.MapGet("/_stats", (CallStats stats) => TypedResults.Ok(stats.Snapshot()));
        app.MapDelete("/_stats", (CallStats stats) =>
        {
            stats.Reset();
            return TypedResults.Ok(stats.Snapshot());
        });

        return app;
    }

    private static Results<Ok<IReadOnlyDictionary<string, ControlSettings>>, ValidationProblem, ProblemHttpResult> UpdateControl(
        string service,
        [FromBody] ControlUpdate? update,
        ControlSwitches switches)
    {
        if (!ControlSwitches.IsValidTarget(service))
        {
            return TypedResults.Problem(
                detail: $"Use one of {string.Join(", ", ControlSwitches.ServiceNames)} or '{ControlSwitches.AllServices}'.",
                statusCode: StatusCodes.Status404NotFound,
                title: $"Unknown service '{service}'");
        }

        update ??= new ControlUpdate(null, null, null, null);
        if (!update.TryCreateSettings(out var settings, out var errors))
        {
            return TypedResults.ValidationProblem(errors);
        }

        switches.Set(service, settings);
        return TypedResults.Ok(switches.GetAll());
    }
}
