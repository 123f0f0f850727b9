using Marketplace.Grains;
using Microsoft.Extensions.Options;
using Npgsql;
using NpgsqlTypes;

namespace Marketplace.Silo.Database;

/// <summary>
/// Reads the journal's totals (migrations 0007 and 0009) for grains that activate. Each read is one statement, so under READ
/// COMMITTED it sees one snapshot: the totals of exactly the batches up to each sender's <c>last_seq</c> it returns.
/// </summary>
/// <remarks>
/// It runs while a grain activates, so it is short: the call log's command timeout bounds the connection and the statement.
/// The SQL text is constant and the parameters typed, so the statements are prepared once per connection when the data source
/// auto-prepares.
/// </remarks>
public sealed class PostgresJournalReader(NpgsqlDataSource database, IOptions<CallLogOptions> options) : IJournalReader
{
    // Senders that committed within JournalWindows.SenderRetention, as two arrays in sender order.
    private const string SendersCte =
        "WITH s AS (SELECT sender, last_seq FROM marketplace_journal_senders WHERE updated_at > now() - $1::interval)";

    private const string SenderArrays = "ARRAY(SELECT sender FROM s ORDER BY sender), ARRAY(SELECT last_seq FROM s ORDER BY sender)";

    // An aggregate without GROUP BY returns one row, also for an account that has none.
    private const string AccountSql = $"""
        {SendersCte},
        k AS (SELECT service_id, sum(calls)::bigint AS calls FROM marketplace_key_totals WHERE key_id = ANY($3::varchar[]) GROUP BY service_id)
        SELECT coalesce(sum(calls), 0)::bigint, coalesce(sum(charged_calls), 0)::bigint, coalesce(sum(failed), 0)::bigint,
               coalesce(sum(charged), 0)::bigint, coalesce(sum(month_calls) FILTER (WHERE month = $4::date), 0)::bigint,
               ARRAY(SELECT service_id FROM k ORDER BY service_id), ARRAY(SELECT calls FROM k ORDER BY service_id),
               {SenderArrays}
        FROM marketplace_account_totals WHERE account_id = $2::varchar
        """;

    // One row per service, its currencies summed: the windows are the latest of its currency rows, and only the calls of
    // that latest window count. The senders ride on every row, and on one row of nulls when the key has no services.
    private const string KeySql = $"""
        {SendersCte},
        r AS (SELECT service_id, calls, charged_calls, failed, charged, day, day_calls, month, month_calls,
                     max(day) OVER (PARTITION BY service_id) AS last_day, max(month) OVER (PARTITION BY service_id) AS last_month
              FROM marketplace_key_totals WHERE key_id = $2::varchar),
        k AS (SELECT service_id, sum(calls)::bigint AS calls, sum(charged_calls)::bigint AS charged_calls, sum(failed)::bigint AS failed,
                     sum(charged)::bigint AS charged, max(day) AS day, sum(day_calls) FILTER (WHERE day = last_day)::bigint AS day_calls,
                     max(month) AS month, sum(month_calls) FILTER (WHERE month = last_month)::bigint AS month_calls
              FROM r GROUP BY service_id)
        SELECT senders.ids, senders.seqs, k.service_id, k.calls, k.charged_calls, k.failed, k.charged, k.day, k.day_calls, k.month, k.month_calls
        FROM (SELECT {SenderArrays}) AS senders (ids, seqs)
        LEFT JOIN k ON true
        ORDER BY k.service_id
        """;

    private const string ServiceSql = $"""
        {SendersCte}
        SELECT coalesce(sum(calls), 0)::bigint, coalesce(sum(charged_calls), 0)::bigint, coalesce(sum(failed), 0)::bigint,
               coalesce(sum(charged), 0)::bigint, {SenderArrays}
        FROM marketplace_service_totals WHERE service_id = $2::varchar
        """;

    // Null filters match every row: one statement serves a key's fetch and an account's.
    private const string BatchesSql = """
        SELECT seq, key_id, account_id, service_id, sum(calls)::bigint, sum(charged_calls)::bigint, sum(failed)::bigint, sum(charged)::bigint
        FROM marketplace_journal_key_batches
        WHERE sender = $1 AND seq > $2 AND ($3::varchar IS NULL OR key_id = $3) AND ($4::varchar IS NULL OR account_id = $4)
        GROUP BY seq, key_id, account_id, service_id
        ORDER BY seq, key_id, service_id
        """;

    private readonly TimeSpan _timeout = options.Value.CommandTimeout;

    /// <inheritdoc />
    public async ValueTask<IReadOnlyList<JournalBatchUsage>> ReadBatchesAsync(Guid sender, long after, string? keyId, string? accountId)
    {
        using var timeout = new CancellationTokenSource(_timeout);
        await using var connection = await database.OpenConnectionAsync(timeout.Token);
        await using var command = new NpgsqlCommand(BatchesSql, connection) { CommandTimeout = Math.Max(1, (int)Math.Ceiling(_timeout.TotalSeconds)) };
        command.Parameters.Add(new NpgsqlParameter { Value = sender, NpgsqlDbType = NpgsqlDbType.Uuid });
        command.Parameters.Add(new NpgsqlParameter { Value = after, NpgsqlDbType = NpgsqlDbType.Bigint });
        command.Parameters.Add(new NpgsqlParameter { Value = (object?)keyId ?? DBNull.Value, NpgsqlDbType = NpgsqlDbType.Varchar });
        command.Parameters.Add(new NpgsqlParameter { Value = (object?)accountId ?? DBNull.Value, NpgsqlDbType = NpgsqlDbType.Varchar });
        await using var reader = await command.ExecuteReaderAsync(timeout.Token);
        var batches = new List<JournalBatchUsage>();
        while (await reader.ReadAsync(timeout.Token))
        {
            batches.Add(new JournalBatchUsage(sender, reader.GetInt64(0), reader.GetString(1), reader.GetString(2),
                new ServiceUsageDelta(reader.GetString(3), reader.GetInt64(4), reader.GetInt64(5), reader.GetInt64(6), reader.GetInt64(7))));
        }

        return batches;
    }

    /// <inheritdoc />
    public async ValueTask<AccountJournal> ReadAccountAsync(string accountId, IReadOnlyCollection<string> keyIds, DateTimeOffset now)
    {
        ArgumentNullException.ThrowIfNull(accountId);
        ArgumentNullException.ThrowIfNull(keyIds);
        using var timeout = new CancellationTokenSource(_timeout);
        await using var connection = await database.OpenConnectionAsync(timeout.Token);
        await using var command = Command(connection, AccountSql);
        command.Parameters.Add(new NpgsqlParameter { Value = accountId, NpgsqlDbType = NpgsqlDbType.Varchar });
        command.Parameters.Add(new NpgsqlParameter { Value = keyIds.ToArray(), NpgsqlDbType = NpgsqlDbType.Array | NpgsqlDbType.Varchar });
        command.Parameters.Add(new NpgsqlParameter { Value = JournalWindows.UtcMonth(now), NpgsqlDbType = NpgsqlDbType.Date });
        await using var reader = await command.ExecuteReaderAsync(timeout.Token);
        await reader.ReadAsync(timeout.Token);
        var totals = Counts(reader, 0);
        var monthCalls = reader.GetInt64(4);
        var services = reader.GetFieldValue<string[]>(5);
        var calls = reader.GetFieldValue<long[]>(6);
        var byService = new Dictionary<string, long>(services.Length, StringComparer.Ordinal);
        for (var i = 0; i < services.Length; i++)
        {
            byService[services[i]] = calls[i];
        }

        return new AccountJournal(totals, monthCalls, byService, Senders(reader, 7));
    }

    /// <inheritdoc />
    public async ValueTask<KeyJournal> ReadKeyAsync(string keyId)
    {
        ArgumentNullException.ThrowIfNull(keyId);
        using var timeout = new CancellationTokenSource(_timeout);
        await using var connection = await database.OpenConnectionAsync(timeout.Token);
        await using var command = Command(connection, KeySql);
        command.Parameters.Add(new NpgsqlParameter { Value = keyId, NpgsqlDbType = NpgsqlDbType.Varchar });
        await using var reader = await command.ExecuteReaderAsync(timeout.Token);
        IReadOnlyDictionary<Guid, long> senders = new Dictionary<Guid, long>();
        var services = new List<KeyServiceJournal>();
        while (await reader.ReadAsync(timeout.Token))
        {
            senders = Senders(reader, 0);
            if (reader.IsDBNull(2))
            {
                continue;
            }

            services.Add(new KeyServiceJournal(
                reader.GetString(2),
                Counts(reader, 3),
                reader.GetFieldValue<DateOnly>(7),
                reader.GetInt64(8),
                reader.GetFieldValue<DateOnly>(9),
                reader.GetInt64(10)));
        }

        return new KeyJournal(services, senders);
    }

    /// <inheritdoc />
    public async ValueTask<ServiceJournal> ReadServiceAsync(string serviceId)
    {
        ArgumentNullException.ThrowIfNull(serviceId);
        using var timeout = new CancellationTokenSource(_timeout);
        await using var connection = await database.OpenConnectionAsync(timeout.Token);
        await using var command = Command(connection, ServiceSql);
        command.Parameters.Add(new NpgsqlParameter { Value = serviceId, NpgsqlDbType = NpgsqlDbType.Varchar });
        await using var reader = await command.ExecuteReaderAsync(timeout.Token);
        await reader.ReadAsync(timeout.Token);
        return new ServiceJournal(Counts(reader, 0), Senders(reader, 4));
    }

    // The statement with its first parameter, the sender retention, and the timeout (whole seconds, at least one; the token
    // passed to the reads enforces a shorter one).
    private NpgsqlCommand Command(NpgsqlConnection connection, string sql)
    {
        var command = new NpgsqlCommand(sql, connection)
        {
            CommandTimeout = Math.Max(1, (int)Math.Ceiling(_timeout.TotalSeconds)),
        };
        command.Parameters.Add(new NpgsqlParameter { Value = JournalWindows.SenderRetention, NpgsqlDbType = NpgsqlDbType.Interval });
        return command;
    }

    private static JournalCounts Counts(NpgsqlDataReader reader, int first) =>
        new(reader.GetInt64(first), reader.GetInt64(first + 1), reader.GetInt64(first + 2), reader.GetInt64(first + 3));

    private static Dictionary<Guid, long> Senders(NpgsqlDataReader reader, int first)
    {
        var ids = reader.GetFieldValue<Guid[]>(first);
        var sequences = reader.GetFieldValue<long[]>(first + 1);
        var senders = new Dictionary<Guid, long>(ids.Length);
        for (var i = 0; i < ids.Length; i++)
        {
            senders[ids[i]] = sequences[i];
        }

        return senders;
    }
}
