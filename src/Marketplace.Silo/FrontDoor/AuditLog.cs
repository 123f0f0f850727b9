using System.Text.Json;
using Npgsql;

namespace Marketplace.Silo.FrontDoor;

/// <summary>Records who changed what through the admin API, with the request's TrackId.</summary>
public sealed partial class AuditLog(NpgsqlDataSource database, ILogger<AuditLog> logger)
{
    /// <summary>Writes one audit row. A failure is logged, not thrown: the change itself already happened.</summary>
    public async Task RecordAsync(HttpContext context, string action, string entityKind, string entityId, object? detail = null)
    {
        try
        {
            await using var command = database.CreateCommand(
                "INSERT INTO marketplace_audit_log (track_id, actor, action, entity_kind, entity_id, detail) VALUES ($1, $2, $3, $4, $5, $6::jsonb)");
            command.Parameters.AddWithValue(context.GetTrackId());
            command.Parameters.AddWithValue(ProviderAuthentication.TryGetProviderId(context) is { } provider ? "provider:" + provider : "admin");
            command.Parameters.AddWithValue(action);
            command.Parameters.AddWithValue(entityKind);
            command.Parameters.AddWithValue(entityId);
            command.Parameters.AddWithValue(detail is null ? DBNull.Value : JsonSerializer.Serialize(detail));
            await command.ExecuteNonQueryAsync(context.RequestAborted);
        }
        catch (Exception exception) when (exception is NpgsqlException or OperationCanceledException)
        {
            LogAuditFailed(logger, exception, action, entityKind, entityId);
        }
    }

    [LoggerMessage(Level = LogLevel.Error, Message = "Audit record {Action} {EntityKind} {EntityId} could not be written")]
    private static partial void LogAuditFailed(ILogger logger, Exception exception, string action, string entityKind, string entityId);
}
