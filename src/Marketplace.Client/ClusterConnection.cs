using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

namespace Marketplace.Client;

/// <summary>
/// The state of this process's connection to the marketplace cluster, and how the first connection is retried:
/// a client that starts before any silo (or while the silos restart) waits for one instead of failing its start.
/// </summary>
public sealed partial class ClusterConnection(
    MarketplaceClusterSettings settings, TimeProvider time, IHostApplicationLifetime lifetime, ILogger<ClusterConnection> logger)
    : IClusterConnectionStatusObserver, IClientConnectionRetryFilter
{
    private static readonly TimeSpan RetryDelay = TimeSpan.FromSeconds(1);

    private readonly DateTimeOffset _startedAt = time.GetUtcNow();
    private int _gateways;
    private int _attempts;

    /// <summary>Gateways (silos) this client holds an open connection to.</summary>
    public int ConnectedGateways => Volatile.Read(ref _gateways);

    /// <summary>True while at least one gateway connection is open.</summary>
    public bool IsConnected => ConnectedGateways > 0;

    /// <inheritdoc />
    public void NotifyGatewayCountChanged(int currentNumberOfGateways, int previousNumberOfGateways, bool connectionRecovered)
    {
        Volatile.Write(ref _gateways, currentNumberOfGateways);
        if (connectionRecovered)
        {
            LogRecovered(logger, settings.ClusterId, currentNumberOfGateways);
        }
    }

    /// <inheritdoc />
    public void NotifyClusterConnectionLost()
    {
        Volatile.Write(ref _gateways, 0);

        // Closing its own connections on the way out is not news.
        if (!lifetime.ApplicationStopping.IsCancellationRequested)
        {
            LogLost(logger, settings.ClusterId);
        }
    }

    /// <inheritdoc />
    public async Task<bool> ShouldRetryConnectionAttempt(Exception exception, CancellationToken cancellationToken)
    {
        var attempt = Interlocked.Increment(ref _attempts);
        var waited = time.GetUtcNow() - _startedAt;
        if (settings.ConnectTimeout is { } timeout && waited >= timeout)
        {
            LogGaveUp(logger, settings.ClusterId, attempt, waited.TotalSeconds, exception.Message);
            return false;
        }

        if (attempt == 1 || attempt % 30 == 0)
        {
            LogRetrying(logger, settings.ClusterId, attempt, exception.Message);
        }

        await Task.Delay(RetryDelay, time, cancellationToken);
        return true;
    }

    [LoggerMessage(Level = LogLevel.Warning, Message = "Cannot connect to cluster {ClusterId} yet (attempt {Attempt}: {Reason}); retrying every second")]
    private static partial void LogRetrying(ILogger logger, string clusterId, int attempt, string reason);

    [LoggerMessage(Level = LogLevel.Error, Message = "Gave up connecting to cluster {ClusterId} after {Attempt} attempts in {Seconds:F0} s: {Reason}")]
    private static partial void LogGaveUp(ILogger logger, string clusterId, int attempt, double seconds, string reason);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Lost the connection to every silo of cluster {ClusterId}; calls fail until one is back")]
    private static partial void LogLost(ILogger logger, string clusterId);

    [LoggerMessage(Level = LogLevel.Information, Message = "Connected to cluster {ClusterId} again ({Gateways} gateway(s))")]
    private static partial void LogRecovered(ILogger logger, string clusterId, int gateways);
}
