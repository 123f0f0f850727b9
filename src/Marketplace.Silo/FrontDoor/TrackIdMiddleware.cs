using Marketplace.Grains;
using Serilog.Context;

namespace Marketplace.Silo.FrontDoor;

/// <summary>Gives every request its TrackId (the caller's when well formed), returns it, and adds it to every log line.</summary>
public static class TrackIdMiddleware
{
    /// <summary>The TrackId of the current request.</summary>
    public static string GetTrackId(this HttpContext context) =>
        context.Items.TryGetValue(TrackIds.ContextKey, out var value) && value is string trackId ? trackId : string.Empty;

    /// <summary>Adds the middleware; put it first.</summary>
    public static IApplicationBuilder UseTrackIds(this IApplicationBuilder app) => app.Use(async (context, next) =>
    {
        var trackId = TrackIds.AcceptOrNew(context.Request.Headers[TrackIds.Header].ToString());
        context.Items[TrackIds.ContextKey] = trackId;
        context.Response.Headers[TrackIds.Header] = trackId;
        using (LogContext.PushProperty(TrackIds.ContextKey, trackId))
        {
            await next(context);
        }
    });
}
