using System.Diagnostics;
using System.Net.Http.Headers;
using Microsoft.Extensions.Logging;

namespace Marketplace.Grains;

/// <summary>
/// One call from admission to settlement, the same for HTTP callers and internal .NET callers:
/// route lookup (cached), one grain call to admit (authenticate, entitle, reserve the price), the upstream request,
/// then settlement sent one-way so the caller never waits for metering.
/// </summary>
public sealed partial class CallPipeline(
    IGrainFactory grains,
    IHttpClientFactory httpClients,
    ServiceRouteCache routes,
    UpstreamLimiter upstreamLimiter,
    SettlementBatcher settlements,
    ILogger<CallPipeline> logger)
{
    /// <summary>Name of the <see cref="HttpClient"/> used for upstream calls.</summary>
    public const string HttpClientName = "marketplace-upstream";

    // One client for the process: its SocketsHttpHandler pools connections and renews them (PooledConnectionLifetime),
    // so there is no need to ask the factory for a client on every call.
    private readonly HttpClient _client = httpClients.CreateClient(HttpClientName);

    /// <summary>Largest upstream response body the pipeline buffers.</summary>
    public const int MaxResponseBytes = 8 * 1024 * 1024;

    /// <summary>Runs one call. Never throws for upstream failures; they become outcomes.</summary>
    public async Task<CallResult> CallAsync(CallRequest request, CancellationToken cancellationToken = default)
    {
        var trackId = TrackIds.AcceptOrNew(request.TrackId);
        RequestContext.Set(TrackIds.ContextKey, trackId);

        if (!Ids.IsValid(request.ServiceId))
        {
            return Refused(trackId, CallOutcome.UnknownService, null, null);
        }

        var route = await routes.GetAsync(request.ServiceId);
        if (route is null)
        {
            return Refused(trackId, CallOutcome.UnknownService, null, null);
        }

        if (!ApiKeySecrets.TryParseCredential(request.Credential, out var keyId, out var kind, out var proof))
        {
            return Refused(trackId, CallOutcome.Rejected, AdmitOutcome.InvalidCredentials, route);
        }

        if (!upstreamLimiter.TryAcquire(route, out var upstreamLimit))
        {
            return Refused(trackId, CallOutcome.UpstreamRateLimited, null, route) with { Limit = upstreamLimit };
        }

        var key = grains.GetGrain<IApiKeyGrain>(keyId);
        var admission = await key.AdmitAsync(new AdmitRequest(proof, route.ServiceId, route.PricePerCall, route.Currency, trackId, kind));
        if (admission.Outcome != AdmitOutcome.Admitted)
        {
            LogRejected(logger, route.ServiceId, keyId, admission.Outcome);
            return Refused(trackId, CallOutcome.Rejected, admission.Outcome, route) with { Available = admission.Available, Limit = admission.Limit };
        }

        var started = Stopwatch.GetTimestamp();
        var (outcome, status, contentType, body, detail) = await ForwardAsync(route, request, trackId, cancellationToken);
        var succeeded = outcome == CallOutcome.Succeeded;
        var charge = succeeded ? admission.Reserved : 0;

        // Settlement is one-way and batched: the caller gets its answer without waiting for metering.
        settlements.Record(admission.AccountId!, keyId, route.ServiceId, admission.Reserved, charge, succeeded);

        LogCompleted(logger, route.ServiceId, outcome, status, Stopwatch.GetElapsedTime(started).TotalMilliseconds, charge);
        return new CallResult(trackId, outcome, null, status, contentType, body, charge, route.PricePerCall,
            admission.Available + admission.Reserved - charge, route.Currency, detail, admission.Limit);
    }

    private async Task<(CallOutcome Outcome, int Status, string? ContentType, byte[]? Body, string? Detail)> ForwardAsync(
        ServiceRoute route, CallRequest request, string trackId, CancellationToken cancellationToken)
    {
        if (!UpstreamPath.TryBuild(route.UpstreamBaseUrl, request.Path, request.Query, out var uri))
        {
            return (CallOutcome.UpstreamRejected, 400, null, null, "The path after the service id is not allowed.");
        }

        using var message = new HttpRequestMessage(new HttpMethod(request.Method), uri);
        message.Headers.TryAddWithoutValidation(TrackIds.Header, trackId);
        if (request.Body is { Length: > 0 } requestBody)
        {
            message.Content = new ByteArrayContent(requestBody);
            if (request.ContentType is not null && MediaTypeHeaderValue.TryParse(request.ContentType, out var mediaType))
            {
                message.Content.Headers.ContentType = mediaType;
            }
        }

        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        timeout.CancelAfter(route.TimeoutMs);
        try
        {
            using var response = await _client.SendAsync(message, HttpCompletionOption.ResponseHeadersRead, timeout.Token);
            var body = await ReadBoundedAsync(response.Content, timeout.Token);
            var status = (int)response.StatusCode;
            var contentType = response.Content.Headers.ContentType?.ToString();
            var outcome = status switch
            {
                >= 200 and < 300 => CallOutcome.Succeeded,
                >= 400 and < 500 => CallOutcome.UpstreamRejected,
                _ => CallOutcome.UpstreamFailed,
            };
            return (outcome, status, contentType, body, outcome == CallOutcome.UpstreamFailed ? $"The upstream answered {status}." : null);
        }
        catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
        {
            return (CallOutcome.UpstreamTimeout, 0, null, null, $"The upstream did not answer within {route.TimeoutMs} ms.");
        }
        catch (HttpRequestException exception)
        {
            LogUpstreamUnreachable(logger, route.ServiceId, exception.Message);
            return (CallOutcome.UpstreamUnreachable, 0, null, null, "The upstream could not be reached.");
        }
        catch (InvalidDataException exception)
        {
            return (CallOutcome.UpstreamFailed, 0, null, null, exception.Message);
        }
    }

    private static async Task<byte[]> ReadBoundedAsync(HttpContent content, CancellationToken cancellationToken)
    {
        if (content.Headers.ContentLength is > MaxResponseBytes)
        {
            throw new InvalidDataException("The upstream response is larger than the marketplace forwards.");
        }

        await using var stream = await content.ReadAsStreamAsync(cancellationToken);
        using var buffer = new MemoryStream();
        var chunk = new byte[16 * 1024];
        int read;
        while ((read = await stream.ReadAsync(chunk, cancellationToken)) > 0)
        {
            if (buffer.Length + read > MaxResponseBytes)
            {
                throw new InvalidDataException("The upstream response is larger than the marketplace forwards.");
            }

            buffer.Write(chunk, 0, read);
        }

        return buffer.ToArray();
    }

    private static CallResult Refused(string trackId, CallOutcome outcome, AdmitOutcome? rejection, ServiceRoute? route) =>
        new(trackId, outcome, rejection, 0, null, null, 0, route?.PricePerCall ?? 0, 0, route?.Currency, null);

    [LoggerMessage(Level = LogLevel.Information, Message = "Call to {ServiceId} refused for key {KeyId}: {Reason}")]
    private static partial void LogRejected(ILogger logger, string serviceId, string keyId, AdmitOutcome reason);

    [LoggerMessage(Level = LogLevel.Debug, Message = "Call to {ServiceId} ended {Outcome} ({Status}) in {ElapsedMs:F1} ms, charged {Charged}")]
    private static partial void LogCompleted(ILogger logger, string serviceId, CallOutcome outcome, int status, double elapsedMs, long charged);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Upstream of {ServiceId} unreachable: {Reason}")]
    private static partial void LogUpstreamUnreachable(ILogger logger, string serviceId, string reason);
}
