using Microsoft.Extensions.Logging;

namespace Marketplace.Grains;

/// <summary>The call pipeline's log lines (one category: <see cref="CallPipeline"/>), shared by its stages.</summary>
internal static partial class CallPipelineLog
{
    [LoggerMessage(Level = LogLevel.Warning, Message = "Call to {ServiceId} failed in the cluster: {Reason}")]
    public static partial void ClusterFault(ILogger logger, string? serviceId, string reason);

    [LoggerMessage(Level = LogLevel.Error, Message = "Call to {ServiceId} failed unexpectedly")]
    public static partial void Unexpected(ILogger logger, Exception exception, string? serviceId);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Idempotency-Key state not stored: {Reason}")]
    public static partial void IdempotencyNotStored(ILogger logger, string reason);

    [LoggerMessage(Level = LogLevel.Information, Message = "Call to {ServiceId} refused for key {KeyId}: {Reason}")]
    public static partial void Rejected(ILogger logger, string serviceId, string keyId, AdmitOutcome reason);

    [LoggerMessage(Level = LogLevel.Debug, Message = "Call to {ServiceId} version {Version} ended {Outcome} ({Status}) in {ElapsedMs:F1} ms, charged {Charged}")]
    public static partial void Completed(ILogger logger, string serviceId, string version, CallOutcome outcome, int status, double elapsedMs, long charged);

    [LoggerMessage(Level = LogLevel.Error, Message = "Secret headers of {ServiceId} version {Version} cannot be decrypted here; check Secrets:Key")]
    public static partial void SecretsUnavailable(ILogger logger, string serviceId, string version);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Upstream of {ServiceId} unreachable: {Reason}")]
    public static partial void UpstreamUnreachable(ILogger logger, string serviceId, string reason);
}
