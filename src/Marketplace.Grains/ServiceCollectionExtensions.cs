using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.DependencyInjection.Extensions;

namespace Marketplace.Grains;

/// <summary>Registration of what the grains and the call pipeline need.</summary>
public static class ServiceCollectionExtensions
{
    /// <summary>
    /// Adds the call pipeline, the route cache, the upstream HTTP client, grain persistence options, the marketplace's
    /// metrics and the registry of background loops.
    /// </summary>
    public static IServiceCollection AddMarketplaceGrains(this IServiceCollection services)
    {
        services.TryAddSingleton(TimeProvider.System);
        services.AddOptions<GrainPersistenceOptions>()
            .BindConfiguration(GrainPersistenceOptions.Section)
            .ValidateDataAnnotations()
            .ValidateOnStart();
        services.AddOptions<TokenOptions>()
            .BindConfiguration(TokenOptions.Section)
            .ValidateDataAnnotations()
            .ValidateOnStart();
        services.AddOptions<SecretsOptions>().BindConfiguration(SecretsOptions.Section);
        services.AddSingleton<UpstreamSecrets>();
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
        services.AddSingleton<CallPipeline>();
        services.AddMarketplaceAlerts();
        services.AddHttpClient(CallPipeline.HttpClientName, client =>
            {
                // Each call has its own timeout from the service's settings.
                client.Timeout = Timeout.InfiniteTimeSpan;
            })
            .ConfigurePrimaryHttpMessageHandler(() => new SocketsHttpHandler
            {
                PooledConnectionLifetime = TimeSpan.FromMinutes(2),
                MaxConnectionsPerServer = 512,
                AllowAutoRedirect = false,
                UseCookies = false,
                ConnectTimeout = TimeSpan.FromSeconds(5),
            })
            // The pipeline logs each call once with its TrackId; the factory's per-request scopes and lines cost
            // more CPU per call than the marketplace's own checks.
            .RemoveAllLoggers();
        return services;
    }
}
