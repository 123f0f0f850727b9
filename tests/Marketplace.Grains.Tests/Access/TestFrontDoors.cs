using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;

namespace Marketplace.Grains.Tests;

/// <summary>
/// Front doors built as a front door process registers them (lease cache, journal with its own holder id, settlements)
/// against a test cluster, and the catalog, account and keys they admit for. Disposing ends every front door it built.
/// </summary>
public sealed class TestFrontDoors(IGrainFactory grains) : IDisposable
{
    /// <summary>The currency of every service and account made here.</summary>
    public const string Currency = "EUR";

    private readonly List<ServiceProvider> _built = [];

    /// <summary>A front door's services; <paramref name="time"/> replaces the system clock, <paramref name="push"/> turns pushed changes off.</summary>
    public ServiceProvider Build(TimeProvider? time = null, bool push = true)
    {
        var services = new ServiceCollection();
        services.AddSingleton<IConfiguration>(new ConfigurationBuilder().Build());
        services.AddLogging();
        services.AddSingleton(grains);
        if (time is not null)
        {
            services.AddSingleton(time);
        }

        services.AddMarketplaceCallPipeline();
        services.Configure<LeaseOptions>(o => o.PushChanges = push);
        var provider = services.BuildServiceProvider();
        _built.Add(provider);
        return provider;
    }

    /// <summary>A published service at <paramref name="price"/> (its upstream is never called) and an account funded with <paramref name="balance"/>.</summary>
    public async Task<(string AccountId, string ServiceId)> CreateServiceAndAccountAsync(long price, long balance, long creditLimit = 0)
    {
        var accountId = TestIds.Account();
        var providerId = TestIds.Provider();
        var serviceId = TestIds.Service();
        await grains.GetGrain<IProviderGrain>(providerId).UpsertAsync(new ProviderSpec("p", null));
        await grains.GetGrain<IDataServiceGrain>(serviceId).UpsertAsync(
            new DataServiceSpec("s", providerId, "http://127.0.0.1:9/x", price, Currency, null, 1000, Status: ServiceStatus.Published));
        await grains.GetGrain<IAccountGrain>(accountId).CreateAsync(new AccountSpec("a", Currency, creditLimit));
        await grains.GetGrain<IAccountGrain>(accountId).TopUpAsync(balance, "test");
        return (accountId, serviceId);
    }

    /// <summary>A key of the account for the service; returns its id and secret.</summary>
    public async Task<(string KeyId, string Secret)> CreateKeyAsync(string accountId, string serviceId, KeyLimits? limits)
    {
        var keyId = TestIds.Key();
        var created = await grains.GetGrain<IApiKeyGrain>(keyId).CreateAsync(new ApiKeySpec(accountId, "k", [serviceId], null, limits));
        return (keyId, created.ApiKey[(created.ApiKey.IndexOf('.') + 1)..]);
    }

    /// <summary>Reads until <paramref name="done"/> holds, for up to 30 s (work the cluster finishes on its own timers).</summary>
    public static async Task<T> PollLongAsync<T>(Func<Task<T>> read, Func<T, bool> done)
    {
        var value = await read();
        for (var i = 0; i < 600 && !done(value); i++)
        {
            await Task.Delay(50, TestContext.Current.CancellationToken);
            value = await read();
        }

        return value;
    }

    public void Dispose()
    {
        foreach (var provider in _built)
        {
            provider.Dispose();
        }
    }
}
