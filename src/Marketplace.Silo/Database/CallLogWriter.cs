using System.ComponentModel.DataAnnotations;
using System.Diagnostics.Metrics;
using System.Globalization;
using System.Threading.Channels;
using Marketplace.Grains;
using Microsoft.Extensions.Options;
using Npgsql;
using NpgsqlTypes;

namespace Marketplace.Silo.Database;

/// <summary>How calls are written to the call log.</summary>
public sealed class CallLogOptions
{
    /// <summary>Configuration section these options bind to.</summary>
    public const string Section = "CallLog";

    /// <summary><c>periodic</c> (answer first, write within <see cref="FlushInterval"/>) or <c>strict</c> (answer once the row is stored).</summary>
    [RegularExpression("^(periodic|strict)$", ErrorMessage = "CallLog:Durability must be periodic or strict.")]
    public string Durability { get; set; } = "periodic";

    /// <summary>Longest time a record waits in memory before its batch is written.</summary>
    [Range(typeof(TimeSpan), "00:00:00.001", "00:01:00", ErrorMessage = "CallLog:FlushInterval must be between 1 ms and 1 minute.")]
    public TimeSpan FlushInterval { get; set; } = TimeSpan.FromMilliseconds(200);

    /// <summary>
    /// Strict mode only: how long the writer lets a batch gather after its first record when the previous batch held several
    /// (callers are concurrent), so that they share one commit instead of each paying for a small one. 0 writes at once.
    /// </summary>
    [Range(typeof(TimeSpan), "00:00:00", "00:00:00.100", ErrorMessage = "CallLog:StrictGather must be between 0 and 100 ms.")]
    public TimeSpan StrictGather { get; set; } = TimeSpan.FromMilliseconds(1);

    /// <summary>Most rows one insert writes.</summary>
    [Range(1, 100_000, ErrorMessage = "CallLog:BatchSize must be between 1 and 100000.")]
    public int BatchSize { get; set; } = 5_000;

    /// <summary>Most records held in memory; when the database is slower than the calls, callers wait for room (back-pressure).</summary>
    [Range(100, 10_000_000, ErrorMessage = "CallLog:QueueCapacity must be between 100 and 10000000.")]
    public int QueueCapacity { get; set; } = 200_000;

    /// <summary>Days of call log kept; older day partitions are dropped.</summary>
    [Range(1, 3650, ErrorMessage = "CallLog:RetentionDays must be between 1 and 3650.")]
    public int RetentionDays { get; set; } = 90;

    /// <summary>Days of minute rollup rows kept (per account and per service); older ones are deleted hour by hour.</summary>
    [Range(1, 3650, ErrorMessage = "CallLog:MinuteRollupRetentionDays must be between 1 and 3650.")]
    public int MinuteRollupRetentionDays { get; set; } = 3;

    /// <summary>Days of hour rollup rows kept; 0 keeps them for ever. Day rows are always kept.</summary>
    [Range(0, 36500, ErrorMessage = "CallLog:HourRollupRetentionDays must be between 0 (keep) and 36500.")]
    public int HourRollupRetentionDays { get; set; }

    /// <summary>
    /// Longest time one write of a batch (or a housekeeping statement) may take, connecting included, before it is abandoned
    /// and retried: a hung database stalls the writer this long at most, not Npgsql's 30 s default.
    /// </summary>
    [Range(typeof(TimeSpan), "00:00:00.100", "00:05:00", ErrorMessage = "CallLog:CommandTimeout must be between 100 ms and 5 minutes.")]
    public TimeSpan CommandTimeout { get; set; } = TimeSpan.FromSeconds(5);

    /// <summary>True for strict durability.</summary>
    public bool Strict => Durability == "strict";
}

/// <summary>
/// The database-backed call log, the journal: records queue in a bounded channel and a background loop writes them in
/// batches, one transaction per batch (<see cref="JournalBatch"/>: binary COPY of the rows, then the batch's rollups and
/// totals aggregated in memory). The writer has a sender id, new at every start, and numbers its batches 1, 2, 3... with
/// one batch in flight at a time; a failed batch is retried with the same number until it is stored, and the number makes
/// its commit exactly-once, even when an attempt that timed out on this side did commit. In strict mode each caller waits
/// for its batch to commit, and the calls that arrive while one batch commits form the next one (group commit).
/// The loop also keeps day partitions (three days ahead are created, those past the retention are dropped) and deletes
/// minute (and, when configured, hour) rollup rows past their retention.
/// </summary>
public sealed partial class CallLogWriter : BackgroundService, ICallLog
{
    private const string LoopName = "call-log";

    private readonly Channel<Pending> _queue;
    private readonly NpgsqlDataSource _database;
    private readonly CallLogOptions _options;
    private readonly TimeProvider _time;
    private readonly BackgroundLoops _loops;
    private readonly ILogger<CallLogWriter> _logger;
    private const int RetentionChunk = 10_000;
    private static readonly TimeSpan MaxRetryDelay = TimeSpan.FromSeconds(2);

    private readonly SettlementBatcher _settlements;
    private readonly Guid _sender = Guid.NewGuid();
    private long _sequence;
    private DateOnly _partitionsCheckedFor;
    private DateTimeOffset _rollupsTrimmedFor;
    private long _written;
    private long _batches;
    private long _lastStoredTicks;
    private int _lastBatchSize;
    private int _inFlight;

    /// <summary>Creates the writer.</summary>
    public CallLogWriter(NpgsqlDataSource database, IOptions<CallLogOptions> options, TimeProvider time, BackgroundLoops loops, ILogger<CallLogWriter> logger,
        IMeterFactory meters, SettlementBatcher settlements)
    {
        _database = database;
        _settlements = settlements;
        _options = options.Value;
        _time = time;
        _loops = loops;
        _logger = logger;
        _queue = Channel.CreateBounded<Pending>(new BoundedChannelOptions(_options.QueueCapacity)
        {
            FullMode = BoundedChannelFullMode.Wait,
            SingleReader = true,
        });
        _loops.Register(LoopName, _options.FlushInterval + TimeSpan.FromSeconds(10));
        _lastStoredTicks = time.GetUtcNow().UtcTicks;
        var meter = meters.Create(MarketplaceMetrics.MeterName);
        meter.CreateObservableGauge("marketplace.calllog.pending", () => QueueLength + InFlight, "{record}",
            "Call-log records not yet stored on this node: queued, or in the batch being written.");
        meter.CreateObservableGauge("marketplace.calllog.lag", () => Lag.TotalSeconds, "s",
            "Time since the call log last stored a batch while records are waiting (0 when nothing waits).");
        meter.CreateObservableCounter("marketplace.calllog.written", () => Written, "{record}", "Call-log rows written by this node.");
        meter.CreateObservableCounter("marketplace.calllog.batches", () => Batches, "{batch}",
            "Call-log batches stored by this node, each one database transaction (strict mode: commits its callers shared).");
    }

    /// <summary>Records waiting to be written.</summary>
    public int QueueLength => _queue.Reader.Count;

    /// <summary>Records taken from the queue whose batch is being written (0 between batches).</summary>
    public int InFlight => Volatile.Read(ref _inFlight);

    /// <summary>Rows written since start.</summary>
    public long Written => Interlocked.Read(ref _written);

    /// <summary>Batches stored since start (each one database transaction): in strict mode, how many commits the callers shared.</summary>
    public long Batches => Interlocked.Read(ref _batches);

    /// <summary>This writer's sender id in <c>marketplace_journal_senders</c> (new at every process start).</summary>
    public Guid Sender => _sender;

    /// <summary>How long records have waited since the last stored batch; zero when none wait.</summary>
    public TimeSpan Lag => QueueLength == 0
        ? TimeSpan.Zero
        : _time.GetUtcNow() - new DateTimeOffset(Interlocked.Read(ref _lastStoredTicks), TimeSpan.Zero);

    /// <inheritdoc />
    public ValueTask WriteAsync(CallRecord record, CancellationToken cancellationToken)
    {
        if (!_options.Strict)
        {
            var pending = new Pending(record, null);
            return _queue.Writer.TryWrite(pending) ? ValueTask.CompletedTask : _queue.Writer.WriteAsync(pending, cancellationToken);
        }

        return WriteStrictAsync(record, cancellationToken);
    }

    private async ValueTask WriteStrictAsync(CallRecord record, CancellationToken cancellationToken)
    {
        var stored = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        await _queue.Writer.WriteAsync(new Pending(record, stored), cancellationToken);
        await stored.Task.WaitAsync(cancellationToken);
    }

    /// <inheritdoc />
    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        var batch = new List<Pending>(_options.BatchSize);
        while (true)
        {
            try
            {
                await KeepPartitionsAsync(stoppingToken);
                await TrimRollupsAsync(stoppingToken);
                if (!await WaitForRecordsAsync(stoppingToken))
                {
                    // Idle: the loop is alive, there is just nothing to write (and nothing lags).
                    _loops.Beat(LoopName);
                    Interlocked.Exchange(ref _lastStoredTicks, _time.GetUtcNow().UtcTicks);
                    continue;
                }

                // Let a batch fill for up to the flush interval. Strict callers are waiting: their batch gathers only briefly,
                // and only when callers are concurrent (the previous batch held several), as a lone caller would just wait.
                if (!_options.Strict && _queue.Reader.Count < _options.BatchSize)
                {
                    await Task.Delay(_options.FlushInterval, _time, stoppingToken);
                }
                else if (_options.Strict && _lastBatchSize > 1 && _options.StrictGather > TimeSpan.Zero && _queue.Reader.Count < _lastBatchSize)
                {
                    await Task.Delay(_options.StrictGather, _time, stoppingToken);
                }

                await FlushAvailableAsync(batch, stoppingToken);
                _loops.Beat(LoopName);
            }
            catch (OperationCanceledException) when (stoppingToken.IsCancellationRequested)
            {
                break;
            }
        }

        // Shutting down: write everything still queued (bounded by the host's shutdown timeout).
        _queue.Writer.TryComplete();
        using var drain = new CancellationTokenSource(TimeSpan.FromSeconds(20));
        try
        {
            await FlushAvailableAsync(batch, drain.Token, drain: true);
        }
        catch (OperationCanceledException)
        {
            LogDrainIncomplete(_logger, _queue.Reader.Count);
        }

        // The settlements of the last batches must reach their grains before the silo or client goes away.
        try
        {
            await _settlements.DrainAsync().WaitAsync(TimeSpan.FromSeconds(15), _time);
        }
        catch (TimeoutException)
        {
            LogSettlementsUndelivered(_logger, _settlements.InFlight);
        }
    }

    // True when records are waiting; false after a second without any.
    private async Task<bool> WaitForRecordsAsync(CancellationToken stoppingToken)
    {
        using var idle = CancellationTokenSource.CreateLinkedTokenSource(stoppingToken);
        idle.CancelAfter(TimeSpan.FromSeconds(1));
        try
        {
            return await _queue.Reader.WaitToReadAsync(idle.Token);
        }
        catch (OperationCanceledException) when (!stoppingToken.IsCancellationRequested)
        {
            return false;
        }
    }

    // Writes what is queued: in periodic mode whole batches, then one partial batch, whose successor waits for the next
    // flush interval (draining to empty under steady load wrote a small batch after every commit: measured 70 batches/s of
    // ~50 rows at 4,000 calls/s, each batch's statements parsed anew); strict callers are waiting, so strict mode and the
    // drain at shutdown write everything.
    private async Task FlushAvailableAsync(List<Pending> batch, CancellationToken cancellationToken, bool drain = false)
    {
        while (true)
        {
            batch.Clear();
            while (batch.Count < _options.BatchSize && _queue.Reader.TryRead(out var pending))
            {
                batch.Add(pending);
            }

            if (batch.Count == 0)
            {
                return;
            }

            Volatile.Write(ref _inFlight, batch.Count);
            await InsertWithRetryAsync(batch, cancellationToken);
            Volatile.Write(ref _inFlight, 0);
            _lastBatchSize = batch.Count;
            foreach (var pending in batch)
            {
                pending.Stored?.TrySetResult();
            }

            if (!drain && !_options.Strict && _queue.Reader.Count < _options.BatchSize)
            {
                return;
            }
        }
    }

    private async Task InsertWithRetryAsync(List<Pending> batch, CancellationToken cancellationToken)
    {
        var records = batch.ConvertAll(pending => pending.Record);
        var sequence = ++_sequence;
        var delay = TimeSpan.FromMilliseconds(100);
        while (true)
        {
            try
            {
                var committed = true;
                await WithTimeoutAsync(async token => committed = await JournalBatch.WriteAsync(_database, _sender, sequence, records, token), cancellationToken);
                if (!committed)
                {
                    LogBatchAlreadyStored(_logger, sequence, batch.Count);
                }

                Interlocked.Increment(ref _batches);
                Interlocked.Add(ref _written, batch.Count);
                Interlocked.Exchange(ref _lastStoredTicks, _time.GetUtcNow().UtcTicks);

                // Durable now (by this attempt or an earlier one): its settled calls may reach their grains, named by the batch.
                _settlements.Deliver(_sender, sequence, records);
                return;
            }
            catch (Exception exception) when (IsDatabaseFailure(exception, cancellationToken))
            {
                // The same batch, with the same number, is tried again until the database takes it; meanwhile the queue fills and,
                // once full, callers wait. An attempt abandoned after the timeout may still commit on the server: the retry then
                // finds its number already stored (or waits on the sender row until that attempt ends) and writes nothing.
                _loops.Failed(LoopName, exception);
                LogFlushFailed(_logger, exception, batch.Count, delay.TotalMilliseconds);
                await Task.Delay(delay, _time, cancellationToken);
                delay = TimeSpan.FromTicks(Math.Min(delay.Ticks * 2, MaxRetryDelay.Ticks));
            }
        }
    }

    // Runs one database operation with the command timeout, connecting included. The token makes Npgsql cancel the
    // statement on the server; a hung server answers neither that nor a connection attempt (Npgsql would wait for its own
    // timeouts, 15 s to connect and 30 s per command), so the writer stops waiting at the timeout in any case and leaves the
    // attempt to end on its own. Should that attempt still commit, the retry writes nothing (see InsertWithRetryAsync).
    private async Task WithTimeoutAsync(Func<CancellationToken, Task> operation, CancellationToken cancellationToken)
    {
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        timeout.CancelAfter(_options.CommandTimeout);
        var attempt = operation(timeout.Token);
        try
        {
            await attempt.WaitAsync(timeout.Token);
        }
        catch (OperationCanceledException exception) when (!cancellationToken.IsCancellationRequested)
        {
            _ = attempt.ContinueWith(static abandoned => abandoned.Exception, CancellationToken.None, TaskContinuationOptions.OnlyOnFaulted,
                TaskScheduler.Default);
            throw new TimeoutException($"The database did not complete the call-log statement within {_options.CommandTimeout.TotalSeconds:0.###} s.", exception);
        }
    }

    private static bool IsDatabaseFailure(Exception exception, CancellationToken cancellationToken) =>
        exception is NpgsqlException or TimeoutException or InvalidOperationException && !cancellationToken.IsCancellationRequested;

    /// <summary>
    /// Upper bounds (ms, exclusive) of the rollups' latency histogram of total call time; one more bucket holds the slower
    /// calls. Fixed: migration 0005 and every stored histogram use these.
    /// </summary>
    public static IReadOnlyList<int> LatencyBoundsMs { get; } = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 30000];

    /// <summary>The outcome as stored (and shown): camelCase of the enum name.</summary>
    public static string OutcomeName(CallOutcome outcome)
    {
        var name = outcome.ToString();
        return char.ToLowerInvariant(name[0]) + name[1..];
    }

    // Creates today's and the next days' partitions and drops those past the retention, once per UTC day.
    private async Task KeepPartitionsAsync(CancellationToken cancellationToken)
    {
        var today = DateOnly.FromDateTime(_time.GetUtcNow().UtcDateTime);
        if (_partitionsCheckedFor == today)
        {
            return;
        }

        try
        {
            await WithTimeoutAsync(token => KeepPartitionsAsync(today, token), cancellationToken);
            _partitionsCheckedFor = today;
        }
        catch (Exception exception) when (IsDatabaseFailure(exception, cancellationToken))
        {
            // Rows still land in the default partition; the next cycle tries again.
            LogPartitionsFailed(_logger, exception);
        }
    }

    private async Task KeepPartitionsAsync(DateOnly today, CancellationToken cancellationToken)
    {
        for (var day = today.AddDays(-1); day <= today.AddDays(3); day = day.AddDays(1))
        {
            await using var create = _database.CreateCommand(
                $"CREATE TABLE IF NOT EXISTS {PartitionName(day)} PARTITION OF marketplace_call_log " +
                $"FOR VALUES FROM ('{day:yyyy-MM-dd}') TO ('{day.AddDays(1):yyyy-MM-dd}')");
            await create.ExecuteNonQueryAsync(cancellationToken);
        }

        await using var list = _database.CreateCommand(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_class p ON p.oid = i.inhparent " +
            "WHERE p.relname = 'marketplace_call_log' AND c.relname LIKE 'marketplace_call_log_p%'");
        var old = new List<string>();
        await using (var reader = await list.ExecuteReaderAsync(cancellationToken))
        {
            var cutoff = today.AddDays(-_options.RetentionDays);
            while (await reader.ReadAsync(cancellationToken))
            {
                var name = reader.GetString(0);
                if (DateOnly.TryParseExact(name["marketplace_call_log_p".Length..], "yyyyMMdd", CultureInfo.InvariantCulture, DateTimeStyles.None, out var day)
                    && day < cutoff)
                {
                    old.Add(name);
                }
            }
        }

        foreach (var name in old)
        {
            await using var drop = _database.CreateCommand($"DROP TABLE IF EXISTS {name}");
            await drop.ExecuteNonQueryAsync(cancellationToken);
            LogPartitionDropped(_logger, name);
        }
    }

    // Once an hour, deletes the rollup rows past their retention: a chunk per cycle of the loop, so that a large backlog
    // (the first run after a long time) never holds up the call-log writes for long.
    private async Task TrimRollupsAsync(CancellationToken cancellationToken)
    {
        var now = _time.GetUtcNow();
        var hour = new DateTimeOffset(now.UtcTicks - (now.UtcTicks % TimeSpan.TicksPerHour), TimeSpan.Zero);
        if (_rollupsTrimmedFor == hour)
        {
            return;
        }

        try
        {
            var deleted = 0L;
            await WithTimeoutAsync(
                async token => deleted = await DeleteExpiredRollupsAsync(_database, now, _options.MinuteRollupRetentionDays, _options.HourRollupRetentionDays,
                    RetentionChunk, token),
                cancellationToken);
            if (deleted < RetentionChunk)
            {
                // And the batch numbers of writers gone for a week (stopped processes; a retry never comes that late).
                await WithTimeoutAsync(async token =>
                {
                    await using var forget = _database.CreateCommand("DELETE FROM marketplace_journal_senders WHERE updated_at < now() - interval '7 days'");
                    await forget.ExecuteNonQueryAsync(token);

                    // Batches grains may fetch (migration 0011) are fetched within Metering:ReservationTimeout of their commit.
                    await using var fetched = _database.CreateCommand("DELETE FROM marketplace_journal_key_batches WHERE committed_at < now() - interval '1 hour'");
                    await fetched.ExecuteNonQueryAsync(token);
                }, cancellationToken);
                _rollupsTrimmedFor = hour;
            }

            if (deleted > 0)
            {
                LogRollupsTrimmed(_logger, deleted);
            }
        }
        catch (Exception exception) when (IsDatabaseFailure(exception, cancellationToken))
        {
            LogTrimFailed(_logger, exception);
        }
    }

    /// <summary>
    /// Deletes up to <paramref name="limit"/> rollup rows of each kind past its retention: minute rows (per account and per
    /// service) whose bucket starts more than <paramref name="minuteDays"/> days before <paramref name="now"/>, and hour rows
    /// older than <paramref name="hourDays"/> days unless that is 0. Each delete reads a time range of the primary key
    /// (granularity, bucket_start, ...). Returns the most rows one of the deletes removed: less than
    /// <paramref name="limit"/> means nothing expired is left.
    /// </summary>
    public static async Task<long> DeleteExpiredRollupsAsync(
        NpgsqlDataSource database, DateTimeOffset now, int minuteDays, int hourDays, int limit, CancellationToken cancellationToken)
    {
        var most = 0L;
        var expiries = new List<(string Granularity, DateTimeOffset Before)> { ("minute", now.AddDays(-minuteDays)) };
        if (hourDays > 0)
        {
            expiries.Add(("hour", now.AddDays(-hourDays)));
        }

        foreach (var (granularity, before) in expiries)
        {
            foreach (var table in new[] { $"marketplace_usage_rollup_{granularity}", "marketplace_usage_service_rollup" })
            {
                await using var delete = database.CreateCommand(
                    $"DELETE FROM {table} WHERE ctid = ANY(ARRAY(SELECT ctid FROM {table} WHERE granularity = $1 AND bucket_start < $2 LIMIT $3))");
                delete.Parameters.Add(new NpgsqlParameter { Value = granularity, NpgsqlDbType = NpgsqlDbType.Varchar });
                delete.Parameters.Add(new NpgsqlParameter { Value = before, NpgsqlDbType = NpgsqlDbType.TimestampTz });
                delete.Parameters.Add(new NpgsqlParameter { Value = limit, NpgsqlDbType = NpgsqlDbType.Integer });
                most = Math.Max(most, await delete.ExecuteNonQueryAsync(cancellationToken));
            }
        }

        return most;
    }

    /// <summary>The partition that holds one UTC day.</summary>
    public static string PartitionName(DateOnly day) => $"marketplace_call_log_p{day:yyyyMMdd}";

    private sealed record Pending(CallRecord Record, TaskCompletionSource? Stored);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Call log: a batch of {Count} rows could not be written; retrying in {DelayMs} ms")]
    private static partial void LogFlushFailed(ILogger logger, Exception exception, int count, double delayMs);

    [LoggerMessage(Level = LogLevel.Information, Message = "Call log: batch {Sequence} ({Count} rows) was already stored by an earlier attempt")]
    private static partial void LogBatchAlreadyStored(ILogger logger, long sequence, int count);

    [LoggerMessage(Level = LogLevel.Error, Message = "Call log: {Count} records were still queued when shutdown ended")]
    private static partial void LogDrainIncomplete(ILogger logger, int count);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Call log: settled calls for {Count} grains were still unanswered when shutdown ended; the grains count them from the journal when they next activate")]
    private static partial void LogSettlementsUndelivered(ILogger logger, int count);

    [LoggerMessage(Level = LogLevel.Information, Message = "Call log: dropped partition {Partition} (past the retention)")]
    private static partial void LogPartitionDropped(ILogger logger, string partition);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Call log: partitions could not be kept up to date")]
    private static partial void LogPartitionsFailed(ILogger logger, Exception exception);

    [LoggerMessage(Level = LogLevel.Information, Message = "Call log: deleted {Count} rollup rows past their retention")]
    private static partial void LogRollupsTrimmed(ILogger logger, long count);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Call log: rollup rows past their retention could not be deleted")]
    private static partial void LogTrimFailed(ILogger logger, Exception exception);
}
