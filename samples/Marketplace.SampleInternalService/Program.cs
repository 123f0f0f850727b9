// An internal .NET service that calls the marketplace as an Orleans client: no HTTP, the same pipeline as HTTP callers
// (key check, entitlement, limits, quotas, balance, upstream call, charge, call log).
//
//   dotnet run --project samples/Marketplace.SampleInternalService -- \
//     --ConnectionStrings:Marketplace="Host=127.0.0.1;Port=55442;Username=marketplace;Database=marketplace" \
//     --ApiKey=mk_demo.demo-secret-0123456789abcdef
//
// Optional: --ClusterId=marketplace --ServiceId=marketplace (the silos' Silo:ClusterId and Silo:ServiceId).
using Marketplace;
using Marketplace.Client;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

var builder = Host.CreateApplicationBuilder(args);
builder.Logging.SetMinimumLevel(LogLevel.Warning);
var connectionString = builder.Configuration.GetConnectionString("Marketplace");
var apiKey = builder.Configuration["ApiKey"];
if (string.IsNullOrWhiteSpace(connectionString) || string.IsNullOrWhiteSpace(apiKey))
{
    Console.Error.WriteLine("Usage: Marketplace.SampleInternalService --ConnectionStrings:Marketplace=<PostgreSQL connection string> --ApiKey=mk_<keyId>.<secret>");
    return 2;
}

builder.AddMarketplaceClient(connectionString,
    builder.Configuration["ClusterId"] ?? MarketplaceClusterSettings.DefaultId,
    builder.Configuration["ServiceId"] ?? MarketplaceClusterSettings.DefaultId,
    connectTimeout: TimeSpan.FromSeconds(30));

using var host = builder.Build();
await host.StartAsync();

var marketplace = host.Services.GetRequiredService<MarketplaceClient>();
var calls = marketplace.WithKey(apiKey);
Print("phone-verify", await calls.GetAsync("phone-verify", "/verify?number=%2B4915112345678"));
Print("ip-geo", await calls.GetAsync("ip-geo", "/geo?ip=8.8.8.8"));
Print("device-risk", await calls.GetAsync("device-risk", "/risk?deviceId=sample-device-1"));

// A retry with the same Idempotency-Key is answered from the first call: no second upstream call, no second charge.
var idempotencyKey = "sample-" + Guid.NewGuid().ToString("N");
Print("phone-verify (first)", await calls.GetAsync("phone-verify", "/verify?number=%2B4930123456", idempotencyKey: idempotencyKey));
Print("phone-verify (retry)", await calls.GetAsync("phone-verify", "/verify?number=%2B4930123456", idempotencyKey: idempotencyKey));

// A wrong secret is refused by the same checks as over HTTP, and costs nothing.
Print("wrong key", await marketplace.CallAsync("phone-verify", "mk_demo.not-the-secret-0000000000", "/verify?number=%2B4915112345678"));

await host.StopAsync();
return 0;

static void Print(string label, CallResult result)
{
    var outcome = result.Rejection is { } rejection ? $"{result.Outcome} ({rejection})" : result.Outcome.ToString();
    var body = result.BodyText();
    if (body.Length > 100)
    {
        body = body[..100] + "...";
    }

    Console.WriteLine($"{label,-22} {outcome,-30} charged {result.Charged} {result.Currency ?? ""}{(result.Replayed ? " (replayed)" : "")}  TrackId {result.TrackId}");
    if (body.Length > 0)
    {
        Console.WriteLine($"{"",-22} {body}");
    }
}
