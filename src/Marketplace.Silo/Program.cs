using Marketplace.Silo.Hosting;

if (args is [ReconcileCommand.Verb, .. var rest])
{
    return await ReconcileCommand.RunAsync(rest, Console.Out, Console.Error);
}

try
{
    await using var host = await MarketplaceHost.StartAsync(args);
    await host.WaitForShutdownAsync();
    return 0;
}
catch (StoppedWhileStartingException)
{
    // Asked to stop while starting (e.g. a front door still waiting for its first silo).
    return 0;
}
catch (Exception exception) when (exception is Microsoft.Extensions.Options.OptionsValidationException or Marketplace.Silo.Database.PostgresNotInstalledException or Marketplace.Silo.Database.MigrationException)
{
    await Console.Error.WriteLineAsync($"Marketplace cannot start: {exception.Message}");
    return 2;
}
catch (Npgsql.NpgsqlException exception)
{
    // The message names host and port but never the password of the connection string.
    await Console.Error.WriteLineAsync($"Marketplace cannot start: the database cannot be reached ({exception.Message}). Check ConnectionStrings:Marketplace.");
    return 3;
}
