using Microsoft.Extensions.Logging;

namespace Marketplace.Grains;

/// <summary>
/// Stage 3, admit: the key authenticates the caller, checks entitlement, rate, quotas and the account's balance, and
/// reserves the price; from this front door's lease of the key (no grain call while it lasts), or by the key grain itself
/// when leases are off. Never repeated after a fault that may have admitted it: quota and balance would count it twice.
/// </summary>
internal sealed class AdmitStage(KeyLeaseCache leases, bool leased, GrainReferences<IApiKeyGrain> keys, HotPathCalls hotPath, ILogger logger)
{
    /// <summary>A refusal, or null with the admission in <paramref name="trace"/>.</summary>
    public async ValueTask<CallResult?> RunAsync(CallTrace trace)
    {
        var route = trace.Route!;
        var keyId = trace.KeyId!;
        var admission = leased
            ? await leases.AdmitAsync(keyId, trace.Proof, trace.Kind, route.ServiceId, route.PricePerCall, route.Currency)
            : await AdmitByTheKeyAsync(trace, route, keyId);
        if (admission.Outcome != AdmitOutcome.Admitted)
        {
            CallPipelineLog.Rejected(logger, route.ServiceId, keyId, admission.Outcome);
            return trace.Refused(CallOutcome.Rejected, admission.Outcome) with { Available = admission.Available, Limit = admission.Limit };
        }

        trace.Admission = admission;
        trace.AccountId = admission.AccountId;
        trace.Reserved = admission.Reserved;
        trace.Hold = admission.Hold;
        trace.WindowOffsetMinutes = admission.WindowOffsetMinutes;
        trace.KeyEpoch = admission.Epoch;
        return null;
    }

    private async Task<AdmitResult> AdmitByTheKeyAsync(CallTrace trace, ServiceRoute route, string keyId)
    {
        var key = keys.Get(keyId);
        var request = new AdmitRequest(trace.Proof, route.ServiceId, route.PricePerCall, route.Currency, trace.TrackId, trace.Kind);
        return await hotPath.CallAsync(() => key.AdmitAsync(request), HotPathRetry.WhenNotRun, "API key");
    }
}
