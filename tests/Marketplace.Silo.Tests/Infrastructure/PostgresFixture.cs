using Marketplace.Silo.Database;
using Microsoft.Extensions.Logging.Abstractions;
using Npgsql;

namespace Marketplace.Silo.Tests.Infrastructure;

/// <summary>A private PostgreSQL server for the whole test run; each test class takes its own database.</summary>
public sealed class PostgresFixture : IAsyncLifetime
{
    private readonly string _root = Path.Combine(Path.GetTempPath(), "marketplace-tests-" + Guid.NewGuid().ToString("N")[..12]);
    private EmbeddedPostgres? _server;

    /// <summary>Connection string of the server's default marketplace database.</summary>
    public string ServerConnectionString => _server?.ConnectionString ?? throw new InvalidOperationException("Not started.");

    public async ValueTask InitializeAsync()
    {
        _server = new EmbeddedPostgres(
            new EmbeddedPostgresOptions { DataDirectory = Path.Combine(_root, "data"), Port = 0 },
            NullLogger<EmbeddedPostgres>.Instance);
        await _server.StartAsync();
    }

    /// <summary>Creates an empty database and returns its connection string.</summary>
    public async Task<string> CreateDatabaseAsync(string prefix)
    {
        var name = $"{prefix}_{Guid.NewGuid():N}";
        await using (var connection = new NpgsqlConnection(ServerConnectionString))
        {
            await connection.OpenAsync();
            await using var command = new NpgsqlCommand($"CREATE DATABASE \"{name}\"", connection);
            await command.ExecuteNonQueryAsync();
        }

        return new NpgsqlConnectionStringBuilder(ServerConnectionString) { Database = name }.ConnectionString;
    }

    public async ValueTask DisposeAsync()
    {
        if (_server is not null)
        {
            await _server.DisposeAsync();
        }

        try
        {
            Directory.Delete(_root, recursive: true);
        }
        catch (IOException)
        {
        }
        catch (UnauthorizedAccessException)
        {
        }
    }
}

[CollectionDefinition(Name)]
public sealed class PostgresCollection : ICollectionFixture<PostgresFixture>
{
    public const string Name = "postgres";
}
