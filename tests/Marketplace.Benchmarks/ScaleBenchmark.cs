using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Net.Http.Json;
using System.Net.Sockets;
using System.Text;
using Marketplace.Grains;
using Marketplace.Silo.Database;
using Marketplace.Silo.Hosting;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Orleans.Storage;

namespace Marketplace.Benchmarks;

/// <summary>
/// <c>scale</c>: a marketplace (the real host: embedded PostgreSQL, silo, front door) with a million API keys and 400 data
/// services in its database, then memory per active key grain, activation time of a cold key, and throughput with calls
/// spread over every key (and over the activated keys) against the same load on a few warm keys.
/// </summary>
/// <remarks>
/// Provider and services are created through the admin API. Accounts, keys and the registry row are written as stored grain
/// state through the host's own grain storage provider (<see cref="IGrainStorage"/>, the code the grains persist with), in the
/// shape the grains' own create calls leave: key state with a salted secret hash, entitlements and the account it spends from;
/// account state with its balance, a ledger entry and its key ids. Creating a million keys through <c>CreateAsync</c> would
/// cost two durable writes each and rewrite the account's growing key list every time. Every key the benchmark then calls is
/// read by the real grains from those rows; a call that is not answered 200 fails the run.
/// </remarks>
public static class ScaleBenchmark
{
    private const string AdminKey = "scale-admin-key-0123456789abcdef";
    private const string Currency = "EUR";
    private const long Funding = 1_000_000_000_000;
    private const int EntitledServices = 4;

    private sealed record Settings(int Keys, int Services, int Active, int KeysPerAccount, int ColdSamples, int Rounds, int Duration,
        int Connections, int Threads, int WarmKeys, string? DataDirectory)
    {
        public int Accounts => (Keys + KeysPerAccount - 1) / KeysPerAccount;

        public static Settings FromEnvironment() => new(
            Int("KEYS", 1_000_000), Int("SERVICES", 400), Int("ACTIVE", 100_000), Int("KEYS_PER_ACCOUNT", 100), Int("COLD", 1_000),
            Int("ROUNDS", 3), Int("DURATION", 10), Int("CONNECTIONS", 8), Int("THREADS", 2), Int("WARM_KEYS", 8),
            Environment.GetEnvironmentVariable("SCALE_DATA") is { Length: > 0 } data ? Path.GetFullPath(data) : null);

        private static int Int(string name, int fallback) =>
            Environment.GetEnvironmentVariable(name) is { Length: > 0 } value ? int.Parse(value, CultureInfo.InvariantCulture) : fallback;
    }

    /// <summary><c>scale</c>; settings from the environment: KEYS, SERVICES, ACTIVE, KEYS_PER_ACCOUNT, COLD, ROUNDS, DURATION, CONNECTIONS, THREADS, WARM_KEYS, SCALE_DATA.</summary>
    public static async Task RunAsync(string[] args)
    {
        _ = args;
        var settings = Settings.FromEnvironment();
        if (settings.Keys - settings.Active < 2 || settings.Active < settings.WarmKeys || settings.Keys > 9_999_999 || settings.Services is < 1 or > 9_999)
        {
            // The cold-activation samples are keys beyond the first ACTIVE (two per sample: one warms the path first).
            Console.Error.WriteLine("scale: need WARM_KEYS <= ACTIVE <= KEYS - 2, KEYS <= 9,999,999 and 1 <= SERVICES <= 9,999");
            Environment.Exit(2);
        }

        var started = Stopwatch.StartNew();
        Console.WriteLine($"== scale: {settings}");
        Console.WriteLine($"   {DateTime.UtcNow:yyyy-MM-ddTHH:mm:ssZ}  {Environment.ProcessorCount} cores  load at start: {LoadAverage()}  server GC: {System.Runtime.GCSettings.IsServerGC}");
        Console.WriteLine($"   repeat: KEYS={settings.Keys} SERVICES={settings.Services} ACTIVE={settings.Active} KEYS_PER_ACCOUNT={settings.KeysPerAccount} " +
                          $"COLD={settings.ColdSamples} ROUNDS={settings.Rounds} DURATION={settings.Duration} CONNECTIONS={settings.Connections} " +
                          $"THREADS={settings.Threads} WARM_KEYS={settings.WarmKeys}{(settings.DataDirectory is null ? "" : " SCALE_DATA=" + settings.DataDirectory)} " +
                          "dotnet run -c Release --project tests/Marketplace.Benchmarks -- scale");

        var temp = Directory.CreateTempSubdirectory("mk-scale-");
        if (!OperatingSystem.IsWindows())
        {
            File.SetUnixFileMode(temp.FullName, (UnixFileMode)0b111_101_101); // the embedded PostgreSQL runs as postgres when we are root
        }
        var dataDirectory = settings.DataDirectory ?? Path.Combine(temp.FullName, "pg");
        if (settings.DataDirectory is not null && Directory.Exists(settings.DataDirectory) && !File.Exists(Marker(settings.DataDirectory)))
        {
            Console.Error.WriteLine($"scale: {settings.DataDirectory} exists but was not fully seeded by this benchmark; remove it or choose another SCALE_DATA");
            Environment.Exit(2);
        }

        await using var upstream = await StartUpstreamAsync();
        var url = $"http://127.0.0.1:{FreePort()}";
        var host = await MarketplaceHost.StartAsync(
        [
            "--urls", url,
            $"--Marketplace:AdminKey={AdminKey}",
            $"--Database:Embedded:DataDirectory={dataDirectory}",
            $"--Database:Embedded:Port={FreePort()}",
            $"--Silo:SiloPort={FreePort()}",
            $"--Silo:GatewayPort={FreePort()}",
            "--Serilog:MinimumLevel:Default=Warning",
        ]);
        var results = new List<(string Name, string Value)>();
        try
        {
            using var admin = new HttpClient { BaseAddress = new Uri(url), Timeout = TimeSpan.FromSeconds(60) };
            admin.DefaultRequestHeaders.Add("X-Admin-Key", AdminKey);
            var upstreamUrl = upstream.Urls.First();

            var seeded = await SeedAsync(host, admin, upstreamUrl, settings, dataDirectory, results);
            using var caller = new HttpClient(new SocketsHttpHandler { UseProxy = false, UseCookies = false }) { BaseAddress = new Uri(url) };

            // Proof that the grains read the written rows: the first and the last key answer a call.
            await CallOkAsync(caller, 0, settings);
            await CallOkAsync(caller, settings.Keys - 1, settings);
            Console.WriteLine($"   keys 0 and {settings.Keys - 1} answered 200 through the front door{(seeded ? "" : " (database reused)")}");

            await MeasureMemoryAsync(host, settings, results);
            await MeasureActivationAsync(host, caller, settings, results);
            await MeasureThroughputAsync(host, url, temp.FullName, settings, results);
        }
        finally
        {
            await host.DisposeAsync();
            if (Environment.GetEnvironmentVariable("KEEP_TMP") != "1")
            {
                try
                {
                    temp.Delete(recursive: true);
                }
                catch (IOException)
                {
                    // The embedded server may still be releasing files; the temp dir is harmless.
                }
            }
        }

        Console.WriteLine();
        Console.WriteLine($"== Summary ({settings.Keys:N0} keys, {settings.Services:N0} services, {settings.Accounts:N0} accounts; load at end: {LoadAverage()}; total {started.Elapsed.TotalMinutes:F1} min)");
        var width = results.Max(r => r.Name.Length);
        foreach (var (name, value) in results)
        {
            Console.WriteLine($"   {name.PadRight(width)}  {value}");
        }
    }

    // ---------------------------------------------------------------------------------------------------------------
    // Seeding
    // ---------------------------------------------------------------------------------------------------------------

    private static string KeyId(int i) => $"sk{i:D7}";

    private static string Secret(int i) => $"scale-secret-{i:D7}";

    private static string AccountId(int a) => $"scale-acct-{a:D6}";

    private static string ServiceId(int s) => $"svc-{s:D4}";

    private static int EntitledCount(Settings settings) => Math.Min(EntitledServices, settings.Services);

    // Key i may call services i, i + step, i + 2 step, ... (mod SERVICES); the wrk script picks among the same ones.
    private static List<string> Entitlements(int i, Settings settings)
    {
        var count = EntitledCount(settings);
        var step = settings.Services / count;
        return [.. Enumerable.Range(0, count).Select(j => ServiceId((i + j * step) % settings.Services))];
    }

    private static async Task<bool> SeedAsync(MarketplaceHost host, HttpClient admin, string upstreamUrl, Settings settings, string dataDirectory,
        List<(string, string)> results)
    {
        // A kept database (SCALE_DATA) is reused when it was seeded with the same shape.
        var marker = Marker(dataDirectory);
        var shape = $"keys={settings.Keys} services={settings.Services} keysPerAccount={settings.KeysPerAccount}";
        if (File.Exists(marker) && (await File.ReadAllTextAsync(marker)).Trim() is var seededShape && seededShape != shape)
        {
            throw new InvalidOperationException($"{settings.DataDirectory} was seeded with {seededShape}, not {shape}; choose another SCALE_DATA.");
        }

        if (File.Exists(marker))
        {
            // The upstream's port changed since: point every service at this run's upstream.
            await UpsertServicesAsync(admin, upstreamUrl, settings);
            results.Add(("seeding", "reused the database of an earlier run (" + shape + ")"));
            return false;
        }

        var storage = host.App.Services.GetRequiredKeyedService<IGrainStorage>(StorageNames.Marketplace);
        var grains = host.Grains;
        var now = DateTimeOffset.UtcNow;

        // The registry lists the accounts; written before anything activates the registry grain, which then adds the
        // provider and services to this row when the admin API creates them.
        var registry = new RegistryState();
        for (var a = 0; a < settings.Accounts; a++)
        {
            registry.Accounts.Add(AccountId(a));
        }

        await storage.WriteStateAsync("registry", grains.GetGrain<IRegistryGrain>(IRegistryGrain.Default).GetGrainId(), new GrainState<RegistryState>(registry));

        var watch = Stopwatch.StartNew();
        await Send(admin.PostAsJsonAsync("/admin/providers", new { id = "scale-provider", name = "Scale provider" }));
        await UpsertServicesAsync(admin, upstreamUrl, settings);
        var servicesSeconds = watch.Elapsed.TotalSeconds;
        Console.WriteLine($"   {settings.Services} services created through the admin API in {servicesSeconds:F1} s");

        watch.Restart();
        await Parallel.ForEachAsync(Enumerable.Range(0, settings.Accounts), new ParallelOptions { MaxDegreeOfParallelism = 16 }, async (a, _) =>
        {
            var first = a * settings.KeysPerAccount;
            var last = Math.Min(settings.Keys, first + settings.KeysPerAccount);
            var state = new AccountState
            {
                Name = $"Scale consumer {a}",
                Currency = Currency,
                Balance = Funding,
                TotalToppedUp = Funding,
                KeyIds = [.. Enumerable.Range(first, last - first).Select(KeyId)],
                Ledger = [new BalanceEntry { At = now, Amount = Funding, Reason = "scale benchmark funding", BalanceAfter = Funding }],
                CreatedAt = now,
            };
            await storage.WriteStateAsync("account", grains.GetGrain<IAccountGrain>(AccountId(a)).GetGrainId(), new GrainState<AccountState>(state));
        });
        var accountsSeconds = watch.Elapsed.TotalSeconds;
        Console.WriteLine($"   {settings.Accounts:N0} account rows written in {accountsSeconds:F1} s");

        watch.Restart();
        var written = 0;
        using var progress = new Timer(_ => Console.WriteLine($"   ... {Volatile.Read(ref written):N0} key rows ({Volatile.Read(ref written) / watch.Elapsed.TotalSeconds:N0}/s)"),
            null, TimeSpan.FromSeconds(15), TimeSpan.FromSeconds(15));
        await Parallel.ForEachAsync(Enumerable.Range(0, settings.Keys), new ParallelOptions { MaxDegreeOfParallelism = 48 }, async (i, _) =>
        {
            // As ApiKeyGrain.CreateAsync leaves it: the secret only as salt + SHA-256 hash.
            var salt = ApiKeySecrets.NewSalt();
            var state = new ApiKeyState
            {
                AccountId = AccountId(i / settings.KeysPerAccount),
                Currency = Currency,
                Name = $"scale key {i}",
                Status = ApiKeyStatus.Active,
                Services = Entitlements(i, settings),
                CreatedAt = now,
                Limits = LimitsState.From(null),
                Secrets = [new SecretState { Id = ApiKeySecrets.NewTokenId(), Salt = salt, Hash = ApiKeySecrets.Hash(salt, Secret(i)), CreatedAt = now }],
            };
            await storage.WriteStateAsync("apikey", grains.GetGrain<IApiKeyGrain>(KeyId(i)).GetGrainId(), new GrainState<ApiKeyState>(state));
            Interlocked.Increment(ref written);
        });
        var keysSeconds = watch.Elapsed.TotalSeconds;
        Console.WriteLine($"   {settings.Keys:N0} key rows written in {keysSeconds:F1} s ({settings.Keys / keysSeconds:N0}/s)");
        results.Add(("seeding", $"{settings.Services} services via admin API {servicesSeconds:F1} s; {settings.Accounts:N0} account rows {accountsSeconds:F1} s; " +
                                $"{settings.Keys:N0} key rows {keysSeconds:F1} s ({settings.Keys / keysSeconds:N0}/s, grain storage provider, 48 in parallel)"));
        if (settings.DataDirectory is not null)
        {
            await File.WriteAllTextAsync(marker, shape);
        }

        return true;
    }

    private static string Marker(string dataDirectory) => dataDirectory.TrimEnd('/') + ".seeded";

    private static Task UpsertServicesAsync(HttpClient admin, string upstreamUrl, Settings settings) =>
        Parallel.ForEachAsync(Enumerable.Range(0, settings.Services), new ParallelOptions { MaxDegreeOfParallelism = 8 }, async (s, _) =>
            await Send(admin.PutAsJsonAsync($"/admin/services/{ServiceId(s)}", new
            {
                name = $"Scale service {s}", providerId = "scale-provider", upstreamBaseUrl = upstreamUrl + "/data", pricePerCall = 1,
                currency = Currency, category = "scale", status = "published", timeoutMs = 5000,
            })));

    // ---------------------------------------------------------------------------------------------------------------
    // Memory per active key grain
    // ---------------------------------------------------------------------------------------------------------------

    private static async Task MeasureMemoryAsync(MarketplaceHost host, Settings settings, List<(string, string)> results)
    {
        var management = host.Grains.GetGrain<IManagementGrain>(0);
        var before = await SnapshotAsync(management);
        var watch = Stopwatch.StartNew();
        var missing = 0;
        await Parallel.ForEachAsync(Enumerable.Range(0, settings.Active), new ParallelOptions { MaxDegreeOfParallelism = 64 }, async (i, _) =>
        {
            if (await host.Grains.GetGrain<IApiKeyGrain>(KeyId(i)).GetAsync() is null)
            {
                Interlocked.Increment(ref missing);
            }
        });
        var seconds = watch.Elapsed.TotalSeconds;
        if (missing > 0)
        {
            throw new InvalidOperationException($"{missing} of {settings.Active} keys did not find their stored state.");
        }

        var after = await SnapshotAsync(management);
        var activations = after.Activations - before.Activations;
        var heapPerKey = (after.Heap - before.Heap) / (double)settings.Active;
        var workingSetPerKey = (after.WorkingSet - before.WorkingSet) / (double)settings.Active;
        Console.WriteLine($"   activated {settings.Active:N0} keys (GetAsync, 64 in parallel) in {seconds:F1} s: {activations:N0} new activations; " +
                          $"GC heap {Mb(before.Heap)} -> {Mb(after.Heap)} MB, working set {Mb(before.WorkingSet)} -> {Mb(after.WorkingSet)} MB");
        results.Add(("memory per active key grain", $"{heapPerKey:N0} B GC heap, {workingSetPerKey:N0} B working set " +
                                                    $"({settings.Active:N0} keys activated: heap +{Mb(after.Heap - before.Heap)} MB, working set +{Mb(after.WorkingSet - before.WorkingSet)} MB)"));
        results.Add(("cold activation rate", $"{settings.Active / seconds:N0} keys/s (GetAsync on cold keys, 64 in parallel, state read from PostgreSQL)"));
    }

    private static async Task<(long Heap, long WorkingSet, int Activations)> SnapshotAsync(IManagementGrain management)
    {
        // Let write-behind timers and activations settle, then compact so the heap holds live objects only.
        for (var i = 0; i < 3; i++)
        {
            GC.Collect(GC.MaxGeneration, GCCollectionMode.Forced, blocking: true, compacting: true);
            GC.WaitForPendingFinalizers();
        }

        using var process = Process.GetCurrentProcess();
        return (GC.GetTotalMemory(forceFullCollection: true), process.WorkingSet64, await management.GetTotalActivationCount());
    }

    private static string Mb(long bytes) => (bytes / 1048576.0).ToString("N1", CultureInfo.InvariantCulture);

    // ---------------------------------------------------------------------------------------------------------------
    // Activation time: the first call of a cold key against its second call
    // ---------------------------------------------------------------------------------------------------------------

    private static async Task MeasureActivationAsync(MarketplaceHost host, HttpClient caller, Settings settings, List<(string, string)> results)
    {
        // Keys never touched so far: none of the first ACTIVE, none used twice. Their accounts may be cold too, as a
        // first call after a restart finds them.
        var random = new Random(42);
        var untouched = settings.Keys - settings.Active;
        var samples = Math.Min(settings.ColdSamples, untouched / 2);
        var picked = new HashSet<int>();
        while (picked.Count < samples * 2)
        {
            picked.Add(settings.Active + random.Next(untouched));
        }

        var list = picked.ToList();
        var httpKeys = list[..samples];
        var grainKeys = list[samples..];

        // Sequential, one call at a time: HTTP call through the whole pipeline (key activation, account activation when its
        // first key is called, upstream, call log), then the same key again.
        var coldHttp = new List<double>(samples);
        var warmHttp = new List<double>(samples);
        foreach (var i in httpKeys)
        {
            coldHttp.Add(await TimeAsync(() => CallOkAsync(caller, i, settings)));
            warmHttp.Add(await TimeAsync(() => CallOkAsync(caller, i, settings)));
        }

        // The key grain alone: GetAsync on a cold key (activation: read the row, deserialize, activate) and again.
        var coldGrain = new List<double>(samples);
        var warmGrain = new List<double>(samples);
        foreach (var i in grainKeys)
        {
            var key = host.Grains.GetGrain<IApiKeyGrain>(KeyId(i));
            coldGrain.Add(await TimeAsync(async () => _ = await key.GetAsync() ?? throw new InvalidOperationException($"key {i} has no state")));
            warmGrain.Add(await TimeAsync(async () => _ = await key.GetAsync()));
        }

        results.Add(("first call, cold key (HTTP)", $"p50 {P(coldHttp, 50):N0} µs, p99 {P(coldHttp, 99):N0} µs ({samples} keys, one at a time)"));
        results.Add(("second call, warm key (HTTP)", $"p50 {P(warmHttp, 50):N0} µs, p99 {P(warmHttp, 99):N0} µs  -> cold/warm p50 {P(coldHttp, 50) / P(warmHttp, 50):F2}x, p99 {P(coldHttp, 99) / P(warmHttp, 99):F2}x"));
        results.Add(("key grain activation (GetAsync)", $"cold p50 {P(coldGrain, 50):N0} µs, p99 {P(coldGrain, 99):N0} µs; warm p50 {P(warmGrain, 50):N0} µs, p99 {P(warmGrain, 99):N0} µs"));
    }

    private static async Task<double> TimeAsync(Func<Task> action)
    {
        var start = Stopwatch.GetTimestamp();
        await action();
        return Stopwatch.GetElapsedTime(start).TotalMicroseconds;
    }

    private static double P(List<double> values, int percentile)
    {
        var sorted = values.Order().ToList();
        return sorted[Math.Clamp((int)Math.Ceiling(percentile / 100.0 * sorted.Count) - 1, 0, sorted.Count - 1)];
    }

    private static async Task CallOkAsync(HttpClient caller, int i, Settings settings)
    {
        using var request = new HttpRequestMessage(HttpMethod.Get, $"/v1/call/{Entitlements(i, settings)[0]}/q?k={i}");
        request.Headers.Add("X-Api-Key", ApiKeySecrets.Format(KeyId(i), Secret(i)));
        using var response = await caller.SendAsync(request);
        if (response.StatusCode != HttpStatusCode.OK)
        {
            throw new InvalidOperationException($"key {KeyId(i)} answered {(int)response.StatusCode}: {await response.Content.ReadAsStringAsync()}");
        }

        await response.Content.CopyToAsync(Stream.Null);
    }

    // ---------------------------------------------------------------------------------------------------------------
    // Throughput: the same wrk load on a few warm keys, spread over the ACTIVE keys activated above, and spread over every
    // key (most of them cold), in alternating rounds
    // ---------------------------------------------------------------------------------------------------------------

    private static async Task MeasureThroughputAsync(MarketplaceHost host, string url, string temp, Settings settings, List<(string, string)> results)
    {
        var management = host.Grains.GetGrain<IManagementGrain>(0);
        var callLog = host.App.Services.GetRequiredService<CallLogWriter>();
        var spread = Path.Combine(temp, "spread.lua");
        var warm = Path.Combine(temp, "warm.lua");
        var active = Path.Combine(temp, "active.lua");
        await File.WriteAllTextAsync(spread, LuaScript(settings.Keys, settings));
        await File.WriteAllTextAsync(active, LuaScript(settings.Active, settings));
        await File.WriteAllTextAsync(warm, LuaScript(settings.WarmKeys, settings));

        Console.WriteLine($"   warm-up: 5 s on the {settings.WarmKeys} warm keys");
        await RunWrkAsync(url, warm, 5, settings);
        await using var database = Npgsql.NpgsqlDataSource.Create(host.ConnectionString);
        var rows = new List<(int Round, string Target, WrkResult Result, int Activations, long LogRows, DbStats Db)>();
        for (var round = 1; round <= settings.Rounds; round++)
        {
            foreach (var (target, script) in new[] { ("warm", warm), ("active", active), ("spread", spread) })
            {
                var activations = await management.GetTotalActivationCount();
                var logged = await SettledCallLogAsync(callLog);
                var db = await DbStatsAsync(database);
                var result = await RunWrkAsync(url, script, settings.Duration, settings);
                var newActivations = await management.GetTotalActivationCount() - activations;
                var logRows = await SettledCallLogAsync(callLog) - logged;
                db = (await DbStatsAsync(database)) - db;
                rows.Add((round, target, result, newActivations, logRows, db));
                Console.WriteLine($"   r{round} {target,-6} {result.Rps,9:N0} req/s  p50 {result.P50Us,6:N0} µs  p99 {result.P99Us,7:N0} µs  " +
                                  $"non-2xx {result.Bad}  new activations {newActivations,7:N0}  call-log rows {logRows:N0} for {result.Requests:N0} answered  " +
                                  $"db per call: {db.Commits / (double)result.Requests:F2} commits, {db.Fetched / (double)result.Requests:F1} rows read, " +
                                  $"{db.Updated / (double)result.Requests:F2} updated, {db.Inserted / (double)result.Requests:F2} inserted  load {LoadAverage()}");
                if (result.Bad > 0)
                {
                    throw new InvalidOperationException($"{result.Bad} failed responses in round {round} ({target}); the benchmark is invalid.");
                }
            }
        }

        double Median(string target, Func<WrkResult, double> value)
        {
            var sorted = rows.Where(r => r.Target == target).Select(r => value(r.Result)).Order().ToList();
            return sorted.Count % 2 == 1 ? sorted[sorted.Count / 2] : (sorted[sorted.Count / 2 - 1] + sorted[sorted.Count / 2]) / 2;
        }

        List<double> Ratios(string target) => [.. Enumerable.Range(1, settings.Rounds)
            .Select(r => rows.Single(x => x.Round == r && x.Target == target).Result.Rps / rows.Single(x => x.Round == r && x.Target == "warm").Result.Rps)];
        var ratios = Ratios("spread");
        var activeRatios = Ratios("active");
        var spreadActivations = rows.Where(r => r.Target == "spread").Select(r => (double)r.Activations / r.Result.Requests).Order().ToList();
        results.Add(($"throughput, {settings.WarmKeys} warm keys (wrk)", $"{Median("warm", r => r.Rps):N0} req/s, p50 {Median("warm", r => r.P50Us):N0} µs, p99 {Median("warm", r => r.P99Us):N0} µs"));
        results.Add(($"throughput, spread over the {settings.Active:N0} active keys", $"{Median("active", r => r.Rps):N0} req/s, p50 {Median("active", r => r.P50Us):N0} µs, p99 {Median("active", r => r.P99Us):N0} µs"));
        results.Add(($"throughput, spread over {settings.Keys:N0} keys", $"{Median("spread", r => r.Rps):N0} req/s, p50 {Median("spread", r => r.P50Us):N0} µs, p99 {Median("spread", r => r.P99Us):N0} µs; " +
                                                                         $"new activations per call {spreadActivations[spreadActivations.Count / 2]:F2}"));
        results.Add(("active / warm throughput", $"{activeRatios.Order().ElementAt(activeRatios.Count / 2):F2}x median (per round: {string.Join(", ", activeRatios.Select(r => r.ToString("F2", CultureInfo.InvariantCulture)))}); " +
                                                 $"p99 {Median("active", r => r.P99Us) / Median("warm", r => r.P99Us):F2}x"));
        results.Add(("spread / warm throughput", $"{ratios.Order().ElementAt(ratios.Count / 2):F2}x median (per round: {string.Join(", ", ratios.Select(r => r.ToString("F2", CultureInfo.InvariantCulture)))}); " +
                                                 $"p99 {Median("spread", r => r.P99Us) / Median("warm", r => r.P99Us):F2}x"));
        double DbMedian(string target, Func<DbStats, long> value) =>
            rows.Where(r => r.Target == target).Select(r => value(r.Db) / (double)r.Result.Requests).Order().ElementAt(rows.Count(r => r.Target == target) / 2);
        foreach (var target in new[] { "warm", "active", "spread" })
        {
            results.Add(($"database per call, {target}", $"{DbMedian(target, d => d.Commits):F2} commits, {DbMedian(target, d => d.Fetched):F1} rows read, " +
                                                        $"{DbMedian(target, d => d.Updated):F2} rows updated, {DbMedian(target, d => d.Inserted):F2} inserted (pg_stat_database, includes the call log and rollups)"));
        }

        results.Add(("call-log rows vs answered calls", string.Join("; ", rows.Select(r => $"r{r.Round} {r.Target} {r.LogRows - r.Result.Requests:+#;-#;0}")) +
                                                        $" (rows - wrk's count; calls in flight at the cut-off add up to {settings.Connections})"));
    }

    private readonly record struct DbStats(long Commits, long Fetched, long Updated, long Inserted)
    {
        public static DbStats operator -(DbStats a, DbStats b) => new(a.Commits - b.Commits, a.Fetched - b.Fetched, a.Updated - b.Updated, a.Inserted - b.Inserted);
    }

    // The database's own counters (PostgreSQL publishes a backend's counts when its transaction ends, at most once a second).
    private static async Task<DbStats> DbStatsAsync(Npgsql.NpgsqlDataSource database)
    {
        await Task.Delay(1100);
        await using var command = database.CreateCommand(
            "SELECT xact_commit, tup_fetched, tup_updated, tup_inserted FROM pg_stat_database WHERE datname = current_database()");
        await using var reader = await command.ExecuteReaderAsync();
        await reader.ReadAsync();
        return new DbStats(reader.GetInt64(0), reader.GetInt64(1), reader.GetInt64(2), reader.GetInt64(3));
    }

    private static async Task<long> SettledCallLogAsync(CallLogWriter callLog)
    {
        var last = -1L;
        for (var i = 0; i < 100; i++)
        {
            var now = callLog.Written;
            if (now == last && callLog.QueueLength == 0 && callLog.InFlight == 0)
            {
                return now;
            }

            last = now;
            await Task.Delay(300);
        }

        return callLog.Written;
    }

    private static string LuaScript(int keys, Settings settings)
    {
        var count = EntitledCount(settings);
        var step = settings.Services / count;
        return $$"""
            -- Each request: a random key among the first {{keys}}, one of the services it is entitled to.
            local counter = 0
            function setup(thread)
              counter = counter + 1
              thread:set("seed", counter * 7919)
            end
            function init(args)
              math.randomseed(os.time() + seed)
            end
            request = function()
              local i = math.random(0, {{keys}} - 1)
              local s = (i + math.random(0, {{count}} - 1) * {{step}}) % {{settings.Services}}
              local n = string.format("%07d", i)
              wrk.headers["X-Api-Key"] = "mk_sk" .. n .. ".scale-secret-" .. n
              return wrk.format("GET", string.format("/v1/call/svc-%04d/q", s))
            end
            done = function(summary, latency, requests)
              local e = summary.errors
              io.write(string.format("WRK_RESULT %d %d %d %d %d\n", summary.requests, summary.duration,
                latency:percentile(50), latency:percentile(99), e.status + e.connect + e.read + e.write + e.timeout))
            end
            """;
    }

    private sealed record WrkResult(long Requests, double Rps, double P50Us, double P99Us, long Bad);

    private static async Task<WrkResult> RunWrkAsync(string url, string script, int seconds, Settings settings)
    {
        var start = new ProcessStartInfo("wrk", $"-t{settings.Threads} -c{settings.Connections} -d{seconds}s -s {script} {url}")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
        };
        using var wrk = Process.Start(start) ?? throw new InvalidOperationException("wrk did not start (apt-get install wrk)");
        var output = await wrk.StandardOutput.ReadToEndAsync();
        var errors = await wrk.StandardError.ReadToEndAsync();
        await wrk.WaitForExitAsync();
        var line = output.Split('\n').FirstOrDefault(l => l.StartsWith("WRK_RESULT ", StringComparison.Ordinal))
            ?? throw new InvalidOperationException($"wrk gave no result: {output} {errors}");
        var f = line.Split(' ').Skip(1).Select(v => long.Parse(v, CultureInfo.InvariantCulture)).ToArray();
        return new WrkResult(f[0], f[0] / (f[1] / 1e6), f[2], f[3], f[4]);
    }

    // ---------------------------------------------------------------------------------------------------------------
    // Plumbing
    // ---------------------------------------------------------------------------------------------------------------

    // The services' upstream: a small fixed JSON answer, in this process (both loads call it the same way).
    private static async Task<WebApplication> StartUpstreamAsync()
    {
        var builder = WebApplication.CreateSlimBuilder();
        builder.Logging.ClearProviders();
        builder.WebHost.UseUrls($"http://127.0.0.1:{FreePort()}");
        var app = builder.Build();
        var body = Encoding.UTF8.GetBytes("""{"country":"US","city":"Mountain View","asn":15169}""");
        app.Run(async context =>
        {
            context.Response.ContentType = "application/json";
            context.Response.ContentLength = body.Length;
            await context.Response.Body.WriteAsync(body);
        });
        await app.StartAsync();
        return app;
    }

    private static async Task Send(Task<HttpResponseMessage> call)
    {
        using var response = await call;
        if (!response.IsSuccessStatusCode)
        {
            throw new InvalidOperationException($"{response.RequestMessage?.Method} {response.RequestMessage?.RequestUri} answered {(int)response.StatusCode}: {await response.Content.ReadAsStringAsync()}");
        }
    }

    private static string LoadAverage() => File.Exists("/proc/loadavg") ? string.Join(' ', File.ReadAllText("/proc/loadavg").Split(' ').Take(3)) : "?";

    private static int FreePort()
    {
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        return ((IPEndPoint)listener.LocalEndpoint).Port;
    }
}
