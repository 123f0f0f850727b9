using Marketplace.Client;
using Marketplace.Silo.Tests.Infrastructure;
using Microsoft.AspNetCore.Builder;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Npgsql;

namespace Marketplace.Silo.Tests.Cluster;

/// <summary>
/// A real cluster of separate processes on one PostgreSQL: two silos (<c>Host:Role=silo</c>) and one front door
/// (<c>Host:Role=frontdoor</c>, an Orleans client of the silos), before the sample provider; and an internal .NET client
/// (<see cref="MarketplaceClient"/>) in the test process, connected to the same cluster through the membership table.
/// </summary>
public sealed class RolesClusterFixture(PostgresFixture postgres) : IAsyncLifetime
{
    private WebApplication? _provider;
    private IHost? _clientHost;

    public string ConnectionString { get; private set; } = null!;

    public string ClusterId { get; } = "roles-" + Guid.NewGuid().ToString("N")[..8];

    public SiloProcess SiloA { get; private set; } = null!;

    public SiloProcess SiloB { get; private set; } = null!;

    public SiloProcess FrontDoor { get; private set; } = null!;

    /// <summary>The front door with the admin key.</summary>
    public HttpClient Admin { get; private set; } = null!;

    public AdminApi Api { get; private set; } = null!;

    /// <summary>The internal client's typed calls.</summary>
    public MarketplaceClient Client { get; private set; } = null!;

    public async ValueTask InitializeAsync()
    {
        _provider = await TestHosts.StartProviderAsync();
        ConnectionString = await postgres.CreateDatabaseAsync("roles");

        // The first silo creates the cluster; the second silo and the front door join it at the same time.
        SiloA = new SiloProcess(ConnectionString, ClusterId, role: "silo", settings: Quiet);
        await SiloA.StartAsync();
        SiloB = new SiloProcess(ConnectionString, ClusterId, role: "silo", settings: Quiet);
        FrontDoor = new SiloProcess(ConnectionString, ClusterId, role: "frontdoor", settings: Quiet);
        await Task.WhenAll(SiloB.StartAsync(), FrontDoor.StartAsync());

        Admin = new HttpClient { BaseAddress = FrontDoor.BaseAddress, Timeout = TimeSpan.FromSeconds(30) };
        Admin.DefaultRequestHeaders.Add("X-Admin-Key", TestHosts.AdminKey);
        Api = new AdminApi(Admin, _provider.Urls.First());

        var builder = Host.CreateApplicationBuilder(new HostApplicationBuilderSettings { DisableDefaults = true });
        builder.AddMarketplaceClient(ConnectionString, ClusterId, ClusterId, connectTimeout: TimeSpan.FromSeconds(60));
        _clientHost = builder.Build();
        await _clientHost.StartAsync();
        Client = _clientHost.Services.GetRequiredService<MarketplaceClient>();
    }

    /// <summary>Settings that keep the processes' logs short.</summary>
    public static IReadOnlyDictionary<string, string> Quiet { get; } = new Dictionary<string, string>
    {
        ["Serilog:MinimumLevel:Default"] = "Warning",
    };

    /// <summary>Call-log rows of a data service, polled until there are <paramref name="expected"/> of them (or a deadline).</summary>
    public static async Task<List<CallLogRow>> WaitForCallLogAsync(string connectionString, string serviceId, int expected, TimeSpan? within = null)
    {
        var deadline = DateTime.UtcNow + (within ?? TimeSpan.FromSeconds(20));
        while (true)
        {
            var rows = await ReadCallLogAsync(connectionString, serviceId);
            if (rows.Count >= expected || DateTime.UtcNow > deadline)
            {
                return rows;
            }

            await Task.Delay(50);
        }
    }

    public static async Task<List<CallLogRow>> ReadCallLogAsync(string connectionString, string serviceId)
    {
        await using var connection = new NpgsqlConnection(connectionString);
        await connection.OpenAsync();
        await using var command = new NpgsqlCommand(
            "SELECT track_id, outcome, rejection, charged FROM marketplace_call_log WHERE service_id = @service", connection);
        command.Parameters.AddWithValue("service", serviceId);
        var rows = new List<CallLogRow>();
        await using var reader = await command.ExecuteReaderAsync();
        while (await reader.ReadAsync())
        {
            rows.Add(new CallLogRow(reader.GetString(0), reader.GetString(1), reader.IsDBNull(2) ? null : reader.GetString(2), reader.GetInt64(3)));
        }

        return rows;
    }

    public async ValueTask DisposeAsync()
    {
        Admin?.Dispose();
        if (_clientHost is not null)
        {
            await _clientHost.StopAsync();
            _clientHost.Dispose();
        }

        // The front door first, so its last settlements reach the silos; then the silos.
        if (FrontDoor is not null)
        {
            await FrontDoor.DisposeAsync();
        }

        await Task.WhenAll(new[] { SiloA, SiloB }.Where(silo => silo is not null).Select(silo => silo.DisposeAsync().AsTask()));
        if (_provider is not null)
        {
            await _provider.DisposeAsync();
        }
    }
}

public sealed record CallLogRow(string TrackId, string Outcome, string? Rejection, long Charged);
