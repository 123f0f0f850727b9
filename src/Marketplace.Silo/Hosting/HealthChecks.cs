using Marketplace.Client;
using Marketplace.Grains;
using Microsoft.Extensions.Diagnostics.HealthChecks;
using Npgsql;
using Orleans.Runtime;

namespace Marketplace.Silo.Hosting;

/// <summary>Ready only while PostgreSQL answers.</summary>
public sealed class DatabaseHealthCheck(NpgsqlDataSource database) : IHealthCheck
{
    /// <inheritdoc />
    public async Task<HealthCheckResult> CheckHealthAsync(HealthCheckContext context, CancellationToken cancellationToken = default)
    {
        try
        {
            using var timeout = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
            timeout.CancelAfter(TimeSpan.FromSeconds(2));
            await using var command = database.CreateCommand("SELECT 1");
            // WaitAsync: a hung server (SIGSTOPped, or a network black hole) can hold a connection attempt past the token.
            await command.ExecuteScalarAsync(timeout.Token).WaitAsync(timeout.Token);
            return HealthCheckResult.Healthy("PostgreSQL answers.");
        }
        catch (Exception exception) when (exception is NpgsqlException or OperationCanceledException or TimeoutException)
        {
            return HealthCheckResult.Unhealthy("PostgreSQL does not answer.");
        }
    }
}

/// <summary>Ready only while this silo is an active member of the cluster.</summary>
public sealed class SiloHealthCheck(ISiloStatusOracle silo) : IHealthCheck
{
    /// <inheritdoc />
    public Task<HealthCheckResult> CheckHealthAsync(HealthCheckContext context, CancellationToken cancellationToken = default) =>
        Task.FromResult(silo.CurrentStatus == SiloStatus.Active
            ? HealthCheckResult.Healthy("Silo is active.")
            : HealthCheckResult.Unhealthy($"Silo is {silo.CurrentStatus}."));
}

/// <summary>
/// A front door's readiness: ready while its Orleans client holds a connection to at least one silo. Without one, a
/// cheap call to the cluster is tried (it also makes the client connect to a silo that joined since), and its answer decides.
/// </summary>
public sealed class ClusterClientHealthCheck(ClusterConnection connection, IClusterClient client) : IHealthCheck
{
    private static readonly TimeSpan ProbeTimeout = TimeSpan.FromSeconds(2);

    /// <inheritdoc />
    public async Task<HealthCheckResult> CheckHealthAsync(HealthCheckContext context, CancellationToken cancellationToken = default)
    {
        if (connection.IsConnected)
        {
            return Connected();
        }

        try
        {
            var silos = await client.GetGrain<IManagementGrain>(0).GetHosts(onlyActive: true).WaitAsync(ProbeTimeout, cancellationToken);
            return silos.Count > 0 ? Connected() : HealthCheckResult.Unhealthy("The cluster has no active silo.");
        }
        catch (Exception exception) when (exception is not OperationCanceledException || !cancellationToken.IsCancellationRequested)
        {
            return HealthCheckResult.Unhealthy($"Not connected to the cluster: {exception.Message}");
        }
    }

    private HealthCheckResult Connected() => HealthCheckResult.Healthy(
        $"Connected to the cluster through {connection.ConnectedGateways} gateway(s).",
        new Dictionary<string, object> { ["gateways"] = connection.ConnectedGateways });
}

/// <summary>Ready only while every background loop (settlement batcher, ...) beats within its bound and its last cycle succeeded.</summary>
public sealed class BackgroundLoopsHealthCheck(BackgroundLoops loops) : IHealthCheck
{
    /// <inheritdoc />
    public Task<HealthCheckResult> CheckHealthAsync(HealthCheckContext context, CancellationToken cancellationToken = default)
    {
        var statuses = loops.Snapshot();
        var problems = new List<string>();
        var data = new Dictionary<string, object>(StringComparer.Ordinal);
        foreach (var status in statuses)
        {
            data[status.Name] = status.Problem ?? "healthy";
            if (status.Problem is not null)
            {
                problems.Add($"{status.Name}: {status.Problem}");
            }
        }

        return Task.FromResult(problems.Count == 0
            ? HealthCheckResult.Healthy($"{statuses.Count} background loop(s) running.", data)
            : HealthCheckResult.Unhealthy(string.Join("; ", problems), data: data));
    }
}
