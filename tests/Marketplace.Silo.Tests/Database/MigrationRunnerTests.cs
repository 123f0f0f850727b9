using Marketplace.Silo.Database;
using Marketplace.Silo.Tests.Infrastructure;
using Microsoft.Extensions.Logging.Abstractions;
using Npgsql;

namespace Marketplace.Silo.Tests.Database;

[Collection(PostgresCollection.Name)]
public sealed class MigrationRunnerTests(PostgresFixture postgres)
{
    private static readonly string[] OrleansQueryKeys =
    [
        "UpdateIAmAlivetimeKey", "InsertMembershipVersionKey", "InsertMembershipKey", "UpdateMembershipKey",
        "MembershipReadRowKey", "MembershipReadAllKey", "DeleteMembershipTableEntriesKey", "GatewaysQueryKey",
        "CleanupDefunctSiloEntriesKey", "ReadFromStorageKey", "WriteToStorageKey", "ClearStorageKey", "DeleteStorageKey",
    ];

    [Fact]
    public async Task Apply_Twice_SecondRunAppliesNothingAndChangesNothing()
    {
        var connectionString = await postgres.CreateDatabaseAsync("migrate");
        var runner = new MigrationRunner(connectionString, NullLogger<MigrationRunner>.Instance);

        var first = await runner.ApplyAsync(TestContext.Current.CancellationToken);
        var schemaAfterFirst = await SchemaFingerprintAsync(connectionString);
        var second = await runner.ApplyAsync(TestContext.Current.CancellationToken);

        Assert.Equal(MigrationRunner.Embedded.Select(m => m.Name), first);
        Assert.Empty(second);
        Assert.Equal(schemaAfterFirst, await SchemaFingerprintAsync(connectionString));
    }

    [Fact]
    public async Task Apply_Fresh_ProvidesEveryQueryTheOrleansProvidersRead()
    {
        var connectionString = await postgres.CreateDatabaseAsync("queries");
        await new MigrationRunner(connectionString, NullLogger<MigrationRunner>.Instance).ApplyAsync(TestContext.Current.CancellationToken);

        var keys = await QueryListAsync(connectionString, "SELECT QueryKey FROM OrleansQuery");

        Assert.Subset(keys.ToHashSet(), OrleansQueryKeys.ToHashSet());
    }

    [Fact]
    public async Task Apply_AfterInterruptedMigration_RefusesWithClearMessage()
    {
        var connectionString = await postgres.CreateDatabaseAsync("halfway");
        var runner = new MigrationRunner(connectionString, NullLogger<MigrationRunner>.Instance);
        await runner.ApplyAsync(TestContext.Current.CancellationToken);
        var extra = new Migration(9001, "9001_extra", "CREATE TABLE extra_table (id int)");
        await ExecuteAsync(connectionString, "INSERT INTO marketplace_migrations (version, name, checksum) VALUES (9001, '9001_extra', 'x')");

        var error = await Assert.ThrowsAsync<MigrationException>(() => runner.ApplyAsync([.. MigrationRunner.Embedded, extra]));

        Assert.Contains("9001_extra", error.Message);
        Assert.Contains("never completed", error.Message);
        Assert.DoesNotContain("extra_table", await QueryListAsync(connectionString, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"));
    }

    [Fact]
    public async Task Apply_ScriptEditedAfterApply_RefusesWithChecksumMessage()
    {
        var connectionString = await postgres.CreateDatabaseAsync("edited");
        var runner = new MigrationRunner(connectionString, NullLogger<MigrationRunner>.Instance);
        var original = new Migration(9002, "9002_table", "CREATE TABLE edited_table (id int)");
        await runner.ApplyAsync([original], TestContext.Current.CancellationToken);

        var edited = original with { Sql = "CREATE TABLE edited_table (id bigint)" };
        var error = await Assert.ThrowsAsync<MigrationException>(() => runner.ApplyAsync([edited]));

        Assert.Contains("changed after it was applied", error.Message);
    }

    [Fact]
    public async Task Apply_FailingScript_RollsBackWholeScriptAndCanBeRetried()
    {
        var connectionString = await postgres.CreateDatabaseAsync("failing");
        var runner = new MigrationRunner(connectionString, NullLogger<MigrationRunner>.Instance);
        var broken = new Migration(9003, "9003_broken", "CREATE TABLE half_table (id int); SELECT * FROM no_such_table;");

        var error = await Assert.ThrowsAsync<MigrationException>(() => runner.ApplyAsync([broken]));
        var tables = await QueryListAsync(connectionString, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'");
        var recorded = await QueryListAsync(connectionString, "SELECT name FROM marketplace_migrations");
        var fixedScript = broken with { Sql = "CREATE TABLE half_table (id int);" };
        var applied = await runner.ApplyAsync([fixedScript], TestContext.Current.CancellationToken);

        Assert.Contains("9003_broken", error.Message);
        Assert.DoesNotContain("half_table", tables);
        Assert.Empty(recorded);
        Assert.Equal(["9003_broken"], applied);
    }

    [Fact]
    public async Task Apply_ConcurrentStarts_ApplyEachMigrationOnce()
    {
        var connectionString = await postgres.CreateDatabaseAsync("concurrent");
        var runners = Enumerable.Range(0, 4).Select(_ => new MigrationRunner(connectionString, NullLogger<MigrationRunner>.Instance));

        var results = await Task.WhenAll(runners.Select(r => r.ApplyAsync(TestContext.Current.CancellationToken)));

        Assert.Equal(MigrationRunner.Embedded.Count, results.Sum(r => r.Count));
    }

    private static async Task<string> SchemaFingerprintAsync(string connectionString)
    {
        var columns = await QueryListAsync(connectionString,
            "SELECT table_name || '.' || column_name || ':' || data_type FROM information_schema.columns WHERE table_schema = 'public' ORDER BY 1");
        var queries = await QueryListAsync(connectionString, "SELECT QueryKey || md5(QueryText) FROM OrleansQuery ORDER BY 1");
        var migrations = await QueryListAsync(connectionString, "SELECT version || checksum || completed_at::text FROM marketplace_migrations ORDER BY version");
        return string.Join("\n", columns.Concat(queries).Concat(migrations));
    }

    private static async Task<List<string>> QueryListAsync(string connectionString, string sql)
    {
        await using var connection = new NpgsqlConnection(connectionString);
        await connection.OpenAsync();
        await using var command = new NpgsqlCommand(sql, connection);
        await using var reader = await command.ExecuteReaderAsync();
        var values = new List<string>();
        while (await reader.ReadAsync())
        {
            values.Add(reader.GetString(0));
        }

        return values;
    }

    private static async Task ExecuteAsync(string connectionString, string sql)
    {
        await using var connection = new NpgsqlConnection(connectionString);
        await connection.OpenAsync();
        await using var command = new NpgsqlCommand(sql, connection);
        await command.ExecuteNonQueryAsync();
    }
}
