using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Hosting;
using Orleans.Configuration;
using Orleans.Hosting;

namespace Marketplace.Client;

/// <summary>Where the marketplace cluster is and how long a client waits for it.</summary>
/// <param name="ConnectionString">The PostgreSQL database that holds the cluster's membership table.</param>
/// <param name="ClusterId">The silos' <c>Silo:ClusterId</c>.</param>
/// <param name="ServiceId">The silos' <c>Silo:ServiceId</c>.</param>
/// <param name="ConnectTimeout">How long the first connection is retried before the client's start fails; null waits until the host stops.</param>
public sealed record MarketplaceClusterSettings(
    string ConnectionString,
    string ClusterId = MarketplaceClusterSettings.DefaultId,
    string ServiceId = MarketplaceClusterSettings.DefaultId,
    TimeSpan? ConnectTimeout = null)
{
    /// <summary>The silos' default cluster and service id.</summary>
    public const string DefaultId = "marketplace";
}

/// <summary>Connects an internal .NET service (or a separate front door) to the marketplace cluster as an Orleans client.</summary>
public static class HostingExtensions
{
    // A client learns of silos that joined (a restarted one has a new address) and of silos declared dead (a hung
    // gateway whose connection stays open) from the membership table this often: one small query per second.
    private static readonly TimeSpan GatewayListRefreshPeriod = TimeSpan.FromSeconds(1);

    /// <summary>
    /// Adds an Orleans client that finds the cluster's gateways in the PostgreSQL membership table, and registers
    /// <see cref="MarketplaceClient"/> and <see cref="ClusterConnection"/>. <paramref name="clusterId"/> and
    /// <paramref name="serviceId"/> must match the silos' <c>Silo:ClusterId</c> and <c>Silo:ServiceId</c>.
    /// The start waits for a silo (retrying every second) for at most <paramref name="connectTimeout"/>, or until the host stops when null.
    /// </summary>
    public static IHostApplicationBuilder AddMarketplaceClient(this IHostApplicationBuilder builder, string connectionString,
        string clusterId = MarketplaceClusterSettings.DefaultId, string serviceId = MarketplaceClusterSettings.DefaultId, TimeSpan? connectTimeout = null) =>
        builder.AddMarketplaceClient(new MarketplaceClusterSettings(connectionString, clusterId, serviceId, connectTimeout));

    /// <inheritdoc cref="AddMarketplaceClient(IHostApplicationBuilder, string, string, string, TimeSpan?)"/>
    public static IHostApplicationBuilder AddMarketplaceClient(this IHostApplicationBuilder builder, MarketplaceClusterSettings settings)
    {
        builder.UseOrleansClient(client => client.UseMarketplaceCluster(settings));
        builder.Services.TryAddSingleton<MarketplaceClient>();
        return builder;
    }

    /// <summary>
    /// Configures an Orleans client for the marketplace cluster: cluster and service id, ADO.NET clustering on PostgreSQL
    /// (invariant <c>Npgsql</c>), a retried first connection, and <see cref="ClusterConnection"/> as a singleton that tells
    /// whether the client is connected.
    /// </summary>
    public static IClientBuilder UseMarketplaceCluster(this IClientBuilder client, MarketplaceClusterSettings settings)
    {
        ArgumentNullException.ThrowIfNull(settings);
        ArgumentException.ThrowIfNullOrEmpty(settings.ConnectionString);
        ArgumentException.ThrowIfNullOrEmpty(settings.ClusterId);
        ArgumentException.ThrowIfNullOrEmpty(settings.ServiceId);
        client.Configure<ClusterOptions>(cluster =>
        {
            cluster.ClusterId = settings.ClusterId;
            cluster.ServiceId = settings.ServiceId;
        });
        client.UseAdoNetClustering(clustering =>
        {
            clustering.Invariant = "Npgsql";
            clustering.ConnectionString = settings.ConnectionString;
        });
        client.Configure<GatewayOptions>(gateways => gateways.GatewayListRefreshPeriod = GatewayListRefreshPeriod);

        var services = client.Services;
        services.TryAddSingleton(TimeProvider.System);
        services.AddSingleton(settings);
        services.AddSingleton<ClusterConnection>();
        services.AddSingleton<IClusterConnectionStatusObserver>(provider => provider.GetRequiredService<ClusterConnection>());
        services.AddSingleton<IClientConnectionRetryFilter>(provider => provider.GetRequiredService<ClusterConnection>());
        return client;
    }
}
