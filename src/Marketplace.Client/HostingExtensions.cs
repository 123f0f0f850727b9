using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Orleans.Configuration;
using Orleans.Hosting;

namespace Marketplace.Client;

/// <summary>Connects an internal .NET service to the marketplace cluster as an Orleans client.</summary>
public static class HostingExtensions
{
    /// <summary>
    /// Adds an Orleans client that finds the cluster's gateways in the PostgreSQL membership table, and
    /// registers <see cref="MarketplaceClient"/>. <paramref name="clusterId"/> and <paramref name="serviceId"/>
    /// must match the silos' <c>Silo:ClusterId</c> and <c>Silo:ServiceId</c>.
    /// </summary>
    public static IHostApplicationBuilder AddMarketplaceClient(this IHostApplicationBuilder builder, string connectionString,
        string clusterId = "marketplace", string serviceId = "marketplace")
    {
        ArgumentException.ThrowIfNullOrEmpty(connectionString);
        builder.UseOrleansClient(client =>
        {
            client.Configure<ClusterOptions>(cluster =>
            {
                cluster.ClusterId = clusterId;
                cluster.ServiceId = serviceId;
            });
            client.UseAdoNetClustering(clustering =>
            {
                clustering.Invariant = "Npgsql";
                clustering.ConnectionString = connectionString;
            });
        });
        builder.Services.AddSingleton<MarketplaceClient>();
        return builder;
    }
}
