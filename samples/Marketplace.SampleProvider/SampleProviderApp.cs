using System.Text.Json;
using System.Text.Json.Serialization;

namespace Marketplace.SampleProvider;

/// <summary>
/// Builds the sample upstream provider so it can be run from the command line or embedded in tests.
/// </summary>
public static class SampleProviderApp
{
    public const string TrackIdHeader = "X-Track-Id";

    /// <summary>
    /// Creates the builder, registers services, maps all endpoints and returns the app without starting it.
    /// </summary>
    public static WebApplication Build(string[] args, Action<WebApplicationBuilder>? configure = null)
    {
        // Settings ship next to the binary, so the provider behaves the same from any working directory.
        var builder = WebApplication.CreateBuilder(new WebApplicationOptions { Args = args, ContentRootPath = AppContext.BaseDirectory });

        builder.Services.AddProblemDetails();
        builder.Services.ConfigureHttpJsonOptions(options =>
            options.SerializerOptions.Converters.Add(new JsonStringEnumConverter(JsonNamingPolicy.CamelCase)));
        builder.Services.AddSingleton(provider =>
            new ControlSwitches(provider.GetRequiredService<IConfiguration>().GetSection("Control")));
        builder.Services.AddSingleton<CallStats>();

        configure?.Invoke(builder);

        var app = builder.Build();

        app.Use(EchoTrackIdAsync);

        app.MapGet("/health", () => TypedResults.Text("ok"));
        app.MapPhoneService();
        app.MapIpGeoService();
        app.MapDeviceRiskService();
        app.MapAdminEndpoints();

        return app;
    }

    private static Task EchoTrackIdAsync(HttpContext context, RequestDelegate next)
    {
        if (context.Request.Headers.TryGetValue(TrackIdHeader, out var trackId))
        {
            context.Response.Headers[TrackIdHeader] = trackId;
        }

        return next(context);
    }
}
