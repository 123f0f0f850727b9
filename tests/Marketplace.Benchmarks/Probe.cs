using System.Diagnostics;

namespace Marketplace.Benchmarks;

/// <summary>
/// A quick look without BenchmarkDotNet (<c>dotnet run -c Release --project tests/Marketplace.Benchmarks -- probe</c>):
/// admit+settle calls per second on one silo for a few batch sizes, over many keys and over one key.
/// Rough figures, one process, no statistics; use the BenchmarkDotNet suite for numbers to quote.
/// </summary>
internal static class Probe
{
    public static async Task RunAsync(string[] args)
    {
        var seconds = args.Length > 1 && int.TryParse(args[1], out var s) ? s : 5;
        await using var silo = await BenchSilo.StartAsync(AdmissionBenchmarks.KeyCount);
        var driver = new AdmissionDriver(silo, recordOnService: true);
        Console.WriteLine("All operations of a batch started at once; RecordOnService=true.");
        Console.WriteLine($"{"keys",6} {"batch",7} {"calls/s",10} {"mean batch ms",14}");
        foreach (var keys in new[] { AdmissionBenchmarks.KeyCount, 1 })
        {
            foreach (var batch in new[] { 1, 10, 100, 1_000, 10_000 })
            {
                // Warm up, then measure for the given time.
                await driver.RunBatchAsync(keys, batch, batch);
                var watch = Stopwatch.StartNew();
                long calls = 0;
                var batches = 0;
                while (watch.Elapsed < TimeSpan.FromSeconds(seconds))
                {
                    await driver.RunBatchAsync(keys, batch, batch);
                    calls += batch;
                    batches++;
                }

                Console.WriteLine($"{keys,6} {batch,7} {calls / watch.Elapsed.TotalSeconds,10:N0} {watch.Elapsed.TotalMilliseconds / batches,14:N2}");
            }
        }
    }
}
