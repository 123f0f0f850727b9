namespace Marketplace.Grains;

/// <summary>
/// Stage 5, charge: how the upstream's answer ends the call, and what the service's charge rule charges for it (per
/// success, per call sent, per hit) out of the price admission reserved. The charge is settled by the call's record.
/// </summary>
internal static class ChargeStage
{
    /// <summary>The result of an admitted, forwarded call.</summary>
    public static CallResult Completed(CallTrace trace, ForwardResult forwarded)
    {
        var (route, admission) = (trace.Route!, trace.Admission!);
        var succeeded = forwarded.Outcome == CallOutcome.Succeeded;
        var charged = route.ChargeRule switch
        {
            ChargeRule.PerCall => forwarded.Sent,
            ChargeRule.PerHit => succeeded && forwarded.Hit,
            _ => succeeded,
        };
        var charge = charged ? admission.Reserved : 0;
        return new CallResult(trace.TrackId, forwarded.Outcome, null, forwarded.Status, forwarded.ContentType, forwarded.Body, charge, route.PricePerCall,
            admission.Available + admission.Reserved - charge, route.Currency, forwarded.Detail, admission.Limit, trace.Adapter!.Id, forwarded.RetryAfterSeconds,
            CallId: trace.CallId)
        {
            Forwarded = forwarded.Forwarded,
        };
    }

    /// <summary>How an upstream's answer ends the call: 2xx succeeded, 4xx the upstream refused the request, anything else failed.</summary>
    public static ForwardResult Classify(int status, UpstreamAdapter adapter, bool sent, bool forwarded, UpstreamAnswer? answer = null, UpstreamAnswer? mapped = null)
    {
        var outcome = status switch
        {
            >= 200 and < 300 => CallOutcome.Succeeded,
            >= 400 and < 500 => CallOutcome.UpstreamRejected,
            _ => CallOutcome.UpstreamFailed,
        };

        // A passed-through answer has no hit rule (any 2xx is a hit); a read one is judged by the version's rule.
        var hit = answer is null ? outcome == CallOutcome.Succeeded : adapter.IsHit(answer);
        return new ForwardResult(outcome, status, mapped?.ContentType, mapped?.Body,
            outcome == CallOutcome.UpstreamFailed ? $"The upstream answered {status}." : null, Sent: sent, Hit: hit,
            Forwarded: forwarded && PassThroughCall.PassesStatus(status));
    }
}
