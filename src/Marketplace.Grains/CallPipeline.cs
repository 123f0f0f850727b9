using System.Diagnostics;
using System.Threading.RateLimiting;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using Polly.CircuitBreaker;
using Polly.Timeout;

namespace Marketplace.Grains;

/// <summary>
/// One call from admission to settlement, the same for HTTP callers and internal .NET callers:
/// route lookup (cached), admission from the front door's lease of the key (<see cref="KeyLeaseCache"/>: authenticate,
/// entitle, count the quotas and reserve the price without a grain call while the lease lasts), the upstream request,
/// then the call's record to the journal, whose writer sends the settlement once the record is durable, so the caller never
/// waits for metering. Every grain call is bounded by
/// <see cref="HotPathCalls"/>, and every call is written to the call log, whatever ended it.
/// </summary>
public sealed partial class CallPipeline(
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
    // The host registers a database-backed call log; grain tests and benchmarks run without one.
    private readonly GrainReferences<IApiKeyGrain> _keys = new(grains);
    private readonly ICallLog _callLog = services.GetService<ICallLog>() ?? NullCallLog.Instance;
    private readonly bool _leased = leaseOptions.Value.Enabled;
    private readonly TimeSpan _idempotencyWindow = services.GetService<IOptions<IdempotencyOptions>>()?.Value.Window ?? TimeSpan.FromHours(24);

    /// <summary>Name of the HTTP client configuration (its pooled handler) used for upstream calls.</summary>
    public const string HttpClientName = "marketplace-upstream";

    private readonly HttpMessageInvoker _invoker = upstream.Invoker;

    /// <summary>Largest upstream response body the pipeline buffers.</summary>
    public const int MaxResponseBytes = 8 * 1024 * 1024;

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
        var at = time.GetUtcNow();
        var trace = new CallTrace { CallId = TimeOrderedIds.New(at), TrackId = TrackIds.AcceptOrNew(request.TrackId) };
        CallResult result;
        try
        {
            result = await RunAsync(request, connection, trace, cancellationToken);
        }
        catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
        {
            await LogAsync(request, trace, at, started, Refused(trace.TrackId, CallOutcome.ClientCancelled, null, trace.Route) with { Version = trace.Version }, CancellationToken.None);
            throw;
        }
        catch (Exception exception)
        {
            result = Failed(trace, exception);
        }

        // The row is written even when the caller has gone meanwhile: the call happened.
        result = result with { CallId = trace.CallId };
        await LogAsync(request, trace, at, started, result, CancellationToken.None);
        return result;
    }

    // A call that a cluster fault or an unexpected error ended: 503 and safe to repeat, or 500 with the details in the log.
    private CallResult Failed(CallTrace trace, Exception exception)
    {
        if (HotPathCalls.IsClusterFault(exception))
        {
            LogClusterFault(logger, trace.ServiceId, exception.Message);
            return Refused(trace.TrackId, CallOutcome.ClusterUnavailable, null, trace.Route) with
            {
                Version = trace.Version, RetryAfterSeconds = 1,
                Detail = (exception is ClusterUnavailableException ? exception.Message : "A marketplace node went away while handling the call.")
                    + " The call was not forwarded; repeating it is safe.",
            };
        }

        LogUnexpected(logger, exception, trace.ServiceId);
        return Refused(trace.TrackId, CallOutcome.InternalError, null, trace.Route) with
        {
            Version = trace.Version, Detail = "An unexpected error occurred; quote the TrackId when you report it.",
        };
    }

    private ValueTask LogAsync(CallRequest request, CallTrace trace, DateTimeOffset at, long started, CallResult result, CancellationToken cancellationToken)
    {
        var total = Stopwatch.GetElapsedTime(started);
        metrics.RecordCall(request.ServiceId, result.Version, result.Outcome, result.Rejection, total,
            trace.UpstreamMs is { } upstreamMs ? TimeSpan.FromMilliseconds(upstreamMs) : null);

        // Ids that cannot name a service are answered 404 and not logged: the log holds calls, not noise.
        if (!Ids.IsValid(request.ServiceId))
        {
            return ValueTask.CompletedTask;
        }

        return _callLog.WriteAsync(new CallRecord(
            trace.CallId, result.TrackId, at, trace.AccountId, trace.KeyId, request.ServiceId, result.Version, result.Outcome, result.Rejection, result.UpstreamStatus,
            trace.UpstreamMs, total.TotalMilliseconds, result.Price, result.Charged, result.Currency, request.IdempotencyKey,
            trace.Reserved, trace.Hold, trace.WindowOffsetMinutes),
            cancellationToken);
    }

    // What the call log needs beyond the result, filled in as the call goes.
    private sealed class CallTrace
    {
        public Guid CallId { get; init; }

        public string TrackId { get; init; } = string.Empty;

        public string? ServiceId { get; set; }

        public ServiceRoute? Route { get; set; }

        public string? KeyId { get; set; }

        // Set once the key admitted the call: its record is then a settled call, which releases the reservation.
        public string? AccountId { get; set; }

        public long Reserved { get; set; }

        public long Hold { get; set; }

        public int WindowOffsetMinutes { get; set; }

        public string? Version { get; set; }

        public double? UpstreamMs { get; set; }
    }

    private async Task<CallResult> RunAsync(CallRequest request, ICallerConnection? connection, CallTrace trace, CancellationToken cancellationToken)
    {
        var trackId = trace.TrackId;
        RequestContext.Set(TrackIds.ContextKey, trackId);

        if (!Ids.IsValid(request.ServiceId))
        {
            return Refused(trackId, CallOutcome.UnknownService, null, null);
        }

        trace.ServiceId = request.ServiceId;
        var compiled = await routes.GetAsync(request.ServiceId);
        if (compiled is null || compiled.Route.Status is ServiceStatus.Draft or ServiceStatus.Retired)
        {
            return Refused(trackId, CallOutcome.UnknownService, null, null);
        }

        var route = compiled.Route;
        trace.Route = route;
        if (route.Status == ServiceStatus.Suspended)
        {
            return Refused(trackId, CallOutcome.ServiceSuspended, null, route) with { RetryAfterSeconds = 60 };
        }

        if (request.IdempotencyKey is not null && !IdempotencyOptions.IsWellFormed(request.IdempotencyKey))
        {
            return Refused(trackId, CallOutcome.BadRequest, null, route) with
            {
                Detail = "The Idempotency-Key must be 1 to 128 characters of letters, digits, '-', '_', '.' or ':'.",
            };
        }

        if (!ApiKeySecrets.TryParseCredential(request.Credential, out var keyId, out var kind, out var proof))
        {
            return Refused(trackId, CallOutcome.Rejected, AdmitOutcome.InvalidCredentials, route);
        }

        trace.KeyId = keyId;

        if (!upstreamLimiter.TryAcquire(route, out var upstreamLimit))
        {
            return Refused(trackId, CallOutcome.UpstreamRateLimited, null, route) with { Limit = upstreamLimit };
        }

        // The version is chosen, and its breaker and concurrency limit checked, before admission: a call shed here
        // uses no quota and reserves nothing. Only a pin on an account must wait for admission to know the account.
        UpstreamAdapter? adapter = null;
        VersionGuard? guard = null;
        RateLimitLease? permit = null;
        if (!GrayRelease.NeedsAccount(route, keyId))
        {
            if (Enter(compiled, keyId, null, trackId, out adapter, out guard, out permit) is { } shed)
            {
                return shed;
            }
        }

        try
        {
            var key = _keys.Get(keyId);

            // With an Idempotency-Key the call runs once per API key and request; a retry is answered from the first call's
            // result before admission, so it uses no quota and needs no balance. The credential is verified first, so nobody
            // without the API key's secret (or token) can claim or read its keys.
            IIdempotencyGrain? idempotency = null;
            string? fingerprint = null;
            if (request.IdempotencyKey is { } idempotencyKey
                && await hotPath.CallAsync(() => key.VerifyAsync(proof, kind), HotPathRetry.WhenSafe, "API key"))
            {
                fingerprint = Fingerprint(request);
                idempotency = grains.GetGrain<IIdempotencyGrain>(keyId + "/" + idempotencyKey);
                var claim = idempotency;
                var claimed = fingerprint;
                var claimFor = compiled.LongestCall;

                // Not repeated after a fault that may have stored the claim: the repeat would find its own claim "in progress".
                // The claim lasts as long as the call may run, so a slow call's retry is not run a second time.
                var start = await hotPath.CallAsync(() => new ValueTask<IdempotencyStart>(claim.BeginAsync(claimed, _idempotencyWindow, claimFor)),
                    HotPathRetry.WhenNotRun, "Idempotency-Key");
                if (start.Status != IdempotencyStatus.Started)
                {
                    return Replay(trackId, start, route, adapter?.Id);
                }
            }

            // Not repeated after a fault that may have admitted it (quota and balance would count it twice).
            AdmitResult admission;
            try
            {
                // From this front door's lease of the key (no grain call while it lasts), or by the key grain itself.
                admission = _leased
                    ? await leases.AdmitAsync(keyId, proof, kind, route.ServiceId, route.PricePerCall, route.Currency)
                    : await hotPath.CallAsync(() => key.AdmitAsync(new AdmitRequest(proof, route.ServiceId, route.PricePerCall, route.Currency, trackId, kind)),
                        HotPathRetry.WhenNotRun, "API key");
            }
            catch (Exception exception) when (idempotency is not null && HotPathCalls.IsClusterFault(exception))
            {
                await AbandonAsync(idempotency, fingerprint!);
                throw;
            }

            if (admission.Outcome != AdmitOutcome.Admitted)
            {
                if (idempotency is not null)
                {
                    await AbandonAsync(idempotency, fingerprint!);
                }

                LogRejected(logger, route.ServiceId, keyId, admission.Outcome);
                return Refused(trackId, CallOutcome.Rejected, admission.Outcome, route) with { Available = admission.Available, Limit = admission.Limit };
            }

            trace.AccountId = admission.AccountId;
            trace.Reserved = admission.Reserved;
            trace.Hold = admission.Hold;
            trace.WindowOffsetMinutes = admission.WindowOffsetMinutes;
            if (adapter is null && Enter(compiled, keyId, admission.AccountId, trackId, out adapter, out guard, out permit) is { } lateShed)
            {
                if (idempotency is not null)
                {
                    await AbandonAsync(idempotency, fingerprint!);
                }

                return lateShed with { Available = admission.Available + admission.Reserved };
            }

            trace.Version = adapter!.Id;

            var started = Stopwatch.GetTimestamp();
            ForwardResult forwarded;
            try
            {
                // A pass-through answer goes to a caller's connection as it arrives; one an Idempotency-Key must keep is read whole.
                var through = idempotency is null && adapter!.PassesThrough ? connection : null;
                var callId = trace.CallId;
                var version = adapter!;
                forwarded = await ForwardAsync(adapter!, guard!, request, trackId, through,
                    status => Completed(trackId, callId, route, version, admission, Classify(status, version, sent: true, forwarded: true)),
                    cancellationToken);
            }
            catch (Exception exception)
            {
                // The caller went away, or something unexpected broke: release the Idempotency-Key; the call's record
                // (charged nothing) releases the reservation.
                if (idempotency is not null)
                {
                    await AbandonAsync(idempotency, fingerprint!);
                }

                if (exception is OperationCanceledException && cancellationToken.IsCancellationRequested)
                {
                    throw;
                }

                throw new UnexpectedCallException(exception);
            }

            trace.UpstreamMs = Stopwatch.GetElapsedTime(started).TotalMilliseconds;

            // The call's record settles it once the journal holds it: the caller gets its answer without waiting for metering.
            var result = Completed(trackId, trace.CallId, route, adapter!, admission, forwarded);
            LogCompleted(logger, route.ServiceId, adapter!.Id, forwarded.Outcome, forwarded.Status, trace.UpstreamMs.Value, result.Charged);
            if (idempotency is not null)
            {
                await RememberAsync(idempotency, fingerprint!, result);
            }

            return result;
        }
        finally
        {
            permit?.Dispose();
        }
    }

    // The result of an admitted call that was forwarded: what its version's charge rule charges for how it ended.
    private static CallResult Completed(string trackId, Guid callId, ServiceRoute route, UpstreamAdapter adapter, AdmitResult admission, ForwardResult forwarded)
    {
        var succeeded = forwarded.Outcome == CallOutcome.Succeeded;
        var charged = route.ChargeRule switch
        {
            ChargeRule.PerCall => forwarded.Sent,
            ChargeRule.PerHit => succeeded && forwarded.Hit,
            _ => succeeded,
        };
        var charge = charged ? admission.Reserved : 0;
        return new CallResult(trackId, forwarded.Outcome, null, forwarded.Status, forwarded.ContentType, forwarded.Body, charge, route.PricePerCall,
            admission.Available + admission.Reserved - charge, route.Currency, forwarded.Detail, admission.Limit, adapter.Id, forwarded.RetryAfterSeconds, CallId: callId)
        {
            Forwarded = forwarded.Forwarded,
        };
    }

    // How an upstream's answer ends the call: 2xx succeeded, 4xx the upstream refused the request, anything else failed.
    private static ForwardResult Classify(int status, UpstreamAdapter adapter, bool sent, bool forwarded, UpstreamAnswer? answer = null, UpstreamAnswer? mapped = null)
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

    // Releases an Idempotency-Key after a call that charged nothing. A release that fails leaves the claim to lapse.
    private async Task AbandonAsync(IIdempotencyGrain idempotency, string fingerprint)
    {
        try
        {
            await hotPath.CallAsync(() => idempotency.AbandonAsync(fingerprint), HotPathRetry.WhenSafe, "Idempotency-Key");
        }
        catch (ClusterUnavailableException exception)
        {
            LogIdempotencyNotStored(logger, exception.Message);
        }
    }

    // A charged or successful result is kept for retries; a failure that charged nothing releases the key so a retry runs
    // again. The caller was answered by the upstream (and maybe charged) whatever happens here, so a cluster fault in
    // storing the result does not turn the answer into a failure.
    private async Task RememberAsync(IIdempotencyGrain idempotency, string fingerprint, CallResult result)
    {
        if (result.Charged == 0 && result.Outcome != CallOutcome.Succeeded)
        {
            await AbandonAsync(idempotency, fingerprint);
            return;
        }

        var kept = result.Body is { Length: > IdempotencyOptions.MaxStoredBodyBytes }
            ? result with
            {
                Outcome = CallOutcome.IdempotencyConflict, Body = null, ContentType = null,
                Detail = "The first call with this Idempotency-Key was answered and charged once; its answer was too large to keep for replays.",
            }
            : result;
        try
        {
            await hotPath.CallAsync(() => idempotency.CompleteAsync(fingerprint, kept), HotPathRetry.WhenSafe, "Idempotency-Key");
        }
        catch (Exception exception)
        {
            // Whatever failed here, the call was answered and settled: its answer and its row stay what they are.
            LogIdempotencyNotStored(logger, exception.Message);
        }
    }

    private static CallResult Replay(string trackId, IdempotencyStart start, ServiceRoute route, string? version) => start.Status switch
    {
        IdempotencyStatus.Completed => start.Result! with { TrackId = trackId, Charged = 0, Replayed = true },
        IdempotencyStatus.Mismatch => Refused(trackId, CallOutcome.IdempotencyConflict, null, route) with
        {
            Version = version, Detail = "This Idempotency-Key was used for a different request; use a new key for a new request.",
        },
        _ => Refused(trackId, CallOutcome.IdempotencyConflict, null, route) with
        {
            Version = version, Detail = "A call with this Idempotency-Key is still running; retry after the Retry-After seconds.", RetryAfterSeconds = 1,
        },
    };

    // What makes two requests "the same" for an Idempotency-Key: service, method, path, query and body.
    private static string Fingerprint(CallRequest request)
    {
        using var hash = System.Security.Cryptography.IncrementalHash.CreateHash(System.Security.Cryptography.HashAlgorithmName.SHA256);
        hash.AppendData(System.Text.Encoding.UTF8.GetBytes($"{request.ServiceId}\n{request.Method}\n{request.Path}\n{request.Query}\n"));
        hash.AppendData(request.Body ?? []);
        return Convert.ToHexString(hash.GetHashAndReset());
    }

    // Picks the version and enters its protection; a result when the call must be shed.
    private CallResult? Enter(CompiledRoute compiled, string keyId, string? accountId, string trackId,
        out UpstreamAdapter? adapter, out VersionGuard? guard, out RateLimitLease? permit)
    {
        guard = null;
        permit = null;
        var route = compiled.Route;
        var versionId = GrayRelease.Choose(route, compiled.OrderedWeights, keyId, accountId);
        if (versionId is null || !compiled.Adapters.TryGetValue(versionId, out adapter))
        {
            adapter = null;
            return Refused(trackId, CallOutcome.UpstreamUnavailable, null, route) with
            {
                Detail = "The data service has no version to serve this call.", RetryAfterSeconds = 60,
            };
        }

        if (adapter.SecretsUnavailable)
        {
            LogSecretsUnavailable(logger, route.ServiceId, adapter.Id);
            return Refused(trackId, CallOutcome.UpstreamUnavailable, null, route) with
            {
                Version = adapter.Id, Detail = "The data service's upstream credentials are not available on this node.", RetryAfterSeconds = 60,
            };
        }

        guard = protection.For(adapter);
        if (guard.IsOpen(out var retryAfter))
        {
            metrics.RecordShed(route.ServiceId, MarketplaceMetrics.Reasons.BreakerOpen);
            return Refused(trackId, CallOutcome.UpstreamUnavailable, null, route) with
            {
                Version = adapter.Id, Detail = "The data service is failing; its circuit breaker is open.", RetryAfterSeconds = retryAfter,
            };
        }

        permit = guard.TryEnter();
        if (permit is null)
        {
            metrics.RecordShed(route.ServiceId, MarketplaceMetrics.Reasons.ConcurrencyFull);
            return Refused(trackId, CallOutcome.UpstreamUnavailable, null, route) with
            {
                Version = adapter.Id, Detail = "The data service is at its concurrency limit.", RetryAfterSeconds = 1,
            };
        }

        return null;
    }

    private sealed record ForwardResult(
        CallOutcome Outcome, int Status, string? ContentType, byte[]? Body, string? Detail, bool Sent, bool Hit = false, int? RetryAfterSeconds = null,
        bool Forwarded = false);

    // Sends the call upstream within its version's protection. With a caller's connection the answer passes straight through
    // it (streamed both ways by the front door's forwarder); without one it is read whole (bounded) and mapped.
    private async Task<ForwardResult> ForwardAsync(
        UpstreamAdapter adapter, VersionGuard guard, CallRequest request, string trackId, ICallerConnection? connection,
        Func<int, CallResult> answered, CancellationToken cancellationToken)
    {
        if (!adapter.TryBuildUri(request, out var uri, out var error))
        {
            return new ForwardResult(CallOutcome.BadRequest, 400, null, null, error, Sent: false);
        }

        try
        {
            UpstreamAnswer answer;
            UpstreamAnswer? mapped = null;
            if (connection is not null)
            {
                var call = new PassThroughCall(adapter, request, trackId, uri, answered);
                answer = await guard.Pipeline.ExecuteAsync(
                    async token =>
                    {
                        var passed = await connection.PassThroughAsync(call, token);
                        if (passed.Status is { } status)
                        {
                            return new UpstreamAnswer(status, null, []);
                        }

                        // No answer: the version's timeout (Polly makes it a TimeoutRejectedException), the caller gone, or
                        // the upstream out of reach.
                        token.ThrowIfCancellationRequested();
                        throw new HttpRequestException(passed.Error?.Message ?? "The upstream could not be reached.", passed.Error);
                    },
                    cancellationToken);
            }
            else
            {
                answer = await guard.Pipeline.ExecuteAsync(
                    async token =>
                    {
                        // Each attempt sends a message of its own.
                        using var message = new HttpRequestMessage { RequestUri = uri };
                        adapter.Fill(message, request, trackId);
                        using var response = await _invoker.SendAsync(message, token);
                        var body = await ReadBoundedAsync(response.Content, token);
                        var raw = new UpstreamAnswer((int)response.StatusCode, response.Content.Headers.ContentType?.ToString(), body);

                        // Mapped inside the pipeline, so an answer the version cannot map counts as a failure for the breaker.
                        mapped = adapter.MapResponse(raw);
                        return raw;
                    },
                    cancellationToken);
            }

            if (answer.Status >= 500)
            {
                metrics.RecordUpstreamError(adapter.ServiceId, adapter.Id, MarketplaceMetrics.UpstreamErrorKinds.Status5xx);
            }

            return mapped is null
                ? Classify(answer.Status, adapter, sent: true, forwarded: true)
                : Classify(answer.Status, adapter, sent: true, forwarded: false, answer, mapped);
        }
        catch (TimeoutRejectedException)
        {
            metrics.RecordUpstreamError(adapter.ServiceId, adapter.Id, MarketplaceMetrics.UpstreamErrorKinds.Timeout);
            return new ForwardResult(CallOutcome.UpstreamTimeout, 0, null, null, $"The upstream did not answer within {adapter.Spec.TimeoutMs} ms.", Sent: true);
        }
        catch (BrokenCircuitException broken)
        {
            metrics.RecordShed(adapter.ServiceId, MarketplaceMetrics.Reasons.BreakerOpen);
            var retryAfter = (int)Math.Ceiling((broken.RetryAfter ?? TimeSpan.FromSeconds(adapter.Protection.BreakSeconds)).TotalSeconds);
            return new ForwardResult(CallOutcome.UpstreamUnavailable, 0, null, null, "The data service is failing; its circuit breaker is open.",
                Sent: false, RetryAfterSeconds: Math.Max(1, retryAfter));
        }
        catch (HttpRequestException exception)
        {
            metrics.RecordUpstreamError(adapter.ServiceId, adapter.Id, MarketplaceMetrics.UpstreamErrorKinds.Unreachable);
            LogUpstreamUnreachable(logger, adapter.ServiceId, exception.Message);
            return new ForwardResult(CallOutcome.UpstreamUnreachable, 0, null, null, "The upstream could not be reached.", Sent: false);
        }
        catch (IOException exception) when (exception is not EndOfStreamException)
        {
            // The connection broke while the upstream was answering.
            metrics.RecordUpstreamError(adapter.ServiceId, adapter.Id, MarketplaceMetrics.UpstreamErrorKinds.Invalid);
            LogUpstreamUnreachable(logger, adapter.ServiceId, exception.Message);
            return new ForwardResult(CallOutcome.UpstreamFailed, 0, null, null, "The upstream's connection broke while it answered.", Sent: true);
        }
        catch (InvalidDataException exception)
        {
            metrics.RecordUpstreamError(adapter.ServiceId, adapter.Id, MarketplaceMetrics.UpstreamErrorKinds.Invalid);
            return new ForwardResult(CallOutcome.UpstreamFailed, 0, null, null, exception.Message, Sent: true);
        }
    }

    private static async Task<byte[]> ReadBoundedAsync(HttpContent content, CancellationToken cancellationToken)
    {
        if (content.Headers.ContentLength is > MaxResponseBytes)
        {
            throw new InvalidDataException("The upstream response is larger than the marketplace forwards.");
        }

        await using var stream = await content.ReadAsStreamAsync(cancellationToken);

        // The common case: the length is announced, so the body is read straight into an array of that size.
        if (content.Headers.ContentLength is { } length)
        {
            var exact = new byte[length];
            try
            {
                await stream.ReadExactlyAsync(exact, cancellationToken);
            }
            catch (EndOfStreamException)
            {
                throw new InvalidDataException("The upstream's answer ended before its announced length.");
            }

            return exact;
        }

        using var buffer = new MemoryStream();
        var chunk = System.Buffers.ArrayPool<byte>.Shared.Rent(16 * 1024);
        try
        {
            int read;
            while ((read = await stream.ReadAsync(chunk, cancellationToken)) > 0)
            {
                if (buffer.Length + read > MaxResponseBytes)
                {
                    throw new InvalidDataException("The upstream response is larger than the marketplace forwards.");
                }

                buffer.Write(chunk, 0, read);
            }
        }
        finally
        {
            System.Buffers.ArrayPool<byte>.Shared.Return(chunk);
        }

        return buffer.ToArray();
    }

    private static CallResult Refused(string trackId, CallOutcome outcome, AdmitOutcome? rejection, ServiceRoute? route) =>
        new(trackId, outcome, rejection, 0, null, null, 0, route?.PricePerCall ?? 0, 0, route?.Currency, null);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Call to {ServiceId} failed in the cluster: {Reason}")]
    private static partial void LogClusterFault(ILogger logger, string? serviceId, string reason);

    [LoggerMessage(Level = LogLevel.Error, Message = "Call to {ServiceId} failed unexpectedly")]
    private static partial void LogUnexpected(ILogger logger, Exception exception, string? serviceId);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Idempotency-Key state not stored: {Reason}")]
    private static partial void LogIdempotencyNotStored(ILogger logger, string reason);

    [LoggerMessage(Level = LogLevel.Information, Message = "Call to {ServiceId} refused for key {KeyId}: {Reason}")]
    private static partial void LogRejected(ILogger logger, string serviceId, string keyId, AdmitOutcome reason);

    [LoggerMessage(Level = LogLevel.Debug, Message = "Call to {ServiceId} version {Version} ended {Outcome} ({Status}) in {ElapsedMs:F1} ms, charged {Charged}")]
    private static partial void LogCompleted(ILogger logger, string serviceId, string version, CallOutcome outcome, int status, double elapsedMs, long charged);

    [LoggerMessage(Level = LogLevel.Error, Message = "Secret headers of {ServiceId} version {Version} cannot be decrypted here; check Secrets:Key")]
    private static partial void LogSecretsUnavailable(ILogger logger, string serviceId, string version);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Upstream of {ServiceId} unreachable: {Reason}")]
    private static partial void LogUpstreamUnreachable(ILogger logger, string serviceId, string reason);
}

/// <summary>An unexpected error after admission, whose reservation was already released; answered 500.</summary>
internal sealed class UnexpectedCallException(Exception inner) : Exception("The call failed unexpectedly after admission.", inner);
