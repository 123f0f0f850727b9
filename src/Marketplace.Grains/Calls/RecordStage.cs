using System.Diagnostics;

namespace Marketplace.Grains;

/// <summary>
/// Stage 6, record: the call's metrics and its row in the journal, whatever ended it. The journal's writer sends the
/// settlement once the row is durable, so the caller never waits for metering (in periodic mode).
/// </summary>
internal sealed class RecordStage(ICallLog callLog, MarketplaceMetrics metrics)
{
    public ValueTask RecordAsync(CallRequest request, CallTrace trace, DateTimeOffset at, long started, CallResult result)
    {
        var total = Stopwatch.GetElapsedTime(started);
        metrics.RecordCall(request.ServiceId, result.Version, result.Outcome, result.Rejection, total,
            trace.UpstreamMs is { } upstreamMs ? TimeSpan.FromMilliseconds(upstreamMs) : null);

        // Ids that cannot name a service are answered 404 and not logged: the log holds calls, not noise.
        if (!Ids.IsValid(request.ServiceId))
        {
            return ValueTask.CompletedTask;
        }

        // Written even when the caller has gone meanwhile: the call happened.
        return callLog.WriteAsync(new CallRecord(
            trace.CallId, result.TrackId, at, trace.AccountId, trace.KeyId, request.ServiceId, result.Version, result.Outcome, result.Rejection, result.UpstreamStatus,
            trace.UpstreamMs, total.TotalMilliseconds, result.Price, result.Charged, result.Currency, request.IdempotencyKey,
            trace.Reserved, trace.Hold, trace.WindowOffsetMinutes, trace.KeyEpoch),
            CancellationToken.None);
    }
}
