using System.Diagnostics;
using System.Globalization;
using System.Net.Http.Json;
using System.Text.Json;
using Marketplace.Silo.Tests.Infrastructure;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Npgsql;
using Orleans.Configuration;

namespace Marketplace.Silo.Tests.Faults;

/// <summary>
/// A cluster of real host processes on one database: start, replace a member on the same ports, and read the
/// membership table the way the survivors' silos write it. Each process is silo and front door (role <c>all</c>), or,
/// when front doors are asked for, the silos run role <c>silo</c> and the front doors are separate processes
/// (role <c>frontdoor</c>, Orleans clients of the silos).
/// </summary>
internal sealed class SiloCluster : IAsyncDisposable
{
    /// <summary><c>SiloStatus.Active</c> in the membership table.</summary>
    public const int Active = 3;

    /// <summary><c>SiloStatus.Dead</c> in the membership table.</summary>
    public const int Dead = 6;

    private readonly string _clusterId;
    private readonly TimeSpan? _writeBehindInterval;
    private readonly IReadOnlyDictionary<string, string> _settings;
    private readonly List<SiloProcess> _retired = [];

    private SiloCluster(string connectionString, string clusterId, TimeSpan? writeBehindInterval, IReadOnlyDictionary<string, string> settings, SiloProcess[] silos,
        SiloProcess[] frontDoors)
    {
        ConnectionString = connectionString;
        _clusterId = clusterId;
        _writeBehindInterval = writeBehindInterval;
        _settings = settings;
        Silos = silos;
        FrontDoors = frontDoors;
    }

    public string ConnectionString { get; }

    /// <summary>The current member in each slot (a replaced member's slot holds its successor).</summary>
    public SiloProcess[] Silos { get; }

    /// <summary>The separate front doors (role <c>frontdoor</c>); empty when every silo is its own front door.</summary>
    public SiloProcess[] FrontDoors { get; }

    private IEnumerable<SiloProcess> Everyone => FrontDoors.Concat(Silos).Concat(_retired);

    /// <summary>
    /// Starts <paramref name="count"/> silos: the first alone (it applies the migrations), then the rest together; then,
    /// once they are active, <paramref name="frontDoors"/> separate front doors together (none: each silo is a front door too).
    /// </summary>
    public static async Task<SiloCluster> StartAsync(PostgresFixture postgres, string prefix, int count, TimeSpan? writeBehindInterval = null,
        IReadOnlyDictionary<string, string>? settings = null, int frontDoors = 0)
    {
        var connectionString = await postgres.CreateDatabaseAsync(prefix);
        var clusterId = prefix + "-" + Guid.NewGuid().ToString("N")[..8];
        var merged = new Dictionary<string, string> { ["Serilog:MinimumLevel:Default"] = "Warning" };
        foreach (var (key, value) in settings ?? new Dictionary<string, string>())
        {
            merged[key] = value;
        }

        var siloRole = frontDoors > 0 ? "silo" : null;
        var silos = Enumerable.Range(0, count)
            .Select(_ => new SiloProcess(connectionString, clusterId, writeBehindInterval, settings: merged, role: siloRole)).ToArray();
        var doors = Enumerable.Range(0, frontDoors)
            .Select(_ => new SiloProcess(connectionString, clusterId, writeBehindInterval, settings: merged, role: "frontdoor")).ToArray();
        var cluster = new SiloCluster(connectionString, clusterId, writeBehindInterval, merged, silos, doors);
        try
        {
            await silos[0].StartAsync(TestContext.Current.CancellationToken);
            await Task.WhenAll(silos.Skip(1).Select(silo => silo.StartAsync(TestContext.Current.CancellationToken)));
            await cluster.WaitForActiveAsync(count, TimeSpan.FromSeconds(30));

            // A front door is ready once it holds a gateway connection; with every silo active it sees them all.
            await Task.WhenAll(doors.Select(door => door.StartAsync(TestContext.Current.CancellationToken)));
        }
        catch
        {
            await cluster.DisposeAsync();
            throw;
        }

        return cluster;
    }

    /// <summary>Starts a new process in <paramref name="slot"/> on the same ports as the one there (which must have exited).</summary>
    public async Task<SiloProcess> ReplaceAsync(int slot)
    {
        var old = Silos[slot];
        if (!old.HasExited)
        {
            throw new InvalidOperationException($"Silo {slot} is still running.");
        }

        var next = new SiloProcess(ConnectionString, _clusterId, _writeBehindInterval, old.SiloPort, old.GatewayPort, old.HttpPort, _settings, old.Role);
        _retired.Add(old);
        Silos[slot] = next;
        await next.StartAsync(TestContext.Current.CancellationToken);
        return next;
    }

    /// <summary>The status of the newest generation of the silo on <paramref name="siloPort"/> in the membership table.</summary>
    public async Task<int?> StatusAsync(int siloPort)
    {
        await using var connection = new NpgsqlConnection(ConnectionString);
        await connection.OpenAsync();
        await using var command = new NpgsqlCommand(
            "SELECT status FROM orleans_membership WHERE deployment_id = @cluster AND port = @port ORDER BY generation DESC LIMIT 1", connection);
        command.Parameters.AddWithValue("cluster", _clusterId);
        command.Parameters.AddWithValue("port", siloPort);
        return await command.ExecuteScalarAsync() as int?;
    }

    /// <summary>Polls the membership table until the silo on <paramref name="siloPort"/> has <paramref name="status"/>; returns when that was seen.</summary>
    public async Task<TimeSpan?> WaitForStatusAsync(int siloPort, int status, Stopwatch clock, TimeSpan limit)
    {
        var deadline = clock.Elapsed + limit;
        while (clock.Elapsed < deadline)
        {
            if (await StatusAsync(siloPort) == status)
            {
                return clock.Elapsed;
            }

            await Task.Delay(20);
        }

        return null;
    }

    /// <summary>Waits until <paramref name="count"/> silos of the cluster are Active in the table.</summary>
    public async Task WaitForActiveAsync(int count, TimeSpan limit)
    {
        var clock = Stopwatch.StartNew();
        await using var connection = new NpgsqlConnection(ConnectionString);
        await connection.OpenAsync();
        await using var command = new NpgsqlCommand(
            "SELECT count(*) FROM orleans_membership WHERE deployment_id = @cluster AND status = @active", connection);
        command.Parameters.AddWithValue("cluster", _clusterId);
        command.Parameters.AddWithValue("active", Active);
        while ((long)(await command.ExecuteScalarAsync())! < count)
        {
            Assert.True(clock.Elapsed < limit, $"fewer than {count} silos active after {limit.TotalSeconds} s");
            await Task.Delay(50);
        }
    }

    /// <summary>
    /// The slot of the silo that hosts each grain (or -1 when it is not active), asked of the cluster through an Orleans
    /// client, so a test can aim a fault at the silo that holds the state it watches.
    /// </summary>
    public async Task<int[]> HostsAsync(Func<IGrainFactory, IAddressable[]> select)
    {
        var builder = Host.CreateApplicationBuilder(new HostApplicationBuilderSettings { DisableDefaults = true });
        builder.UseOrleansClient(client =>
        {
            client.Configure<ClusterOptions>(options =>
            {
                options.ClusterId = _clusterId;
                options.ServiceId = _clusterId;
            });
            client.UseAdoNetClustering(clustering =>
            {
                clustering.Invariant = "Npgsql";
                clustering.ConnectionString = ConnectionString;
            });
        });
        using var host = builder.Build();
        await host.StartAsync(TestContext.Current.CancellationToken);
        try
        {
            var factory = host.Services.GetRequiredService<IClusterClient>();
            var management = factory.GetGrain<IManagementGrain>(0);
            var grains = select(factory);
            var slots = new int[grains.Length];
            for (var i = 0; i < grains.Length; i++)
            {
                var address = await management.GetActivationAddress(grains[i]);
                slots[i] = address is null ? -1 : Array.FindIndex(Silos, silo => silo.SiloPort == address.Endpoint.Port);
            }

            return slots;
        }
        finally
        {
            await host.StopAsync(CancellationToken.None);
        }
    }

    /// <summary>
    /// Calls whose settlement for <paramref name="target"/> (an account, key or service id) a process reported as not
    /// delivered (the silo holding the grain went away with the batch, which it may or may not have applied).
    /// </summary>
    public long UndeliveredSettlements(string target)
    {
        var pattern = new System.Text.RegularExpressions.Regex(
            "Settlement of (\\d+) calls for " + System.Text.RegularExpressions.Regex.Escape(target) + " was not delivered");
        return Everyone
            .SelectMany(silo => pattern.Matches(silo.Output))
            .Sum(match => long.Parse(match.Groups[1].Value, CultureInfo.InvariantCulture));
    }

    /// <summary>The warning and error lines every process of the cluster wrote (current and replaced ones), for diagnostics.</summary>
    public string Problems(int maxLines = 40)
    {
        // An error line and the exception lines that follow it (up to the next log line).
        var lines = new List<string>();
        foreach (var silo in Everyone)
        {
            var label = silo.Role == "frontdoor" ? "front door " + silo.HttpPort.ToString(CultureInfo.InvariantCulture) : silo.SiloPort.ToString(CultureInfo.InvariantCulture);
            var following = 0;
            foreach (var line in silo.Output.Split('\n'))
            {
                var isLogLine = line.Contains(" INF] ", StringComparison.Ordinal) || line.Contains(" WRN] ", StringComparison.Ordinal) || line.Contains(" ERR] ", StringComparison.Ordinal) || line.Contains(" FTL] ", StringComparison.Ordinal);
                if (isLogLine)
                {
                    following = line.Contains(" ERR] ", StringComparison.Ordinal) || line.Contains(" FTL] ", StringComparison.Ordinal) ? 4 : 0;
                    if (line.Contains(" INF] ", StringComparison.Ordinal) || line.Contains("Watchdog", StringComparison.Ordinal))
                    {
                        continue;
                    }
                }
                else if (following-- <= 0)
                {
                    continue;
                }

                lines.Add($"[{label}] {line.TrimEnd()}");
            }
        }

        return string.Join('\n', lines.TakeLast(maxLines));
    }

    /// <summary>An admin client on the front door of <paramref name="slot"/>.</summary>
    public HttpClient Admin(int slot) => Admin(Silos[slot]);

    /// <summary>An admin client on <paramref name="frontDoor"/> (a silo of role <c>all</c> or a separate front door).</summary>
    public static HttpClient Admin(SiloProcess frontDoor)
    {
        var client = new HttpClient { BaseAddress = frontDoor.BaseAddress, Timeout = TimeSpan.FromSeconds(30) };
        client.DefaultRequestHeaders.Add("X-Admin-Key", TestHosts.AdminKey);
        return client;
    }

    /// <summary>Reads an admin resource as JSON through the front door of <paramref name="slot"/>.</summary>
    public Task<JsonElement> GetJsonAsync(int slot, string path) => GetJsonAsync(Silos[slot], path);

    /// <summary>Reads an admin resource as JSON through <paramref name="frontDoor"/>.</summary>
    public static async Task<JsonElement> GetJsonAsync(SiloProcess frontDoor, string path)
    {
        using var admin = Admin(frontDoor);
        return (await admin.GetFromJsonAsync<JsonElement>(path)).Clone();
    }

    /// <summary>
    /// Reconciles every account with the journal (<c>/admin/reconciliation</c>, through a running front door: a separate one
    /// when there are, since silos with <c>Host:Role=silo</c> serve no HTTP API) until none differs or <paramref name="within"/>
    /// passed (settlements of the last batches may still be on their way); the last report.
    /// </summary>
    public Task<JsonElement> ReconcileEveryAccountAsync(TimeSpan within) =>
        ReconcileEveryAccountAsync(() => FrontDoors.Concat(Silos).First(process => !process.HasExited && !process.IsPaused), within);

    /// <summary>As <see cref="ReconcileEveryAccountAsync(TimeSpan)"/>, through the front door <paramref name="frontDoor"/> picks.</summary>
    public static async Task<JsonElement> ReconcileEveryAccountAsync(Func<SiloProcess> frontDoor, TimeSpan within)
    {
        var clock = Stopwatch.StartNew();
        while (true)
        {
            var report = await GetJsonAsync(frontDoor(), "/admin/reconciliation");
            if (report.GetProperty("consistent").GetBoolean() || clock.Elapsed > within)
            {
                return report;
            }

            await Task.Delay(100);
        }
    }

    public async ValueTask DisposeAsync()
    {
        // Separate front doors first, so their last settlements and call-log rows reach the silos and the database.
        await Task.WhenAll(FrontDoors.Select(door => door.DisposeAsync().AsTask()));

        // Frozen ones are killed, the rest stopped together (each waits for its own exit).
        await Task.WhenAll(Silos.Concat(_retired).Select(silo => silo.DisposeAsync().AsTask()));
    }
}
