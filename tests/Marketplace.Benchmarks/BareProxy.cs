using System.Net;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Logging;

namespace Marketplace.Benchmarks;

/// <summary>
/// The smallest reverse proxy .NET offers without a library: Kestrel in, one pooled <see cref="HttpClient"/> out, the
/// body buffered and copied back. No checks, no logging. The HTTP benchmark runs it next to nginx and the marketplace
/// so the marketplace's cost splits into what the .NET HTTP stack costs and what the marketplace adds on top.
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
        var app = builder.Build();
        using var client = new HttpClient(new SocketsHttpHandler
        {
            PooledConnectionLifetime = TimeSpan.FromMinutes(5),
            AutomaticDecompression = DecompressionMethods.None,
            UseCookies = false,
            UseProxy = false,
        });

        app.MapGet("/health", () => "ok");
        app.Run(async context =>
        {
            using var request = new HttpRequestMessage(HttpMethod.Get, upstream + context.Request.Path + context.Request.QueryString);
            using var response = await client.SendAsync(request, HttpCompletionOption.ResponseHeadersRead, context.RequestAborted);
            var body = await response.Content.ReadAsByteArrayAsync(context.RequestAborted);
            context.Response.StatusCode = (int)response.StatusCode;
            context.Response.ContentType = response.Content.Headers.ContentType?.ToString();
            context.Response.ContentLength = body.Length;
            await context.Response.Body.WriteAsync(body, context.RequestAborted);
        });

        await app.RunAsync();
    }
}
