using System.Net;
using System.Text.Json;
using Microsoft.AspNetCore.Http.HttpResults;

namespace Marketplace.SampleProvider;

/// <summary>Body of <c>POST /device/risk</c>.</summary>
public sealed record DeviceRiskRequest(string? DeviceId, string? Ip);

/// <summary>Response of <c>/device/risk</c>; <see cref="Level"/> is low, medium or high.</summary>
public sealed record DeviceRisk(string DeviceId, int Score, string Level, IReadOnlyList<string> Signals);

internal static class DeviceRiskEndpoints
{
    private const int MaxDeviceIdLength = 256;

    public static RouteGroupBuilder MapDeviceRiskService(this IEndpointRouteBuilder app)
    {
        var group = app.MapGroup("/device").WithServiceControls(ControlSwitches.Device);
        group.MapGet("/risk", (string? deviceId, string? ip) => Assess(deviceId, ip));
        group.MapPost("/risk", AssessBodyAsync);
        return group;
    }

    // The body is read here rather than bound, so a malformed body is still counted and answered with problem+json.
    private static async Task<Results<Ok<DeviceRisk>, ProblemHttpResult>> AssessBodyAsync(HttpRequest request)
    {
        if (!request.HasJsonContentType())
        {
            return TypedResults.Problem(
                detail: "Send a JSON body such as {\"deviceId\": \"abc\"}.",
                statusCode: StatusCodes.Status415UnsupportedMediaType,
                title: "Unsupported content type");
        }

        DeviceRiskRequest? body;
        try
        {
            body = await request.ReadFromJsonAsync<DeviceRiskRequest>(request.HttpContext.RequestAborted);
        }
        catch (JsonException)
        {
            return BadRequest("Invalid JSON body", "The body must be a JSON object such as {\"deviceId\": \"abc\"}.");
        }

        return Assess(body?.DeviceId, body?.Ip);
    }

    private static Results<Ok<DeviceRisk>, ProblemHttpResult> Assess(string? deviceId, string? ip)
    {
        var id = deviceId?.Trim();
        if (string.IsNullOrEmpty(id) || id.Length > MaxDeviceIdLength)
        {
            return BadRequest("Invalid device id", $"'deviceId' is required and may have at most {MaxDeviceIdLength} characters.");
        }

        var ipText = string.Empty;
        if (!string.IsNullOrWhiteSpace(ip))
        {
            if (!IPAddress.TryParse(ip.Trim(), out var address))
            {
                return BadRequest("Invalid IP address", "'ip' must be an IPv4 or IPv6 address when given.");
            }

            ipText = address.ToString();
        }

        var hash = new StableHash("device", $"{id}|{ipText}");
        var score = hash.Range(0, 101);
        var (level, signalCount) = score switch
        {
            < 40 => ("low", hash.Range(1, 2)),
            < 70 => ("medium", 1 + hash.Range(1, 2)),
            _ => ("high", 2 + hash.Range(1, 3)),
        };

        return TypedResults.Ok(new DeviceRisk(id, score, level, PickSignals(hash, signalCount)));
    }

    private static string[] PickSignals(StableHash hash, int count)
    {
        // Partial Fisher-Yates shuffle driven by the hash, so the chosen signals are distinct and stable.
        var pool = ReferenceData.DeviceSignals.ToArray();
        for (var i = 0; i < count; i++)
        {
            var j = i + hash.Range(2 + i, pool.Length - i);
            (pool[i], pool[j]) = (pool[j], pool[i]);
        }

        return pool[..count];
    }

    private static ProblemHttpResult BadRequest(string title, string detail) =>
        TypedResults.Problem(detail: detail, statusCode: StatusCodes.Status400BadRequest, title: title);
}
