using Marketplace.Grains;
using Serilog.Core;
using Serilog.Events;

namespace Marketplace.Silo.FrontDoor;

/// <summary>
/// Adds the call's TrackId to log lines written inside grains. The front door puts it on the Serilog log context of the
/// request; grain code runs in the grain's own execution context, where the TrackId arrives in Orleans'
/// <see cref="RequestContext"/> (the pipeline sets it there), so this enricher reads it from there.
/// </summary>
public sealed class TrackIdEnricher : ILogEventEnricher
{
    /// <inheritdoc />
    public void Enrich(LogEvent logEvent, ILogEventPropertyFactory propertyFactory)
    {
        if (!logEvent.Properties.ContainsKey(TrackIds.ContextKey) && RequestContext.Get(TrackIds.ContextKey) is string trackId)
        {
            logEvent.AddPropertyIfAbsent(propertyFactory.CreateProperty(TrackIds.ContextKey, trackId));
        }
    }
}
