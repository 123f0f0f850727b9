using System.Reflection;
using System.Security.Cryptography;
using System.Text;
using Microsoft.Extensions.Logging;
using Npgsql;

namespace Marketplace.Silo.Database;

/// <summary>A migration script that cannot be applied, or a database left in a state the runner will not touch.</summary>
public sealed class MigrationException(string message, Exception? inner = null) : Exception(message, inner);

/// <summary>One versioned SQL script embedded in this assembly.</summary>
/// <param name="Version">The number the file name starts with.</param>
public sealed record Migration(int Version, string Name, string Sql)
{
    /// <summary>SHA-256 of the script, to notice a script edited after it was applied.</summary>
    public string Checksum => Convert.ToHexString(SHA256.HashData(Encoding.UTF8.GetBytes(Sql.ReplaceLineEndings("\n"))));
}

/// <summary>
/// Applies the embedded migrations in order, each in its own transaction, at most once per database.
/// A row in <c>marketplace_migrations</c> is written before a script runs and completed in the script's
/// transaction; a row that never completed means a run died mid-way (or someone ran SQL by hand), and
/// the runner stops with a message that says what to do rather than guess.
/// </summary>
public sealed partial class MigrationRunner(string connectionString, ILogger<MigrationRunner> logger)
{
    private const string ResourcePrefix = "Marketplace.Migrations.";
    private const long AdvisoryLockKey = 7_310_150_417_001;

    /// <summary>The scripts shipped with this build, in order.</summary>
    public static IReadOnlyList<Migration> Embedded { get; } = LoadEmbedded();

    /// <summary>Applies what is missing and returns the names applied (empty when the database was up to date).</summary>
    public async Task<IReadOnlyList<string>> ApplyAsync(CancellationToken cancellationToken = default) =>
        await ApplyAsync(Embedded, cancellationToken);

    /// <summary>Applies <paramref name="migrations"/>; exposed for tests that need a failing script.</summary>
    public async Task<IReadOnlyList<string>> ApplyAsync(IReadOnlyList<Migration> migrations, CancellationToken cancellationToken = default)
    {
        await using var connection = new NpgsqlConnection(connectionString);
        await connection.OpenAsync(cancellationToken);

        // Several silos may start at once against one database; one migrates, the others wait and then find nothing to do.
        await ExecuteAsync(connection, $"SELECT pg_advisory_lock({AdvisoryLockKey})", cancellationToken);
        try
        {
            await ExecuteAsync(connection, """
                CREATE TABLE IF NOT EXISTS marketplace_migrations
                (
                    version      integer      NOT NULL PRIMARY KEY,
                    name         varchar(200) NOT NULL,
                    checksum     varchar(64)  NOT NULL,
                    started_at   timestamptz  NOT NULL DEFAULT now(),
                    completed_at timestamptz  NULL
                )
                """, cancellationToken);

            var recorded = await ReadRecordedAsync(connection, cancellationToken);
            var applied = new List<string>();
            foreach (var migration in migrations.OrderBy(m => m.Version))
            {
                if (recorded.TryGetValue(migration.Version, out var row))
                {
                    Verify(migration, row);
                    continue;
                }

                await ApplyOneAsync(connection, migration, cancellationToken);
                applied.Add(migration.Name);
            }

            var newest = migrations.Count == 0 ? 0 : migrations.Max(m => m.Version);
            foreach (var unknown in recorded.Keys.Where(v => v > newest))
            {
                LogUnknownMigration(logger, unknown);
            }

            LogDone(logger, applied.Count, migrations.Count);
            return applied;
        }
        finally
        {
            await ExecuteAsync(connection, $"SELECT pg_advisory_unlock({AdvisoryLockKey})", CancellationToken.None);
        }
    }

    private static void Verify(Migration migration, RecordedMigration row)
    {
        if (row.CompletedAt is null)
        {
            throw new MigrationException(
                $"Migration {migration.Name} was started at {row.StartedAt:u} but never completed, so the database may be half-migrated. " +
                $"Check its objects against the script, repair or restore the database, then run " +
                $"\"DELETE FROM marketplace_migrations WHERE version = {migration.Version}\" and start again.");
        }

        if (!string.Equals(row.Checksum, migration.Checksum, StringComparison.OrdinalIgnoreCase))
        {
            throw new MigrationException(
                $"Migration {migration.Name} was changed after it was applied (checksum {row.Checksum} in the database, {migration.Checksum} in this build). " +
                "Applied migrations must never be edited; add a new migration instead.");
        }
    }

    private async Task ApplyOneAsync(NpgsqlConnection connection, Migration migration, CancellationToken cancellationToken)
    {
        LogApplying(logger, migration.Name);
        await using (var start = new NpgsqlCommand("INSERT INTO marketplace_migrations (version, name, checksum) VALUES (@v, @n, @c)", connection))
        {
            start.Parameters.AddWithValue("v", migration.Version);
            start.Parameters.AddWithValue("n", migration.Name);
            start.Parameters.AddWithValue("c", migration.Checksum);
            await start.ExecuteNonQueryAsync(cancellationToken);
        }

        await using var transaction = await connection.BeginTransactionAsync(cancellationToken);
        try
        {
            await using (var script = new NpgsqlCommand(migration.Sql, connection, transaction))
            {
                await script.ExecuteNonQueryAsync(cancellationToken);
            }

            await using (var done = new NpgsqlCommand("UPDATE marketplace_migrations SET completed_at = now() WHERE version = @v", connection, transaction))
            {
                done.Parameters.AddWithValue("v", migration.Version);
                await done.ExecuteNonQueryAsync(cancellationToken);
            }

            await transaction.CommitAsync(cancellationToken);
        }
        catch (Exception exception)
        {
            // The script's transaction rolled back as a whole, so nothing of it is left: forget that it started.
            await transaction.RollbackAsync(CancellationToken.None);
            await using var forget = new NpgsqlCommand("DELETE FROM marketplace_migrations WHERE version = @v AND completed_at IS NULL", connection);
            forget.Parameters.AddWithValue("v", migration.Version);
            await forget.ExecuteNonQueryAsync(CancellationToken.None);
            throw new MigrationException($"Migration {migration.Name} failed and was rolled back: {exception.Message}", exception);
        }
    }

    private static async Task<Dictionary<int, RecordedMigration>> ReadRecordedAsync(NpgsqlConnection connection, CancellationToken cancellationToken)
    {
        var rows = new Dictionary<int, RecordedMigration>();
        await using var command = new NpgsqlCommand("SELECT version, checksum, started_at, completed_at FROM marketplace_migrations", connection);
        await using var reader = await command.ExecuteReaderAsync(cancellationToken);
        while (await reader.ReadAsync(cancellationToken))
        {
            rows[reader.GetInt32(0)] = new RecordedMigration(
                reader.GetString(1),
                reader.GetFieldValue<DateTimeOffset>(2),
                reader.IsDBNull(3) ? null : reader.GetFieldValue<DateTimeOffset>(3));
        }

        return rows;
    }

    private static async Task ExecuteAsync(NpgsqlConnection connection, string sql, CancellationToken cancellationToken)
    {
        await using var command = new NpgsqlCommand(sql, connection);
        await command.ExecuteNonQueryAsync(cancellationToken);
    }

    private static List<Migration> LoadEmbedded()
    {
        var assembly = typeof(MigrationRunner).Assembly;
        var migrations = new List<Migration>();
        foreach (var resource in assembly.GetManifestResourceNames().Where(n => n.StartsWith(ResourcePrefix, StringComparison.Ordinal)))
        {
            var name = resource[ResourcePrefix.Length..^".sql".Length];
            var digits = new string(name.TakeWhile(char.IsDigit).ToArray());
            if (digits.Length == 0)
            {
                throw new MigrationException($"Embedded migration {resource} does not start with a version number.");
            }

            using var stream = assembly.GetManifestResourceStream(resource)!;
            using var reader = new StreamReader(stream, Encoding.UTF8);
            migrations.Add(new Migration(int.Parse(digits, System.Globalization.CultureInfo.InvariantCulture), name, reader.ReadToEnd()));
        }

        var duplicate = migrations.GroupBy(m => m.Version).FirstOrDefault(g => g.Count() > 1);
        if (duplicate is not null)
        {
            throw new MigrationException($"Two embedded migrations share version {duplicate.Key}.");
        }

        return [.. migrations.OrderBy(m => m.Version)];
    }

    private sealed record RecordedMigration(string Checksum, DateTimeOffset StartedAt, DateTimeOffset? CompletedAt);

    [LoggerMessage(Level = LogLevel.Information, Message = "Applying migration {Name}")]
    private static partial void LogApplying(ILogger logger, string name);

    [LoggerMessage(Level = LogLevel.Information, Message = "Database schema up to date: applied {Applied} of {Known} migrations in this run")]
    private static partial void LogDone(ILogger logger, int applied, int known);

    [LoggerMessage(Level = LogLevel.Warning, Message = "The database has migration {Version}, which this build does not know; it was written by a newer build")]
    private static partial void LogUnknownMigration(ILogger logger, int version);
}
