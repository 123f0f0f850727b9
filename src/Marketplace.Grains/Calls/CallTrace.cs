using System.Threading.RateLimiting;

namespace Marketplace.Grains;

/// <summary>
/// One call as it goes through the stages: what each stage found for the next (route, credential, version and its
/// protection, admission), and what the call log needs beyond the result.
/// </summary>
internal sealed class CallTrace
{
    public Guid CallId { get; init; }

    public string TrackId { get; init; } = string.Empty;

    public string? ServiceId { get; set; }

    public CompiledRoute? Compiled { get; set; }

    public ServiceRoute? Route { get; set; }

    public string? KeyId { get; set; }

    public string Proof { get; set; } = string.Empty;

    public CredentialKind Kind { get; set; }

    public UpstreamAdapter? Adapter { get; set; }

    public VersionGuard? Guard { get; set; }

    // The version's concurrency permit, released when the call ends.
    public RateLimitLease? Permit { get; set; }

    public AdmitResult? Admission { get; set; }

    // Set once the key admitted the call: its record is then a settled call, which releases the reservation.
    public string? AccountId { get; set; }

    public long Reserved { get; set; }

    public long Hold { get; set; }

    public int WindowOffsetMinutes { get; set; }

    // The key activation that admitted the call: its settlement names it.
    public long KeyEpoch { get; set; }

    public string? Version { get; set; }

    public double? UpstreamMs { get; set; }

    /// <summary>A refusal of this call, with its service's price and currency when the route is known.</summary>
    public CallResult Refused(CallOutcome outcome, AdmitOutcome? rejection = null) =>
        CallResult.Refused(TrackId, outcome, rejection, Route?.PricePerCall ?? 0, Route?.Currency);
}
