using Marketplace.Grains;
using Microsoft.Extensions.Options;
using Npgsql;

namespace Marketplace.Silo.Database;

/// <summary>
/// Deletes Idempotency-Key records once they have expired: every hour, the stored state of each key not written for
/// <c>Idempotency:Window</c> plus an hour (longer than any claim a call may hold: 120 s × 6 attempts and back-off). Until
/// then a record is kept through restarts, so a retry after a restart is still answered from the first call.
/// </summary>
public sealed partial class IdempotencyRecordsPurge(
    NpgsqlDataSource database, IOptions<IdempotencyOptions> options, TimeProvider time, ILogger<IdempotencyRecordsPurge> logger) : BackgroundService
{
    /// <summary>How often expired records are deleted.</summary>
    public static readonly TimeSpan Interval = TimeSpan.FromHours(1);

    /// <summary>How much longer than the window a record is kept: more than the longest claim a running call holds.</summary>
    public static readonly TimeSpan Margin = TimeSpan.FromHours(1);

    /// <summary>Deletes the records last written before the window and the margin; returns how many.</summary>
    public async Task<int> PurgeAsync(CancellationToken cancellationToken)
    {
        await using var command = database.CreateCommand("DELETE FROM orleans_grain_state WHERE grain_type = $1 AND modified_at < $2");
        command.Parameters.AddWithValue(IdempotencyGrain.StateName);
        command.Parameters.AddWithValue(time.GetUtcNow() - options.Value.Window - Margin);
        return await command.ExecuteNonQueryAsync(cancellationToken);
    }

    /// <inheritdoc />
    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        // The first round an interval after start: nothing is added to start-up (the delete reads the grain state table).
        using var timer = new PeriodicTimer(Interval, time);
        while (await timer.WaitForNextTickAsync(stoppingToken).ConfigureAwait(false))
        {
            try
            {
                var deleted = await PurgeAsync(stoppingToken);
                if (deleted > 0)
                {
                    LogPurged(logger, deleted);
                }
            }
            catch (Exception exception) when (exception is NpgsqlException or TimeoutException)
            {
                // The next round tries again; an expired record answers nothing meanwhile (its grain checks the expiry).
                LogPurgeFailed(logger, exception.Message);
            }
        }
    }

    [LoggerMessage(Level = LogLevel.Information, Message = "Deleted {Count} expired Idempotency-Key records")]
    private static partial void LogPurged(ILogger logger, int count);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Expired Idempotency-Key records not deleted this round: {Reason}")]
    private static partial void LogPurgeFailed(ILogger logger, string reason);
}
