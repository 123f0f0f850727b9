using BenchmarkDotNet.Attributes;

namespace Marketplace.Benchmarks;

/// <summary>
/// The grain half of a marketplace call, without HTTP and without the upstream: one synchronous
/// <see cref="IApiKeyGrain.AdmitAsync"/> (secret check, entitlement, <see cref="IAccountGrain.ReserveAsync"/>) and the
/// one-way settlement that <c>CallPipeline</c> sends after a successful upstream answer.
/// Each invocation runs <see cref="Operations"/> such operations, all at once or at most <see cref="BoundedInFlight"/>
/// at a time (see <see cref="AdmissionDriver"/>).
/// </summary>
[MemoryDiagnoser]
public class AdmissionBenchmarks
{
    /// <summary>Concurrent admit+settle operations per benchmark invocation.</summary>
    public const int Operations = 10_000;

    /// <summary>API keys the "many keys" cases spread their operations over.</summary>
    public const int KeyCount = 1_000;

    /// <summary>Operations in flight at once in the bounded cases.</summary>
    public const int BoundedInFlight = 100;

    private BenchSilo? _silo;
    private AdmissionDriver? _driver;

    /// <summary>
    /// False: admit, then the journal's batched settlements to the account and the key
    /// (<see cref="IAccountGrain.SettleBatchAsync"/>, <see cref="IApiKeyGrain.RecordBatchAsync"/>).
    /// True: a batch also waits until the data service has counted every call.
    /// </summary>
    [Params(false, true)]
    public bool RecordOnService { get; set; }

    [GlobalSetup]
    public async Task SetupAsync()
    {
        _silo = await BenchSilo.StartAsync(KeyCount);
        _driver = new AdmissionDriver(_silo, RecordOnService);
    }

    [GlobalCleanup]
    public async Task CleanupAsync()
    {
        if (_silo is not null)
        {
            await _silo.DisposeAsync();
            _silo = null;
        }
    }

    /// <summary>10,000 operations started at once, spread round-robin over 1,000 keys of one account.</summary>
    [Benchmark(OperationsPerInvoke = Operations)]
    public Task ManyKeys_AllAtOnce() => Driver.RunBatchAsync(KeyCount, Operations, Operations);

    /// <summary>10,000 operations started at once on a single key.</summary>
    [Benchmark(OperationsPerInvoke = Operations)]
    public Task OneKey_AllAtOnce() => Driver.RunBatchAsync(1, Operations, Operations);

    /// <summary>10,000 operations over 1,000 keys, at most <see cref="BoundedInFlight"/> in flight (like a front door with that many requests open).</summary>
    [Benchmark(OperationsPerInvoke = Operations)]
    public Task ManyKeys_Bounded() => Driver.RunBatchAsync(KeyCount, Operations, BoundedInFlight);

    /// <summary>10,000 operations on a single key, at most <see cref="BoundedInFlight"/> in flight.</summary>
    [Benchmark(OperationsPerInvoke = Operations)]
    public Task OneKey_Bounded() => Driver.RunBatchAsync(1, Operations, BoundedInFlight);

    private AdmissionDriver Driver => _driver ?? throw new InvalidOperationException("Not set up.");
}
