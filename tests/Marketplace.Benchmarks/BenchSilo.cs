using System.Net;
using System.Net.Sockets;
using Marketplace.Grains;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

namespace Marketplace.Benchmarks;

/// <summary>
/// An in-process, single-silo Orleans cluster with the marketplace grains and in-memory grain storage,
/// seeded with one provider, one priced data service, one account with a huge balance and many API keys.
/// </summary>
internal sealed class BenchSilo : IAsyncDisposable
{
    public const string ProviderId = "bench-provider";
    public const string ServiceId = "bench-service";
    public const string Currency = "EUR";
    public const long Price = 2;

    // Validation caps one top-up at 10^12 minor units; a few of them cover billions of calls at price 2.
    private const long TopUp = 1_000_000_000_000;
    private const int TopUps = 5;

    private readonly IHost _host;

    private BenchSilo(IHost host, string accountId, IReadOnlyList<(IApiKeyGrain Key, AdmitRequest Request)> keys)
    {
        _host = host;
        AccountId = accountId;
        Keys = keys;
    }

    public IGrainFactory Grains => _host.Services.GetRequiredService<IGrainFactory>();

    /// <summary>The silo's services (the pipeline's settlement batcher lives there).</summary>
    public IServiceProvider Services => _host.Services;

    public string AccountId { get; }

    /// <summary>The seeded keys, each with the admission request that carries its own secret.</summary>
    public IReadOnlyList<(IApiKeyGrain Key, AdmitRequest Request)> Keys { get; }

    public static async Task<BenchSilo> StartAsync(int keyCount)
    {
        var siloPort = FreePort();
        var gatewayPort = FreePort();
        var host = Host.CreateDefaultBuilder()
            .ConfigureLogging(logging => logging
                .ClearProviders()
                .AddConsole()
                .SetMinimumLevel(LogLevel.Warning)
                // Its first check after a long JIT-heavy start-up reports a bogus stall of many minutes.
                .AddFilter("Orleans.Runtime.Watchdog", LogLevel.Error))
            .UseOrleans(silo => silo
                .UseLocalhostClustering(siloPort, gatewayPort)
                .AddMemoryGrainStorage(StorageNames.Marketplace))
            .ConfigureServices(services => services.AddMarketplaceGrains())
            .Build();
        await host.StartAsync();

        try
        {
            var grains = host.Services.GetRequiredService<IGrainFactory>();
            await grains.GetGrain<IProviderGrain>(ProviderId).UpsertAsync(new ProviderSpec("Benchmark provider", "bench@example.invalid"));
            await grains.GetGrain<IDataServiceGrain>(ServiceId).UpsertAsync(
                new DataServiceSpec("Benchmark service", ProviderId, "http://127.0.0.1:9/bench", Price, Currency, null, 5_000, Status: ServiceStatus.Published));

            var accountId = "bench-" + Guid.NewGuid().ToString("N")[..12];
            var account = grains.GetGrain<IAccountGrain>(accountId);
            await account.CreateAsync(new AccountSpec("Benchmark consumer", Currency, 0));
            for (var i = 0; i < TopUps; i++)
            {
                await account.TopUpAsync(TopUp, "benchmark funding");
            }

            var keys = new (IApiKeyGrain, AdmitRequest)[keyCount];
            for (var i = 0; i < keyCount; i++)
            {
                var keyId = $"bk{accountId[6..]}{i:D5}";
                var secret = $"bench-secret-{i:D5}-0123456789";
                var key = grains.GetGrain<IApiKeyGrain>(keyId);
                await key.CreateAsync(new ApiKeySpec(accountId, $"bench key {i}", [ServiceId], null), secret);
                keys[i] = (key, new AdmitRequest(secret, ServiceId, Price, Currency, $"bench-track-{i:D5}"));
            }

            return new BenchSilo(host, accountId, keys);
        }
        catch
        {
            await host.StopAsync();
            host.Dispose();
            throw;
        }
    }

    public async ValueTask DisposeAsync()
    {
        // Let every write-behind timer flush first: a grain still dirty when the silo stops writes on deactivation,
        // and the in-memory storage grain may already be gone by then, which only produces retries and warnings.
        await Task.Delay(new GrainPersistenceOptions().WriteBehindInterval * 2);
        await _host.StopAsync();
        _host.Dispose();
    }

    private static int FreePort()
    {
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        return ((IPEndPoint)listener.LocalEndpoint).Port;
    }
}
