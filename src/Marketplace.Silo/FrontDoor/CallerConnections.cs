using System.Net;
using Marketplace.Grains;
using Marketplace.Silo.Apis;
using Yarp.ReverseProxy.Forwarder;

namespace Marketplace.Silo.FrontDoor;

/// <summary>
/// Gives each HTTP call its <see cref="ICallerConnection"/>: YARP's <see cref="IHttpForwarder"/> sends the upstream request
/// through the process's upstream pool (<see cref="UpstreamClient"/>) and streams a pass-through answer to the caller as it
/// arrives, with the call's own headers and none of the caller's going upstream.
/// </summary>
public sealed class CallerConnections(IHttpForwarder forwarder, UpstreamClient upstream)
{
    // The version's timeout (the pipeline's protection around each attempt) bounds a call; YARP's inactivity timeout only
    // backs it up. HTTP/1.1 upstream, as the buffered path sends.
    private static readonly ForwarderRequestConfig Config = new()
    {
        ActivityTimeout = TimeSpan.FromMinutes(10),
        Version = HttpVersion.Version11,
        VersionPolicy = HttpVersionPolicy.RequestVersionOrLower,
    };

    /// <summary>The connection of one HTTP request.</summary>
    public ICallerConnection For(HttpContext context) => new Connection(context, forwarder, upstream.Invoker);

    private sealed class Connection(HttpContext context, IHttpForwarder forwarder, HttpMessageInvoker invoker) : ICallerConnection
    {
        public async ValueTask<PassedThrough> PassThroughAsync(PassThroughCall call, CancellationToken cancellationToken)
        {
            // The caller's body was read before admission (the version may rename its fields): the forwarder sends it as the
            // caller's, afresh for each attempt.
            var body = call.Body;
            if (body is not null)
            {
                context.Request.Body = new MemoryStream(body, writable: false);
            }

            var transformer = new CallTransformer(call, body?.LongLength);
            var error = await forwarder.SendAsync(context, call.BaseUrl, invoker, Config, transformer, cancellationToken);
            var failure = error == ForwarderError.None ? null : context.Features.Get<IForwarderErrorFeature>()?.Exception;
            var response = context.Response;
            if (transformer.Passed && (failure is null || response.HasStarted))
            {
                // The answer went through (a body cut short after it started is aborted by the forwarder).
                return new PassedThrough(transformer.Status, failure);
            }

            // Nothing reached the caller: the response is left as it was, for the pipeline's own answer or another attempt.
            if (!response.HasStarted)
            {
                response.Clear();
                response.Headers[TrackIds.Header] = context.GetTrackId();
            }

            return new PassedThrough(transformer.Passed ? null : transformer.Status, failure);
        }
    }

    // The upstream request is the version's (address, method, headers, the caller's body); the answer's status, type and
    // length pass, with the call's headers, and its body streams, only when the caller gets it as it is.
    private sealed class CallTransformer(PassThroughCall call, long? bodyLength) : HttpTransformer
    {
        public int? Status { get; private set; }

        public bool Passed { get; private set; }

        public override ValueTask TransformRequestAsync(HttpContext httpContext, HttpRequestMessage proxyRequest, string destinationPrefix, CancellationToken cancellationToken)
        {
            // The caller's headers (its credential among them) never go upstream.
            proxyRequest.RequestUri = call.Destination;
            call.Fill(proxyRequest, bodyLength);
            return ValueTask.CompletedTask;
        }

        public override ValueTask<bool> TransformResponseAsync(HttpContext httpContext, HttpResponseMessage? proxyResponse, CancellationToken cancellationToken)
        {
            if (proxyResponse is null)
            {
                return ValueTask.FromResult(false);
            }

            var status = (int)proxyResponse.StatusCode;
            Status = status;
            if (!PassThroughCall.PassesStatus(status))
            {
                return ValueTask.FromResult(false);
            }

            Passed = true;
            var response = httpContext.Response;
            CallApi.WriteCallHeaders(response.Headers, call.Answered(status));
            response.ContentType = proxyResponse.Content.Headers.ContentType?.ToString();
            response.ContentLength = proxyResponse.Content.Headers.ContentLength;
            return ValueTask.FromResult(true);
        }

        public override ValueTask TransformResponseTrailersAsync(HttpContext httpContext, HttpResponseMessage proxyResponse, CancellationToken cancellationToken) =>
            ValueTask.CompletedTask;
    }
}
