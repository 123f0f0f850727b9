using Marketplace.Grains;
using Microsoft.Extensions.Options;

namespace Marketplace.Silo.Hosting;

/// <summary>Loads the demo catalog at start: the sample provider's three services, a demo consumer with a balance and a key.</summary>
public sealed partial class DemoCatalog(IGrainFactory grains, IOptions<DemoOptions> options, ILogger<DemoCatalog> logger) : IHostedService
{
    /// <summary>The demo provider's id.</summary>
    public const string ProviderId = "demo-provider";

    /// <summary>The demo consumer's account id.</summary>
    public const string AccountId = "demo";

    /// <summary>What the demo account starts with: 100.00 EUR.</summary>
    public const long StartingBalance = 10_000;

    /// <inheritdoc />
    public async Task StartAsync(CancellationToken cancellationToken)
    {
        var demo = options.Value;
        if (!demo.Enabled)
        {
            return;
        }

        var baseUrl = demo.ProviderBaseUrl.TrimEnd('/');
        await grains.GetGrain<IProviderGrain>(ProviderId).UpsertAsync(new ProviderSpec("Demo Data Co.", "data@demo.invalid"));
        await UpsertService("phone-verify", "Phone number verification", "telecom", $"{baseUrl}/phone", 5, "Is a phone number valid, which carrier, which line type.");
        await UpsertService("ip-geo", "IP geolocation", "network", $"{baseUrl}/ip", 2, "Country, city, coordinates and network of an IP address.");
        await UpsertService("device-risk", "Device risk score", "risk", $"{baseUrl}/device", 8, "A 0-100 risk score with the signals behind it.");

        var account = grains.GetGrain<IAccountGrain>(AccountId);
        if (await account.GetAsync() is null)
        {
            await account.CreateAsync(new AccountSpec("Demo consumer", "EUR", 0));
            await account.TopUpAsync(StartingBalance, "demo starting balance");
        }

        if (demo.ApiKey is { } apiKey && ApiKeySecrets.TryParse(apiKey, out var keyId, out var secret))
        {
            var key = grains.GetGrain<IApiKeyGrain>(keyId);
            if (await key.GetAsync() is null)
            {
                await key.CreateAsync(new ApiKeySpec(AccountId, "demo key", ["phone-verify", "ip-geo", "device-risk"], null), secret);
            }
        }
        else if (demo.ApiKey is not null)
        {
            LogBadDemoKey(logger);
        }

        LogLoaded(logger, baseUrl);
    }

    /// <inheritdoc />
    public Task StopAsync(CancellationToken cancellationToken) => Task.CompletedTask;

    private Task<DataServiceInfo> UpsertService(string id, string name, string category, string upstream, long price, string description) =>
        grains.GetGrain<IDataServiceGrain>(id).UpsertAsync(new DataServiceSpec(name, ProviderId, upstream, price, "EUR", description, 5_000,
            Category: category, Status: ServiceStatus.Published));

    [LoggerMessage(Level = LogLevel.Information, Message = "Demo catalog loaded: provider demo-provider at {BaseUrl}, services phone-verify, ip-geo, device-risk, account demo")]
    private static partial void LogLoaded(ILogger logger, string baseUrl);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Demo:ApiKey is not of the form mk_<keyId>.<secret>; no demo key was created")]
    private static partial void LogBadDemoKey(ILogger logger);
}
