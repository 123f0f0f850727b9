namespace Marketplace.Grains;

/// <summary>How forwarding ended: the outcome, the upstream's status, a body read whole (not for an answer passed through),
/// whether the request reached the upstream (<paramref name="Sent"/>, for per-call charging), whether the answer was a hit,
/// and whether it already went to the caller's connection (<paramref name="Forwarded"/>).</summary>
internal sealed record ForwardResult(
    CallOutcome Outcome, int Status, string? ContentType, byte[]? Body, string? Detail, bool Sent, bool Hit = false, int? RetryAfterSeconds = null,
    bool Forwarded = false);
