using System.Diagnostics;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;

namespace Marketplace.Grains;

/// <summary>
/// One call from admission to settlement, the same for HTTP callers and internal .NET callers, as explicit stages:
/// <see cref="RouteStage"/> (route, request form, upstream rate) → <see cref="ShedStage"/> (version, breaker, concurrency)
/// → <see cref="AdmitStage"/> (the key: credential, entitlement, limits, balance; from the front door's lease) →
/// <see cref="ForwardStage"/> (the upstream, within the version's protection) → <see cref="ChargeStage"/> (the service's
/// charge rule) → <see cref="RecordStage"/> (metrics and the journal row, whose writer settles the call once it is
/// durable, so the caller never waits for metering). <see cref="IdempotencyStage"/> wraps admit, forward and charge once
/// for a call with an Idempotency-Key. Every grain call is bounded by <see cref="HotPathCalls"/>, and every call is
/// recorded, whatever ended it.
/// </summary>
public sealed class CallPipeline
{
    /// <summary>Name of the HTTP client configuration (its pooled handler) used for upstream calls.</summary>
    public const string HttpClientName = "marketplace-upstream";

    /// <summary>Largest upstream response body the pipeline reads whole (a pass-through answer streams with no cap).</summary>
    public const int MaxResponseBytes = 8 * 1024 * 1024;

    private readonly RouteStage _route;
    private readonly ShedStage _shed;
    private readonly AdmitStage _admit;
    private readonly IdempotencyStage _idempotency;
    private readonly ForwardStage _forward;
    private readonly RecordStage _record;
    private readonly TimeProvider _time;
    private readonly ILogger _logger;

    /// <summary>Builds the stages; the host registers a database-backed call log, grain tests and benchmarks run without one.</summary>
    public CallPipeline(
        IGrainFactory grains,
        UpstreamClient upstream,
        ServiceRouteCache routes,
        HotPathCalls hotPath,
        KeyLeaseCache leases,
        IOptions<LeaseOptions> leaseOptions,
        UpstreamLimiter upstreamLimiter,
        UpstreamProtection protection,
        MarketplaceMetrics metrics,
        TimeProvider time,
        IServiceProvider services,
        ILogger<CallPipeline> logger)
    {
        var keys = new GrainReferences<IApiKeyGrain>(grains);
        var idempotencyWindow = services.GetService<IOptions<IdempotencyOptions>>()?.Value.Window ?? TimeSpan.FromHours(24);
        _route = new RouteStage(routes, upstreamLimiter);
        _shed = new ShedStage(protection, metrics, logger);
        _admit = new AdmitStage(leases, leaseOptions.Value.Enabled, keys, hotPath, logger);
        _idempotency = new IdempotencyStage(grains, keys, hotPath, idempotencyWindow, logger);
        _forward = new ForwardStage(upstream, metrics, logger);
        _record = new RecordStage(services.GetService<ICallLog>() ?? NullCallLog.Instance, metrics);
        _time = time;
        _logger = logger;
    }

    /// <summary>
    /// Runs one call and records it in the call log. Never throws but for the caller's own cancellation (which is logged
    /// too): upstream failures, cluster faults and unexpected errors become outcomes.
    /// </summary>
    public Task<CallResult> CallAsync(CallRequest request, CancellationToken cancellationToken = default) => CallAsync(request, null, cancellationToken);

    /// <summary>
    /// Runs one call like <see cref="CallAsync(CallRequest, CancellationToken)"/>; a pass-through answer without an
    /// Idempotency-Key goes straight to <paramref name="connection"/> as it arrives (the result is then
    /// <see cref="CallResult.Forwarded"/>).
    /// </summary>
    public async Task<CallResult> CallAsync(CallRequest request, ICallerConnection? connection, CancellationToken cancellationToken)
    {
        var started = Stopwatch.GetTimestamp();
        var at = _time.GetUtcNow();
        var trace = new CallTrace { CallId = TimeOrderedIds.New(at), TrackId = TrackIds.AcceptOrNew(request.TrackId) };
        CallResult result;
        try
        {
            result = await RunAsync(request, connection, trace, cancellationToken);
        }
        catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
        {
            await _record.RecordAsync(request, trace, at, started, trace.Refused(CallOutcome.ClientCancelled) with { Version = trace.Version });
            throw;
        }
        catch (Exception exception)
        {
            result = Failed(trace, exception);
        }

        // The row is written even when the caller has gone meanwhile: the call happened.
        result = result with { CallId = trace.CallId };
        await _record.RecordAsync(request, trace, at, started, result);
        return result;
    }

    private async Task<CallResult> RunAsync(CallRequest request, ICallerConnection? connection, CallTrace trace, CancellationToken cancellationToken)
    {
        RequestContext.Set(TrackIds.ContextKey, trace.TrackId);
        if (await _route.RunAsync(request, trace) is { } unrouted)
        {
            return unrouted;
        }

        if (!GrayRelease.NeedsAccount(trace.Route!, trace.KeyId!) && _shed.Enter(trace, accountId: null) is { } shed)
        {
            return shed;
        }

        try
        {
            // An answer an Idempotency-Key must keep for replays is read whole, never streamed past the pipeline.
            return request.IdempotencyKey is null
                ? await AdmitAndForwardAsync(request, trace, connection, cancellationToken)
                : await _idempotency.RunOnceAsync(request, trace, () => AdmitAndForwardAsync(request, trace, connection: null, cancellationToken));
        }
        finally
        {
            trace.Permit?.Dispose();
        }
    }

    private async Task<CallResult> AdmitAndForwardAsync(CallRequest request, CallTrace trace, ICallerConnection? connection, CancellationToken cancellationToken)
    {
        if (await _admit.RunAsync(trace) is { } refused)
        {
            return refused;
        }

        var admission = trace.Admission!;
        if (trace.Adapter is null && _shed.Enter(trace, admission.AccountId) is { } lateShed)
        {
            return lateShed with { Available = admission.Available + admission.Reserved };
        }

        var forwarded = await _forward.RunAsync(request, trace, connection, cancellationToken);
        var result = ChargeStage.Completed(trace, forwarded);
        CallPipelineLog.Completed(_logger, trace.Route!.ServiceId, trace.Adapter!.Id, forwarded.Outcome, forwarded.Status, trace.UpstreamMs ?? 0, result.Charged);
        return result;
    }

    // A call that a cluster fault or an unexpected error ended: 503 and safe to repeat, or 500 with the details in the log.
    private CallResult Failed(CallTrace trace, Exception exception)
    {
        if (HotPathCalls.IsClusterFault(exception))
        {
            CallPipelineLog.ClusterFault(_logger, trace.ServiceId, exception.Message);
            return trace.Refused(CallOutcome.ClusterUnavailable) with
            {
                Version = trace.Version, RetryAfterSeconds = 1,
                Detail = (exception is ClusterUnavailableException ? exception.Message : "A marketplace node went away while handling the call.")
                    + " The call was not forwarded; repeating it is safe.",
            };
        }

        CallPipelineLog.Unexpected(_logger, exception, trace.ServiceId);
        return trace.Refused(CallOutcome.InternalError) with
        {
            Version = trace.Version, Detail = "An unexpected error occurred; quote the TrackId when you report it.",
        };
    }
}
