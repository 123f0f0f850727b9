using Microsoft.Extensions.Logging;

namespace Marketplace.Grains;

/// <summary>
/// Stage 2, shed: the version the gray release picks and its protection on this node (breaker, concurrency limit). It
/// runs before admission, so a shed call uses no quota and reserves nothing; only a pin on an account must wait for
/// admission to know the account.
/// </summary>
internal sealed class ShedStage(UpstreamProtection protection, MarketplaceMetrics metrics, ILogger logger)
{
    /// <summary>A refusal, or null with the version, its guard and a concurrency permit in <paramref name="trace"/>.</summary>
    public CallResult? Enter(CallTrace trace, string? accountId)
    {
        var compiled = trace.Compiled!;
        var route = compiled.Route;
        var versionId = GrayRelease.Choose(route, compiled.OrderedWeights, trace.KeyId!, accountId);
        if (versionId is null || !compiled.Adapters.TryGetValue(versionId, out var adapter))
        {
            return trace.Refused(CallOutcome.UpstreamUnavailable) with
            {
                Detail = "The data service has no version to serve this call.", RetryAfterSeconds = 60,
            };
        }

        if (adapter.SecretsUnavailable)
        {
            CallPipelineLog.SecretsUnavailable(logger, route.ServiceId, adapter.Id);
            return trace.Refused(CallOutcome.UpstreamUnavailable) with
            {
                Version = adapter.Id, Detail = "The data service's upstream credentials are not available on this node.", RetryAfterSeconds = 60,
            };
        }

        var guard = protection.For(adapter);
        if (guard.IsOpen(out var retryAfter))
        {
            metrics.RecordShed(route.ServiceId, MarketplaceMetrics.Reasons.BreakerOpen);
            return trace.Refused(CallOutcome.UpstreamUnavailable) with
            {
                Version = adapter.Id, Detail = "The data service is failing; its circuit breaker is open.", RetryAfterSeconds = retryAfter,
            };
        }

        var permit = guard.TryEnter();
        if (permit is null)
        {
            metrics.RecordShed(route.ServiceId, MarketplaceMetrics.Reasons.ConcurrencyFull);
            return trace.Refused(CallOutcome.UpstreamUnavailable) with
            {
                Version = adapter.Id, Detail = "The data service is at its concurrency limit.", RetryAfterSeconds = 1,
            };
        }

        (trace.Adapter, trace.Guard, trace.Permit) = (adapter, guard, permit);
        return null;
    }
}
