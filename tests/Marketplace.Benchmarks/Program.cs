using BenchmarkDotNet.Columns;
using BenchmarkDotNet.Configs;
using BenchmarkDotNet.Jobs;
using BenchmarkDotNet.Running;
using Marketplace.Benchmarks;

if (args is ["bare-proxy", ..])
{
    await BareProxy.RunAsync(args);
    return;
}

if (args is ["churn", ..])
{
    await Churn.RunAsync(args);
    return;
}

if (args is ["reports", ..])
{
    await ReportsBenchmark.RunAsync(args);
    return;
}

if (args is ["scale", ..])
{
    await ScaleBenchmark.RunAsync(args);
    return;
}

if (args is ["calllog", ..])
{
    await CallLogBenchmark.RunAsync(args);
    return;
}

if (args is ["journal-latency", ..])
{
    await JournalLatencyBenchmark.RunAsync(args);
    return;
}

if (args is ["probe", ..])
{
    await Probe.RunAsync(args);
    return;
}

// Every job (the default one, or --job short/medium/... from the command line) runs with the server GC,
// as the marketplace silo does (it is an ASP.NET Core app), and reports operations per second next to the mean.
var config = DefaultConfig.Instance
    .AddJob(Job.Default.WithGcServer(true).WithGcConcurrent(true).AsMutator())
    .AddColumn(StatisticColumn.OperationsPerSecond);

BenchmarkSwitcher.FromAssembly(typeof(AdmissionBenchmarks).Assembly).Run(args, config);
