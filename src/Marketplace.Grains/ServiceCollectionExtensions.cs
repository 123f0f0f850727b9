using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.DependencyInjection.Extensions;

namespace Marketplace.Grains;

/// <summary>Registration of what the grains and the call pipeline need.</summary>
public static class ServiceCollectionExtensions
{
    /// <summary>
    /// Everything a silo needs: the call pipeline (a silo runs it for internal clients through <see cref="ICallPipelineGrain"/>,
    /// and for its co-hosted front door) and what the grains themselves use (persistence and token settings, webhook delivery).
    /// </summary>
    public static IServiceCollection AddMarketplaceGrains(this IServiceCollection services)
    {
        services.AddMarketplaceCallPipeline();
        services.AddOptions<GrainPersistenceOptions>()
            .BindConfiguration(GrainPersistenceOptions.Section)
            .ValidateDataAnnotations()
            .ValidateOnStart();
        services.AddOptions<TokenOptions>()
            .BindConfiguration(TokenOptions.Section)
            .ValidateDataAnnotations()
            .ValidateOnStart();
        services.AddMarketplaceAlerts();
        return services;
    }

    /// <summary>
    /// What runs calls outside the grains, in a silo or in a front door that is an Orleans client: the route cache, upstream
    /// protection and limits, the upstream HTTP client, the settlement batcher, the marketplace's metrics, the registry of
    /// background loops and the pipeline itself. Every grain access goes through the process's <see cref="IGrainFactory"/>,
    /// a silo's or a client's. Safe to call more than once.
    /// </summary>
    public static IServiceCollection AddMarketplaceCallPipeline(this IServiceCollection services)
    {
        if (services.Any(service => service.ServiceType == typeof(CallPipeline)))
        {
            return services;
        }

        services.TryAddSingleton(TimeProvider.System);
        services.AddOptions<SecretsOptions>().BindConfiguration(SecretsOptions.Section);
        services.AddSingleton<UpstreamSecrets>();
        services.AddOptions<HotPathOptions>()
            .BindConfiguration(HotPathOptions.Section)
            .ValidateDataAnnotations()
            .ValidateOnStart();
        services.AddSingleton<HotPathCalls>();
        services.AddOptions<LeaseOptions>()
            .BindConfiguration(LeaseOptions.Section)
            .ValidateDataAnnotations()
            .ValidateOnStart();
        services.AddSingleton(provider => ActivatorUtilities.CreateInstance<KeyLeaseCache>(provider,
            (provider.GetService<ICallLog>() ?? NullCallLog.Instance).Sender));
        services.AddOptions<RoutingOptions>()
            .BindConfiguration(RoutingOptions.Section)
            .ValidateDataAnnotations()
            .ValidateOnStart();
        services.AddSingleton<IRouteSource, GrainRouteSource>();
        services.AddSingleton<ServiceRouteCache>();
        services.AddSingleton<UpstreamProtection>();
        services.AddSingleton<UpstreamLimiter>();
        services.AddOptions<MeteringOptions>()
            .BindConfiguration(MeteringOptions.Section)
            .ValidateDataAnnotations()
            .ValidateOnStart();
        services.AddSingleton<BackgroundLoops>();
        services.AddSingleton<SettlementBatcher>();
        services.AddMetrics();
        services.AddSingleton<MarketplaceMetrics>();
        services.AddHostedService(provider => provider.GetRequiredService<SettlementBatcher>());

        // The journal and its reader when the host brings no database (grain tests, benchmarks); the host's own win.
        // Registered after the batcher, so it stops first and its last batch is delivered before the batcher stops.
        services.TryAddSingleton<MemoryJournal>();
        services.TryAddSingleton<ICallLog>(provider => provider.GetRequiredService<MemoryJournal>());
        services.TryAddSingleton<IJournalReader>(provider => provider.GetRequiredService<MemoryJournal>());
        services.AddHostedService(provider => provider.GetRequiredService<MemoryJournal>());
        services.AddSingleton<CallPipeline>();
        services.AddSingleton<UpstreamClient>();
        services.AddHttpClient(CallPipeline.HttpClientName)
            .ConfigurePrimaryHttpMessageHandler(() => new SocketsHttpHandler
            {
                PooledConnectionLifetime = TimeSpan.FromMinutes(2),
                MaxConnectionsPerServer = 512,
                AllowAutoRedirect = false,
                UseCookies = false,
                ConnectTimeout = TimeSpan.FromSeconds(5),

                // An upstream is reached directly: a proxy from the environment would hide where calls go.
                UseProxy = false,
            })
            // The pipeline logs each call once with its TrackId; the factory's per-request scopes and lines cost
            // more CPU per call than the marketplace's own checks.
            .RemoveAllLoggers();
        return services;
    }
}
