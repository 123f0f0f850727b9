using Marketplace.Grains;
using Microsoft.Extensions.DependencyInjection.Extensions;

namespace Marketplace.Silo.Database;

/// <summary>Registration of the call log and of the Idempotency-Key settings.</summary>
public static class CallLogExtensions
{
    /// <summary>
    /// Adds the database-backed call log (as the pipeline's <see cref="ICallLog"/> and a hosted flush loop) and its reader
    /// (<see cref="IJournalReader"/>, replacing the grains' in-memory default whichever was registered first).
    /// </summary>
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
        services.Replace(ServiceDescriptor.Singleton<IJournalReader, PostgresJournalReader>());
        services.AddSingleton<IdempotencyRecordsPurge>();
        services.AddHostedService(provider => provider.GetRequiredService<IdempotencyRecordsPurge>());
        return services;
    }
}
