using System.Security.Cryptography;
using Microsoft.Extensions.DependencyInjection;
using Orleans.Core.Internal;
using Orleans.Hosting;
using Orleans.TestingHost;

namespace Marketplace.Grains.Tests;

/// <summary>A two-silo test cluster configured by <typeparamref name="TConfigurator"/>.</summary>
public abstract class TwoSiloCluster<TConfigurator> : IAsyncLifetime
    where TConfigurator : ISiloConfigurator, new()
{
    private TestCluster? _cluster;

    public TestCluster Cluster => _cluster ?? throw new InvalidOperationException("The cluster is not started.");

    public IGrainFactory Grains => Cluster.GrainFactory;

    public async ValueTask InitializeAsync()
    {
        var builder = new TestClusterBuilder();
        builder.Options.InitialSilosCount = 2;
        builder.AddSiloBuilderConfigurator<TConfigurator>();
        _cluster = builder.Build();
        await _cluster.DeployAsync();
    }

    public async ValueTask DisposeAsync()
    {
        if (_cluster is not null)
        {
            await _cluster.StopAllSilosAsync();
            await _cluster.DisposeAsync();
        }
    }
}

/// <summary>A two-silo test cluster with memory storage, the marketplace grains and a manual clock.</summary>
public sealed class ClusterFixture : TwoSiloCluster<ClusterFixture.SiloConfigurator>
{
    /// <summary>The clock every silo uses; static because the silo configurator is created by the test cluster.</summary>
    public static ManualTimeProvider SharedTime { get; } = new(
        DateTimeOffset.FromUnixTimeMilliseconds(DateTimeOffset.UtcNow.ToUnixTimeMilliseconds()));

    public const string Currency = "EUR";

    /// <summary>The Secrets:Key of every silo (secret headers of service versions are encrypted with it).</summary>
    public static string SecretsKey { get; } = Convert.ToBase64String(RandomNumberGenerator.GetBytes(32));

    public ManualTimeProvider Time => SharedTime;

    /// <summary>Opens an account with a fresh id and tops it up to <paramref name="balance"/>.</summary>
    public async Task<string> CreateAccountAsync(long balance, long creditLimit = 0, string currency = Currency)
    {
        var accountId = TestIds.Account();
        var account = Grains.GetGrain<IAccountGrain>(accountId);
        await account.CreateAsync(new AccountSpec("Test account", currency, creditLimit));
        if (balance > 0)
        {
            await account.TopUpAsync(balance, "test funding");
        }

        return accountId;
    }

    /// <summary>Issues a key with a fresh id; returns its id and secret.</summary>
    public async Task<(string KeyId, string Secret, ApiKeyCreated Created)> CreateKeyAsync(
        string accountId, IReadOnlyList<string> services, DateTimeOffset? expiresAt = null)
    {
        var keyId = TestIds.Key();
        var created = await Grains.GetGrain<IApiKeyGrain>(keyId).CreateAsync(new ApiKeySpec(accountId, "test key", services, expiresAt));
        var prefix = $"mk_{keyId}.";
        Assert.StartsWith(prefix, created.ApiKey, StringComparison.Ordinal);
        return (keyId, created.ApiKey[prefix.Length..], created);
    }

    /// <summary>
    /// Settles admitted calls the way the call pipeline does: their records go to a journal (in memory, shared with the
    /// silos' journal readers), which commits each at once and sends its settlement; returns once the grains have it.
    /// </summary>
    public async Task SettleThroughJournalAsync(string keyId, string serviceId, IEnumerable<AdmitResult> admitted, bool charge = true)
    {
        if (_journal is null)
        {
            _settlements = new SettlementBatcher(Grains, TimeProvider.System, Microsoft.Extensions.Logging.Abstractions.NullLogger<SettlementBatcher>.Instance);
            _journal = new MemoryJournal(_settlements, Microsoft.Extensions.Options.Options.Create(new MeteringOptions { SettleInterval = TimeSpan.Zero }),
                TimeProvider.System);
        }

        foreach (var call in admitted.Where(a => a.Outcome == AdmitOutcome.Admitted))
        {
            await _journal.WriteAsync(new CallRecord(Guid.CreateVersion7(), "settled", SharedTime.GetUtcNow(), call.AccountId, keyId, serviceId, "v1",
                CallOutcome.Succeeded, null, 200, 1, 1, call.Reserved, charge ? call.Reserved : 0, call.Currency, null, call.Reserved, call.Hold,
                call.WindowOffsetMinutes, call.Epoch), CancellationToken.None);
        }

        await _settlements!.DrainAsync();
    }

    private MemoryJournal? _journal;
    private SettlementBatcher? _settlements;

    /// <summary>Deactivates a grain's activation, so the next call reads its state back from storage.</summary>
    public static async Task DeactivateAsync(IAddressable grain) =>
        await grain.AsReference<IGrainManagementExtension>().DeactivateOnIdle();

    public sealed class SiloConfigurator : ISiloConfigurator
    {
        public void Configure(ISiloBuilder siloBuilder)
        {
            siloBuilder.AddMemoryGrainStorage(StorageNames.Marketplace);
            siloBuilder.Services.AddMarketplaceGrains();
            siloBuilder.Services.AddSingleton<TimeProvider>(SharedTime);
            siloBuilder.Services.Configure<SecretsOptions>(o => o.Key = SecretsKey);

            // Webhook tests receive on loopback and move the manual clock to make retries due.
            siloBuilder.Services.Configure<AlertOptions>(o =>
            {
                o.AllowPrivateNetworks = true;
                o.ClockCheckInterval = TimeSpan.FromMilliseconds(20);
            });

            // These tests pin down per-call reservations exactly; leasing has its own cluster (LeasingTests).
            siloBuilder.Services.Configure<MeteringOptions>(o => o.LeaseCalls = 0);
        }
    }
}

[CollectionDefinition(Name)]
public sealed class ClusterCollection : ICollectionFixture<ClusterFixture>
{
    public const string Name = "cluster";
}

/// <summary>Fresh ids that follow the marketplace's id rules.</summary>
internal static class TestIds
{
    public static string Account() => "acct-" + Guid.NewGuid().ToString("N");

    public static string Service() => "svc-" + Guid.NewGuid().ToString("N");

    public static string Provider() => "prov-" + Guid.NewGuid().ToString("N");

    public static string Key() => Guid.NewGuid().ToString("N");
}

/// <summary>Waits for the outcome of one-way calls: reads until a condition holds, a bounded number of times.</summary>
internal static class Poll
{
    public static async Task<T> UntilAsync<T>(Func<Task<T>> read, Func<T, bool> done)
    {
        var value = await read();
        for (var i = 0; i < 200 && !done(value); i++)
        {
            await Task.Delay(10, TestContext.Current.CancellationToken);
            value = await read();
        }

        return value;
    }
}
