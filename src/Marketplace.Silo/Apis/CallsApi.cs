using Marketplace.Grains;
using Marketplace.Silo.Database;
using Marketplace.Silo.FrontDoor;
using Microsoft.AspNetCore.Http.HttpResults;
using Npgsql;

namespace Marketplace.Silo.Apis;

/// <summary>One row of the call log as admins and consumers read it.</summary>
public sealed record CallLogEntry(
    Guid CallId, string TrackId, DateTimeOffset At, string? AccountId, string? KeyId, string ServiceId, string? Version, string Outcome, string? Rejection,
    int Status, double? UpstreamMs, double TotalMs, long Price, long Charged, string? Currency, string? IdempotencyKey);

/// <summary>
/// What the journal and the grains say about one account, and whether they agree. Every difference is the journal's figure
/// minus the grain's (or the rollups'), so 0 everywhere means consistent.
/// </summary>
/// <param name="LogCalls">Settled calls of the account in the journal's totals.</param>
/// <param name="LogCharged">Amount the journal's totals charged the account.</param>
/// <param name="Credits">Top-ups and adjustments the account holds (the grain's).</param>
/// <param name="ExpectedBalance"><paramref name="Credits"/> minus <paramref name="LogCharged"/>: what the balance must be.</param>
/// <param name="Balance">The account grain's balance.</param>
/// <param name="BalanceDifference"><paramref name="ExpectedBalance"/> minus <paramref name="Balance"/>.</param>
/// <param name="RollupCalls">Calls of the account in the day rollups (what reports read).</param>
/// <param name="RollupCharged">Amount the day rollups charged the account.</param>
/// <param name="Keys">Each of the account's keys: its counters against the journal's per-key totals.</param>
public sealed record Reconciliation(
    string AccountId, long LogCalls, long LogCharged, long GrainCalls, long GrainCharged, long CallsDifference, long ChargedDifference,
    int PendingOnThisNode, bool Consistent, long Credits = 0, long ExpectedBalance = 0, long Balance = 0, long BalanceDifference = 0,
    long RollupCalls = 0, long RollupCharged = 0, long RollupCallsDifference = 0, long RollupChargedDifference = 0,
    IReadOnlyList<KeyReconciliation>? Keys = null);

/// <summary>Every account reconciled with the journal: how many, how many differ, and each one that does, whole.</summary>
/// <param name="PendingOnThisNode">Call records this node's journal writer had not stored yet: compare once load stops and it is 0.</param>
public sealed record ReconciliationReport(int Accounts, int Inconsistent, bool Consistent, int PendingOnThisNode, IReadOnlyList<Reconciliation> Differences);

/// <summary>One key's counters (calls, charged calls, failed calls) in the journal's totals and in its grain.</summary>
/// <param name="Windows">Each quota the key has: the calls its grain counted in the current window against the journal's.</param>
public sealed record KeyReconciliation(
    string KeyId, long LogCalls, long LogChargedCalls, long LogFailed, long GrainCalls, long GrainChargedCalls, long GrainFailed, bool Consistent,
    IReadOnlyList<QuotaWindowReconciliation>? Windows = null);

/// <summary>A key's quota window (a day or month, for all its services or one): the calls its grain counts against the journal's.</summary>
/// <param name="LeasedCalls">Calls of the key's leases front doors hold unreported: counted by the grain when leased, by the
/// journal only once spent. The window agrees when the grain counts the journal's calls plus at most these and the withheld ones.</param>
/// <param name="WithheldCalls">Calls the grain withholds for its previous activation (<see cref="ApiKeyInfo.WithheldCalls"/>):
/// that activation's settlements may still add up to these.</param>
public sealed record QuotaWindowReconciliation(
    string Window, string? ServiceId, DateTimeOffset WindowStart, long LogCalls, long GrainCalls, long LeasedCalls, bool Consistent,
    long WithheldCalls = 0);

/// <summary>Looking calls up in the call log by TrackId, and reconciling it with the grains.</summary>
public static class CallsApi
{
    private const int MaxRows = 100;

    private const string Columns =
        "call_id, track_id, at, account_id, key_id, service_id, version, outcome, rejection, status, upstream_ms, total_ms, price, charged, " +
        "currency, idempotency_key";

    /// <summary>
    /// Maps <c>/admin/calls/{trackId}</c>, <c>/admin/calls/id/{callId}</c>, <c>/admin/reconciliation/accounts/{id}</c> and
    /// <c>/admin/reconciliation</c>.
    /// </summary>
    public static RouteGroupBuilder MapAdminCallsApi(this RouteGroupBuilder admin)
    {
        admin.MapGet("/calls/{trackId}", (string trackId, NpgsqlDataSource database, CancellationToken cancellationToken) =>
            LookUpAsync(database, trackId, null, cancellationToken)).WithTags("Calls");
        admin.MapGet("/calls/id/{callId}", LookUpByIdAsync).WithTags("Calls")
            .WithName("GetCallById").WithSummary("One call by its call id (the X-Call-Id answer header)")
            .WithDescription("Reads one day partition and the millisecond the id's UUIDv7 timestamp names.");
        admin.MapGet("/reconciliation/accounts/{id}", ReconcileAsync).WithTags("Calls");
        admin.MapGet("/reconciliation", ReconcileAllAsync).WithTags("Calls")
            .WithSummary("Every account against the journal: balances, counters, keys and rollups")
            .WithDescription("Reports each account whose balance, counters, keys or day rollups differ from the journal's totals.");
        return admin;
    }

    /// <summary>Maps <c>/v1/calls/{trackId}</c>: a consumer's own calls only.</summary>
    public static IEndpointRouteBuilder MapConsumerCallsApi(this IEndpointRouteBuilder app)
    {
        app.MapGet("/v1/calls/{trackId}", async (string trackId, HttpContext context, IGrainFactory grains, NpgsqlDataSource database, CancellationToken cancellationToken) =>
            await CallApi.AuthenticateKeyAsync(context, grains) is { } key
                ? await LookUpAsync(database, trackId, key.AccountId, cancellationToken)
                : (Results<Ok<IReadOnlyList<CallLogEntry>>, ProblemHttpResult>)Problems.Unauthorized(context, "Send a valid API key in the X-Api-Key header or as a bearer token."))
            .WithTags("Consumer");
        return app;
    }

    /// <summary>Every row with the TrackId (one per call; a caller that reuses a TrackId sees each call), limited to an account when given.</summary>
    public static async Task<Results<Ok<IReadOnlyList<CallLogEntry>>, ProblemHttpResult>> LookUpAsync(
        NpgsqlDataSource database, string trackId, string? accountId, CancellationToken cancellationToken)
    {
        if (!TrackIds.IsWellFormed(trackId))
        {
            return Problems.NotFound("call", trackId);
        }

        await using var command = database.CreateCommand(
            $"SELECT {Columns} FROM marketplace_call_log WHERE track_id = $1 AND ($2::varchar IS NULL OR account_id = $2) ORDER BY at LIMIT {MaxRows}");
        command.Parameters.AddWithValue(trackId);
        command.Parameters.Add(new NpgsqlParameter { Value = (object?)accountId ?? DBNull.Value, NpgsqlDbType = NpgsqlTypes.NpgsqlDbType.Varchar });
        var rows = await ReadAsync(command, cancellationToken);
        return rows.Count == 0 ? Problems.NotFound("call", trackId) : TypedResults.Ok<IReadOnlyList<CallLogEntry>>(rows);
    }

    /// <summary>
    /// The call with this id. A call id is a UUIDv7 of the call's start: its millisecond bounds <c>at</c>, so the query reads
    /// one day partition and a millisecond of its BRIN index on <c>at</c>, however large the log.
    /// </summary>
    public static async Task<Results<Ok<CallLogEntry>, ProblemHttpResult>> LookUpByIdAsync(
        string callId, NpgsqlDataSource database, CancellationToken cancellationToken)
    {
        if (!Guid.TryParse(callId, out var id) || id.Version != 7)
        {
            return Problems.NotFound("call", callId);
        }

        var started = CallIdTime(id);
        await using var command = database.CreateCommand(
            $"SELECT {Columns} FROM marketplace_call_log WHERE call_id = $1 AND at >= $2 AND at <= $3 LIMIT 1");
        command.Parameters.AddWithValue(id);
        command.Parameters.AddWithValue(started);
        // The timestamp keeps microseconds and the id milliseconds: "at" is in the id's millisecond (its end included).
        command.Parameters.AddWithValue(started.AddMilliseconds(1));
        var rows = await ReadAsync(command, cancellationToken);
        return rows.Count == 0 ? Problems.NotFound("call", callId) : TypedResults.Ok(rows[0]);
    }

    /// <summary>The start time (Unix milliseconds) a UUIDv7 call id carries in its first 48 bits.</summary>
    public static DateTimeOffset CallIdTime(Guid callId)
    {
        var bytes = callId.ToByteArray(bigEndian: true);
        var milliseconds = 0L;
        for (var i = 0; i < 6; i++)
        {
            milliseconds = (milliseconds << 8) | bytes[i];
        }

        return DateTimeOffset.FromUnixTimeMilliseconds(milliseconds);
    }

    private static async Task<List<CallLogEntry>> ReadAsync(NpgsqlCommand command, CancellationToken cancellationToken)
    {
        var rows = new List<CallLogEntry>();
        await using var reader = await command.ExecuteReaderAsync(cancellationToken);
        while (await reader.ReadAsync(cancellationToken))
        {
            rows.Add(new CallLogEntry(
                reader.GetGuid(0), reader.GetString(1), reader.GetFieldValue<DateTimeOffset>(2), Nullable(reader, 3), Nullable(reader, 4), reader.GetString(5),
                Nullable(reader, 6), reader.GetString(7), Nullable(reader, 8), reader.GetInt16(9), reader.IsDBNull(10) ? null : reader.GetFloat(10),
                reader.GetFloat(11), reader.GetInt64(12), reader.GetInt64(13), Nullable(reader, 14), Nullable(reader, 15)));
        }

        return rows;
    }

    /// <summary>
    /// Compares one account with the journal: its counters (calls settled, amount charged) and its balance (credits minus the
    /// journal's charges) with the account totals; each of its keys' counters with the per-key totals; and the day rollups
    /// that reports read with the same totals. The journal's totals and rollups are added in the same transaction as the
    /// rows, and the grains receive a batch only after it is durable, so compare once load stops and nothing is pending.
    /// </summary>
    public static async Task<Results<Ok<Reconciliation>, ProblemHttpResult>> ReconcileAsync(
        string id, IGrainFactory grains, NpgsqlDataSource database, CallLogWriter writer, CancellationToken cancellationToken) =>
        await ReconcileAccountAsync(id, grains, database, writer, cancellationToken) is { } reconciliation
            ? TypedResults.Ok(reconciliation)
            : Problems.NotFound("account", id);

    /// <summary>
    /// Every account of the registry reconciled as <see cref="ReconcileAsync"/> does (a few at a time): the report lists those
    /// that differ. It reads every account and key grain, so it activates them all: an operator's check, not a hot path.
    /// </summary>
    public static async Task<Ok<ReconciliationReport>> ReconcileAllAsync(
        IGrainFactory grains, NpgsqlDataSource database, CallLogWriter writer, CancellationToken cancellationToken)
    {
        var ids = await grains.GetGrain<IRegistryGrain>(IRegistryGrain.Default).ListAsync(EntityKind.Account);
        var differences = new System.Collections.Concurrent.ConcurrentBag<Reconciliation>();
        await Parallel.ForEachAsync(ids, new ParallelOptions { MaxDegreeOfParallelism = 8, CancellationToken = cancellationToken }, async (id, token) =>
        {
            if (await ReconcileAccountAsync(id, grains, database, writer, token) is { Consistent: false } reconciliation)
            {
                differences.Add(reconciliation);
            }
        });

        var differing = differences.OrderBy(d => d.AccountId, StringComparer.Ordinal).ToList();
        return TypedResults.Ok(new ReconciliationReport(ids.Count, differing.Count, differing.Count == 0, writer.QueueLength + writer.InFlight, differing));
    }

    private static async Task<Reconciliation?> ReconcileAccountAsync(
        string id, IGrainFactory grains, NpgsqlDataSource database, CallLogWriter writer, CancellationToken cancellationToken)
    {
        if (!Ids.IsValid(id) || await grains.GetGrain<IAccountGrain>(id).GetAsync() is not { } account)
        {
            return null;
        }

        await using var batch = database.CreateBatch();
        batch.BatchCommands.Add(Command(batch,
            "SELECT coalesce(sum(calls), 0)::bigint, coalesce(sum(charged), 0)::bigint FROM marketplace_account_totals WHERE account_id = $1", id));
        batch.BatchCommands.Add(Command(batch,
            "SELECT coalesce(sum(calls), 0)::bigint, coalesce(sum(charged), 0)::bigint FROM marketplace_usage_rollup " +
            "WHERE granularity = 'day' AND account_id = $1", id));
        batch.BatchCommands.Add(Command(batch,
            "SELECT key_id, service_id, sum(calls)::bigint, sum(charged_calls)::bigint, sum(failed)::bigint, max(day), sum(day_calls)::bigint, " +
            "max(month), sum(month_calls)::bigint FROM marketplace_key_totals WHERE key_id = ANY($1) GROUP BY key_id, service_id", account.KeyIds.ToArray()));
        var (logCalls, logCharged, rollupCalls, rollupCharged) = (0L, 0L, 0L, 0L);
        var keyTotals = new Dictionary<string, List<KeyServiceTotals>>();
        await using (var reader = await batch.ExecuteReaderAsync(cancellationToken))
        {
            await reader.ReadAsync(cancellationToken);
            (logCalls, logCharged) = (reader.GetInt64(0), reader.GetInt64(1));
            await reader.NextResultAsync(cancellationToken);
            await reader.ReadAsync(cancellationToken);
            (rollupCalls, rollupCharged) = (reader.GetInt64(0), reader.GetInt64(1));
            await reader.NextResultAsync(cancellationToken);
            while (await reader.ReadAsync(cancellationToken))
            {
                var keyId = reader.GetString(0);
                if (!keyTotals.TryGetValue(keyId, out var services))
                {
                    keyTotals[keyId] = services = [];
                }

                services.Add(new KeyServiceTotals(reader.GetString(1), reader.GetInt64(2), reader.GetInt64(3), reader.GetInt64(4),
                    reader.GetFieldValue<DateOnly>(5), reader.GetInt64(6), reader.GetFieldValue<DateOnly>(7), reader.GetInt64(8)));
            }
        }

        var keys = new List<KeyReconciliation>();
        foreach (var keyId in account.KeyIds)
        {
            var key = await grains.GetGrain<IApiKeyGrain>(keyId).GetAsync();
            var services = keyTotals.GetValueOrDefault(keyId) ?? [];
            var (calls, chargedCalls, failed) = (services.Sum(s => s.Calls), services.Sum(s => s.ChargedCalls), services.Sum(s => s.Failed));
            var (grainCalls, grainCharged, grainFailed) = (key?.Usage.Calls ?? 0, key?.Usage.Charged ?? 0, key?.Usage.Failed ?? 0);
            var windows = QuotaWindowsOf(key, services);
            keys.Add(new KeyReconciliation(keyId, calls, chargedCalls, failed, grainCalls, grainCharged, grainFailed,
                calls == grainCalls && chargedCalls == grainCharged && failed == grainFailed && windows.TrueForAll(w => w.Consistent), windows));
        }

        var callsDifference = logCalls - account.Usage.Calls;
        var chargedDifference = logCharged - account.TotalCharged;
        var expectedBalance = account.Credits - logCharged;
        var balanceDifference = expectedBalance - account.Balance;
        var (rollupCallsDifference, rollupChargedDifference) = (logCalls - rollupCalls, logCharged - rollupCharged);
        var consistent = callsDifference == 0 && chargedDifference == 0 && balanceDifference == 0 && rollupCallsDifference == 0
            && rollupChargedDifference == 0 && keys.TrueForAll(k => k.Consistent);
        return new Reconciliation(id, logCalls, logCharged, account.Usage.Calls, account.TotalCharged, callsDifference, chargedDifference,
            writer.QueueLength + writer.InFlight, consistent, account.Credits, expectedBalance, account.Balance, balanceDifference, rollupCalls, rollupCharged,
            rollupCallsDifference, rollupChargedDifference, keys);

        static NpgsqlBatchCommand Command(NpgsqlBatch batch, string sql, object parameter)
        {
            var command = batch.CreateBatchCommand();
            command.CommandText = sql;
            command.Parameters.Add(new NpgsqlParameter { Value = parameter });
            return command;
        }
    }

    // The journal keeps, per key and service, the calls of the latest quota day and month that had calls (in the key's window
    // offset); a quota's window that is not the latest one has no calls in the journal.
    private static List<QuotaWindowReconciliation> QuotaWindowsOf(ApiKeyInfo? key, List<KeyServiceTotals> services)
    {
        var windows = new List<QuotaWindowReconciliation>();
        var offset = key?.Limits?.WindowOffset ?? TimeSpan.Zero;
        foreach (var quota in key?.Quotas ?? [])
        {
            var local = quota.WindowStart.ToOffset(offset);
            var start = DateOnly.FromDateTime(local.DateTime);
            var logCalls = services
                .Where(s => quota.ServiceId is null || s.ServiceId == quota.ServiceId)
                .Sum(s => quota.Window == QuotaWindows.Day ? (s.Day == start ? s.DayCalls : 0) : (s.Month == start ? s.MonthCalls : 0));
            var (leased, withheld) = (key!.LeasedCalls, key.WithheldCalls);
            windows.Add(new QuotaWindowReconciliation(quota.Window, quota.ServiceId, quota.WindowStart, logCalls, quota.Used, leased,
                quota.Used >= logCalls && quota.Used - logCalls <= leased + withheld, withheld));
        }

        return windows;
    }

    private sealed record KeyServiceTotals(
        string ServiceId, long Calls, long ChargedCalls, long Failed, DateOnly Day, long DayCalls, DateOnly Month, long MonthCalls);

    private static string? Nullable(NpgsqlDataReader reader, int ordinal) => reader.IsDBNull(ordinal) ? null : reader.GetString(ordinal).TrimEnd();
}
