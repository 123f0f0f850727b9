using Marketplace.Silo.Hosting;
using Marketplace.SampleProvider;
using Microsoft.AspNetCore.Builder;
using Microsoft.Extensions.Configuration;

namespace Marketplace.Silo.Tests.Infrastructure;

public static class TestHosts
{
    public const string AdminKey = "test-admin-key-0123456789";

    /// <summary>Starts a marketplace on loopback with its own ports and cluster, against <paramref name="connectionString"/>.</summary>
    public static Task<MarketplaceHost> StartMarketplaceAsync(string connectionString, string clusterId, IDictionary<string, string?>? settings = null)
    {
        var values = new Dictionary<string, string?>
        {
            ["ConnectionStrings:Marketplace"] = connectionString,
            ["Marketplace:AdminKey"] = AdminKey,
            ["Silo:ClusterId"] = clusterId,
            ["Silo:ServiceId"] = clusterId,
            ["Silo:SiloPort"] = Ports.Free().ToString(System.Globalization.CultureInfo.InvariantCulture),
            ["Silo:GatewayPort"] = Ports.Free().ToString(System.Globalization.CultureInfo.InvariantCulture),
            ["Serilog:MinimumLevel:Default"] = "Warning",
        };
        foreach (var (key, value) in settings ?? new Dictionary<string, string?>())
        {
            values[key] = value;
        }

        return MarketplaceHost.StartAsync(["--urls", "http://127.0.0.1:0"], builder => builder.Configuration.AddInMemoryCollection(values));
    }

    /// <summary>Starts the sample provider on a free loopback port.</summary>
    public static async Task<WebApplication> StartProviderAsync()
    {
        var app = SampleProviderApp.Build(["--urls", "http://127.0.0.1:0", "--Logging:LogLevel:Default=Warning"]);
        await app.StartAsync();
        return app;
    }
}
