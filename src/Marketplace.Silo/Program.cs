using Marketplace.Silo.Hosting;

try
{
    await using var host = await MarketplaceHost.StartAsync(args);
    await host.WaitForShutdownAsync();
    return 0;
}
catch (Exception exception) when (exception is Microsoft.Extensions.Options.OptionsValidationException or Marketplace.Silo.Database.PostgresNotInstalledException or Marketplace.Silo.Database.MigrationException)
{
    await Console.Error.WriteLineAsync($"Marketplace cannot start: {exception.Message}");
    return 2;
}
