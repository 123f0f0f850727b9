namespace Marketplace;

/// <summary>A consumer's call to a data service, as the pipeline sees it whatever door it came through.</summary>
/// <param name="Credential">The API key (<c>mk_&lt;keyId&gt;.&lt;secret&gt;</c>) or access token (<c>mt_...</c>) presented by the caller.</param>
/// <param name="Path">The part of the path after the service id, forwarded to the upstream (may be empty).</param>
/// <param name="Query">The query string including its leading '?', or empty.</param>
/// <param name="TrackId">The caller's well-formed TrackId, or null to have one generated.</param>
[GenerateSerializer, Immutable, Alias("mk.CallRequest")]
public sealed record CallRequest(
    [property: Id(0)] string ServiceId,
    [property: Id(1)] string Credential,
    [property: Id(2)] string Method,
    [property: Id(3)] string Path,
    [property: Id(4)] string Query,
    [property: Id(5)] string? ContentType,
    [property: Id(6)] byte[]? Body,
    [property: Id(7)] string? TrackId,
    [property: Id(8)] string? IdempotencyKey = null);

/// <summary>How a call ended.</summary>
public enum CallOutcome
{
    /// <summary>The upstream answered 2xx.</summary>
    Succeeded = 0,

    /// <summary>The upstream answered 4xx: the caller's input was refused upstream; passed through, not charged.</summary>
    UpstreamRejected = 1,

    /// <summary>The upstream answered 5xx or garbage.</summary>
    UpstreamFailed = 2,

    /// <summary>The upstream did not answer in time.</summary>
    UpstreamTimeout = 3,

    /// <summary>The upstream could not be reached.</summary>
    UpstreamUnreachable = 4,

    /// <summary>The marketplace refused the call before calling the upstream (see <see cref="CallResult.Rejection"/>).</summary>
    Rejected = 5,

    /// <summary>The data service does not exist.</summary>
    UnknownService = 6,

    /// <summary>The service's own rate limit towards its upstream is exhausted on this silo.</summary>
    UpstreamRateLimited = 7,

    /// <summary>The version's circuit breaker is open or its concurrency limit is reached (load shed); not charged.</summary>
    UpstreamUnavailable = 8,

    /// <summary>The data service is suspended by its provider or an admin; not charged.</summary>
    ServiceSuspended = 9,

    /// <summary>The caller's path or parameters do not fit the version's adapter; not charged.</summary>
    BadRequest = 10,

    /// <summary>The caller went away before the answer; not charged.</summary>
    ClientCancelled = 11,

    /// <summary>The Idempotency-Key is in use by a running call, or was used for another request; not charged.</summary>
    IdempotencyConflict = 12,

    /// <summary>
    /// The cluster failed the call: a marketplace node it needed did not answer within the hot-path timeout, its connection
    /// dropped, or it went away. Answered 503 with Retry-After; not charged unless the upstream already answered.
    /// </summary>
    ClusterUnavailable = 13,

    /// <summary>An unexpected error in the marketplace; answered 500, not charged.</summary>
    InternalError = 14,
}

/// <summary>The result of a call: the upstream's answer or the reason it was refused.</summary>
[GenerateSerializer, Immutable, Alias("mk.CallResult")]
public sealed record CallResult(
    [property: Id(0)] string TrackId,
    [property: Id(1)] CallOutcome Outcome,
    [property: Id(2)] AdmitOutcome? Rejection,
    [property: Id(3)] int UpstreamStatus,
    [property: Id(4)] string? ContentType,
    [property: Id(5)] byte[]? Body,
    [property: Id(6)] long Charged,
    [property: Id(7)] long Price,
    [property: Id(8)] long Available,
    [property: Id(9)] string? Currency,
    [property: Id(10)] string? Detail,
    [property: Id(11)] LimitStatus? Limit = null,
    [property: Id(12)] string? Version = null,
    [property: Id(13)] int? RetryAfterSeconds = null,
    [property: Id(14)] bool Replayed = false,
    [property: Id(15)] Guid CallId = default)
{
    /// <summary>A call that ended before any upstream answer: refused, shed or failed in the marketplace; nothing charged.</summary>
    public static CallResult Refused(string trackId, CallOutcome outcome, AdmitOutcome? rejection = null, long price = 0, string? currency = null) =>
        new(trackId, outcome, rejection, 0, null, null, 0, price, 0, currency, null);

    /// <summary>
    /// True when the upstream's answer was already passed through to the caller's own connection as it arrived (the HTTP
    /// front door's forwarder): there is nothing left to write. Never serialized.
    /// </summary>
    public bool Forwarded
    {
        get => _forwarded;
        init => _forwarded = value;
    }

    [NonSerialized]
    private readonly bool _forwarded;
}

/// <summary>
/// The call pipeline as a grain, so internal .NET services connected as Orleans clients get the same
/// authentication, entitlement, balance checks, forwarding and charging as HTTP callers.
/// </summary>
[Alias("mk.ICallPipelineGrain")]
public interface ICallPipelineGrain : IGrainWithIntegerKey
{
    /// <summary>Runs one call through the whole pipeline.</summary>
    [Alias("CallAsync")]
    Task<CallResult> CallAsync(CallRequest request);
}
