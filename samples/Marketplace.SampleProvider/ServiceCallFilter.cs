namespace Marketplace.SampleProvider;

/// <summary>
/// Endpoint filter for the service route groups: counts the call, then applies the control switches
/// (delay, hang, reset, garbage, failure) before the real handler runs.
/// </summary>
internal sealed class ServiceCallFilter(
    string service,
    ControlSwitches switches,
    CallStats stats,
    IHostApplicationLifetime lifetime) : IEndpointFilter
{
    private const string GarbageBody = "{\"result\": [1, 2, tru";

    private readonly string _service = service;
    private readonly ControlSwitches _switches = switches;
    private readonly CallStats _stats = stats;
    private readonly IHostApplicationLifetime _lifetime = lifetime;

    public async ValueTask<object?> InvokeAsync(EndpointFilterInvocationContext context, EndpointFilterDelegate next)
    {
        var http = context.HttpContext;
        var trackId = http.Request.Headers[SampleProviderApp.TrackIdHeader].ToString();
        _stats.Record(_service, trackId);

        var settings = _switches.Get(_service);

        // Stop waiting when the client gives up or when the app shuts down, so StopAsync is not held up.
        using var waitCancellation = CancellationTokenSource.CreateLinkedTokenSource(
            http.RequestAborted, _lifetime.ApplicationStopping);
        try
        {
            if (settings.Mode == ControlMode.Hang)
            {
                await Task.Delay(Timeout.Infinite, waitCancellation.Token);
            }

            if (settings.EffectiveDelayMs > 0)
            {
                await Task.Delay(settings.EffectiveDelayMs, waitCancellation.Token);
            }
        }
        catch (OperationCanceledException)
        {
            http.Abort();
            return TypedResults.Empty;
        }

        switch (settings.Mode)
        {
            case ControlMode.Reset:
                http.Abort();
                return TypedResults.Empty;
            case ControlMode.Garbage:
                return TypedResults.Text(GarbageBody, "application/json", statusCode: StatusCodes.Status200OK);
            case ControlMode.Fail:
                return SimulatedFailure(settings, "The service is switched to fail.");
            default:
                break;
        }

        if (_switches.ShouldFailNext(_service))
        {
            return SimulatedFailure(settings, $"Failure injected by failureRate {settings.FailureRate}.");
        }

        return await next(context);
    }

    private IResult SimulatedFailure(ControlSettings settings, string detail) =>
        TypedResults.Problem(
            detail: detail,
            statusCode: settings.FailureStatus,
            title: $"Simulated failure of the {_service} service");
}

internal static class ServiceCallFilterExtensions
{
    /// <summary>Applies the counting and control switches of <paramref name="service"/> to a route group.</summary>
    public static RouteGroupBuilder WithServiceControls(this RouteGroupBuilder group, string service)
    {
        var services = ((IEndpointRouteBuilder)group).ServiceProvider;
        group.AddEndpointFilter(new ServiceCallFilter(
            service,
            services.GetRequiredService<ControlSwitches>(),
            services.GetRequiredService<CallStats>(),
            services.GetRequiredService<IHostApplicationLifetime>()));
        return group;
    }
}
