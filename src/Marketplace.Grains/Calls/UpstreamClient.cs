namespace Marketplace.Grains;

/// <summary>
/// The process's one sender to upstreams: the pooled handler of <see cref="CallPipeline.HttpClientName"/> (no redirects, no
/// cookies, connections renewed every two minutes), as an <see cref="HttpMessageInvoker"/>, which both the pipeline and the
/// front door's forwarder send through without <see cref="HttpClient"/>'s per-request timeout and cancellation linking.
/// </summary>
public sealed class UpstreamClient(IHttpMessageHandlerFactory handlers)
{
    /// <summary>Sends one upstream request; the answer's body is read as it comes.</summary>
    public HttpMessageInvoker Invoker { get; } = new(handlers.CreateHandler(CallPipeline.HttpClientName), disposeHandler: false);
}
