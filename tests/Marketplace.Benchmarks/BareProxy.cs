using System.Net;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Yarp.ReverseProxy.Forwarder;

namespace Marketplace.Benchmarks;

/// <summary>
/// The bare YARP forwarder: Kestrel in, YARP's <see cref="IHttpForwarder"/> out, streaming both ways, no checks, no
/// logging. The HTTP benchmark runs it next to nginx and the marketplace so the marketplace's cost splits into what the
/// .NET HTTP stack and YARP cost and what the marketplace adds on top (issue 13's bar: 0.85x of this one's throughput).
/// </summary>
public static class BareProxy
{
    /// <summary><c>bare-proxy &lt;listen-url&gt; &lt;upstream-base-url&gt;</c></summary>
    public static async Task RunAsync(string[] args)
    {
        if (args.Length < 3)
        {
            Console.Error.WriteLine("usage: bare-proxy <listen-url> <upstream-base-url>");
            Environment.Exit(2);
        }

        var upstream = args[2].TrimEnd('/');
        var builder = WebApplication.CreateSlimBuilder();
        builder.Logging.ClearProviders();
        builder.WebHost.UseUrls(args[1]);
        builder.Services.AddHttpForwarder();
        var app = builder.Build();

        // The handler YARP's documentation gives for IHttpForwarder: pooled, no proxy, no redirects, no decompression, no cookies.
        using var invoker = new HttpMessageInvoker(new SocketsHttpHandler
        {
            UseProxy = false,
            AllowAutoRedirect = false,
            AutomaticDecompression = DecompressionMethods.None,
            UseCookies = false,
            EnableMultipleHttp2Connections = true,
            ActivityHeadersPropagator = null,
            ConnectTimeout = TimeSpan.FromSeconds(15),
        });
        var forwarder = app.Services.GetRequiredService<IHttpForwarder>();

        app.MapGet("/health", () => "ok");
        app.Run(async context => await forwarder.SendAsync(context, upstream, invoker, ForwarderRequestConfig.Empty, HttpTransformer.Default));

        await app.RunAsync();
    }
}
