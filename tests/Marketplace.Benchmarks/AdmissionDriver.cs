namespace Marketplace.Benchmarks;

/// <summary>
/// Runs batches of concurrent admit+settle operations against a <see cref="BenchSilo"/>, the way <c>CallPipeline</c>
/// drives the grains for a call whose upstream answered 2xx.
/// </summary>
internal sealed class AdmissionDriver(BenchSilo silo, bool recordOnService)
{
    private readonly IAccountGrain _account = silo.Grains.GetGrain<IAccountGrain>(silo.AccountId);
    private readonly IDataServiceGrain _service = silo.Grains.GetGrain<IDataServiceGrain>(BenchSilo.ServiceId);
    private readonly Marketplace.Grains.MemoryJournal _journal =
        Microsoft.Extensions.DependencyInjection.ServiceProviderServiceExtensions.GetRequiredService<Marketplace.Grains.MemoryJournal>(silo.Services);
    private readonly bool _leasing = Microsoft.Extensions.DependencyInjection.ServiceProviderServiceExtensions
        .GetRequiredService<Microsoft.Extensions.Options.IOptions<Marketplace.Grains.MeteringOptions>>(silo.Services).Value.LeaseCalls > 0;
    private long _issued;

    /// <summary>
    /// Runs <paramref name="operations"/> operations spread round-robin over the first <paramref name="keys"/> keys,
    /// at most <paramref name="inFlight"/> at a time (= <paramref name="operations"/>: all started at once), and returns
    /// when every admission has answered and the account (and the service, when recorded) has counted every
    /// settlement, so the time includes the metering work, not only the admissions.
    /// </summary>
    public async Task RunBatchAsync(int keys, int operations, int inFlight)
    {
        var next = -1;
        var workers = new Task[Math.Min(inFlight, operations)];
        for (var w = 0; w < workers.Length; w++)
        {
            workers[w] = inFlight >= operations
                ? AdmitAndSettleAsync(w % keys)
                : WorkAsync();
        }

        await Task.WhenAll(workers);
        _issued += operations;

        // Send the last partial batch now rather than at the next tick, so the figure is not the tick's length.
        _journal.Flush();
        await DrainAsync();

        async Task WorkAsync()
        {
            int i;
            while ((i = Interlocked.Increment(ref next)) < operations)
            {
                await AdmitAndSettleAsync(i % keys);
            }
        }
    }

    private async Task AdmitAndSettleAsync(int keyIndex)
    {
        var (key, request) = silo.Keys[keyIndex];
        var admission = await key.AdmitAsync(request);
        if (admission.Outcome != AdmitOutcome.Admitted)
        {
            throw new InvalidOperationException($"Admission refused: {admission.Outcome} (available {admission.Available}).");
        }

        // As CallPipeline does after a 2xx upstream answer: the call's record goes to the journal, whose batch (every
        // Metering:SettleInterval here) then charges the reservation and counts the call, one message per account, key and service.
        await _journal.WriteAsync(new Marketplace.Grains.CallRecord(Guid.CreateVersion7(), "bench", DateTimeOffset.UtcNow, silo.AccountId,
            key.GetPrimaryKeyString(), request.ServiceId, "v1", CallOutcome.Succeeded, null, 200, 1, 1, admission.Reserved, admission.Reserved,
            admission.Currency, null, admission.Reserved, admission.Hold, admission.WindowOffsetMinutes), CancellationToken.None);
    }

    private async Task DrainAsync()
    {
        for (var attempt = 0; ; attempt++)
        {
            var account = await _account.GetAsync() ?? throw new InvalidOperationException("The account is gone.");
            var serviceDone = !recordOnService || (await _service.GetAsync())?.Counters.Calls >= _issued;
            if (account.Usage.Calls >= _issued && serviceDone)
            {
                // With leasing on, keys keep allowance reserved between batches (that is the point of it).
                if (account.Reserved != 0 && !_leasing)
                {
                    throw new InvalidOperationException($"{account.Reserved} still reserved after every call settled.");
                }

                return;
            }

            if (attempt > 60_000)
            {
                throw new TimeoutException($"Settlements did not arrive: the account counted {account.Usage.Calls} of {_issued} calls.");
            }

            await Task.Delay(1);
        }
    }
}
