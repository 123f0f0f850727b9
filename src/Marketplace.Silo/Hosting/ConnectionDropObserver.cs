using Marketplace.Grains;

namespace Marketplace.Silo.Hosting;

/// <summary>
/// Tells a separate front door's call path when a connection to a silo's gateway drops. Orleans lets a request sent
/// through a gateway that died wait for its response timeout; the call path fails those calls at once instead.
/// </summary>
public sealed partial class ConnectionDropObserver(HotPathCalls calls, ILogger<ConnectionDropObserver> logger) : IClusterConnectionStatusObserver
{
    /// <inheritdoc />
    public void NotifyGatewayCountChanged(int currentNumberOfGateways, int previousNumberOfGateways, bool connectionRecovered)
    {
        if (currentNumberOfGateways < previousNumberOfGateways)
        {
            calls.ConnectionDropped();
            LogDropped(logger, previousNumberOfGateways, currentNumberOfGateways);
        }
    }

    /// <inheritdoc />
    public void NotifyClusterConnectionLost()
    {
    }

    [LoggerMessage(Level = LogLevel.Warning, Message = "A gateway connection dropped ({Previous} -> {Current}); grain calls in flight fail at once or are repeated where safe")]
    private static partial void LogDropped(ILogger logger, int previous, int current);
}
