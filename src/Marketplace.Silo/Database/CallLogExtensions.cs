using Marketplace.Grains;

namespace Marketplace.Silo.Database;

/// <summary>Registration of the call log and of the Idempotency-Key settings.</summary>
public static class CallLogExtensions
{
    /// <summary>Adds the database-backed call log (as the pipeline's <see cref="ICallLog"/> and a hosted flush loop).</summary>
    public static IServiceCollection AddCallLog(this IServiceCollection services)
    {
        services.AddOptions<CallLogOptions>()
            .BindConfiguration(CallLogOptions.Section)
            .ValidateDataAnnotations()
            .ValidateOnStart();
        services.AddOptions<IdempotencyOptions>()
            .BindConfiguration(IdempotencyOptions.Section)
            .ValidateDataAnnotations()
            .ValidateOnStart();
        services.AddSingleton<CallLogWriter>();
        services.AddSingleton<ICallLog>(provider => provider.GetRequiredService<CallLogWriter>());
        services.AddHostedService(provider => provider.GetRequiredService<CallLogWriter>());
        return services;
    }
}
