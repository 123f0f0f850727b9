using System.Diagnostics;
using Microsoft.Extensions.Logging;
using Polly.CircuitBreaker;
using Polly.Timeout;

namespace Marketplace.Grains;

/// <summary>
/// Stage 4, forward: the version's upstream request within its protection (Polly retry for idempotent versions, breaker,
/// timeout). With the caller's connection a pass-through answer streams straight to the caller (the HTTP front door's
/// YARP forwarder); otherwise the answer is read whole (bounded by <see cref="CallPipeline.MaxResponseBytes"/>) and mapped.
/// </summary>
internal sealed class ForwardStage(UpstreamClient upstream, MarketplaceMetrics metrics, ILogger logger)
{
    private readonly HttpMessageInvoker _invoker = upstream.Invoker;

    /// <summary>Forwards the admitted call; timeouts, an open breaker and upstream faults become outcomes.</summary>
    public async Task<ForwardResult> RunAsync(CallRequest request, CallTrace trace, ICallerConnection? connection, CancellationToken cancellationToken)
    {
        var (adapter, guard) = (trace.Adapter!, trace.Guard!);
        trace.Version = adapter.Id;
        var started = Stopwatch.GetTimestamp();
        try
        {
            // A pass-through answer goes to a caller's connection as it arrives; any other is read whole.
            return await ForwardAsync(adapter, guard, request, trace, adapter.PassesThrough ? connection : null, cancellationToken);
        }
        catch (Exception exception) when (exception is not OperationCanceledException || !cancellationToken.IsCancellationRequested)
        {
            // Something unexpected broke: the call's record (charged nothing) releases the reservation.
            throw new UnexpectedCallException(exception);
        }
        finally
        {
            trace.UpstreamMs = Stopwatch.GetElapsedTime(started).TotalMilliseconds;
        }
    }

    // Sends the call upstream within its version's protection. With a caller's connection the answer passes straight through
    // it as it arrives (the front door's forwarder streams it); without one it is read whole (bounded) and mapped.
    private async Task<ForwardResult> ForwardAsync(
        UpstreamAdapter adapter, VersionGuard guard, CallRequest request, CallTrace trace, ICallerConnection? connection, CancellationToken cancellationToken)
    {
        var trackId = trace.TrackId;
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
                // The caller gets the call's headers (its charge by the status) before the answer's body.
                var call = new PassThroughCall(adapter, request, trackId, uri,
                    status => ChargeStage.Completed(trace, ChargeStage.Classify(status, adapter, sent: true, forwarded: true)));
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
                ? ChargeStage.Classify(answer.Status, adapter, sent: true, forwarded: true)
                : ChargeStage.Classify(answer.Status, adapter, sent: true, forwarded: false, answer, mapped);
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
            CallPipelineLog.UpstreamUnreachable(logger, adapter.ServiceId, exception.Message);
            return new ForwardResult(CallOutcome.UpstreamUnreachable, 0, null, null, "The upstream could not be reached.", Sent: false);
        }
        catch (IOException exception) when (exception is not EndOfStreamException)
        {
            // The connection broke while the upstream was answering.
            metrics.RecordUpstreamError(adapter.ServiceId, adapter.Id, MarketplaceMetrics.UpstreamErrorKinds.Invalid);
            CallPipelineLog.UpstreamUnreachable(logger, adapter.ServiceId, exception.Message);
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
        if (content.Headers.ContentLength is > CallPipeline.MaxResponseBytes)
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
                if (buffer.Length + read > CallPipeline.MaxResponseBytes)
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
}
