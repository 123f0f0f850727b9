using System.Collections.Concurrent;
using System.Globalization;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Logging;

namespace Marketplace.Testing;

/// <summary>A webhook receiver on a loopback port: records every POST to <c>/hooks/{name}</c> and answers as scripted.</summary>
internal sealed class WebhookReceiver : IAsyncDisposable
{
    private readonly WebApplication _app;
    private readonly ConcurrentDictionary<string, ConcurrentQueue<Received>> _received = new(StringComparer.Ordinal);
    private readonly ConcurrentDictionary<string, ConcurrentQueue<int>> _answers = new(StringComparer.Ordinal);
    private readonly ConcurrentDictionary<string, int> _always = new(StringComparer.Ordinal);

    private WebhookReceiver()
    {
        var builder = WebApplication.CreateSlimBuilder(new WebApplicationOptions { Args = ["--urls", "http://127.0.0.1:0"] });
        builder.Logging.ClearProviders();
        _app = builder.Build();
        _app.MapPost("/hooks/{name}", async (string name, HttpRequest request) =>
        {
            using var reader = new StreamReader(request.Body, Encoding.UTF8);
            var body = await reader.ReadToEndAsync();
            _received.GetOrAdd(name, _ => new()).Enqueue(new Received(
                body, request.Headers["X-Marketplace-Signature"].ToString(), request.Headers["X-Marketplace-Event"].ToString(),
                request.Headers["X-Marketplace-Delivery"].ToString(), request.ContentType));
            var status = _answers.TryGetValue(name, out var queue) && queue.TryDequeue(out var next) ? next : _always.GetValueOrDefault(name, 200);
            return Results.StatusCode(status);
        });
    }

    public static async Task<WebhookReceiver> StartAsync()
    {
        var receiver = new WebhookReceiver();
        await receiver._app.StartAsync();
        return receiver;
    }

    /// <summary>The URL of the hook <paramref name="name"/>.</summary>
    public string Url(string name) => $"{_app.Urls.First().TrimEnd('/')}/hooks/{name}";

    /// <summary>The hook answers these statuses first, then 200.</summary>
    public void AnswerFirst(string name, params int[] statuses) => _answers[name] = new ConcurrentQueue<int>(statuses);

    /// <summary>The hook answers this status to every request.</summary>
    public void AnswerAlways(string name, int status) => _always[name] = status;

    /// <summary>What the hook received so far, in order.</summary>
    public IReadOnlyList<Received> Of(string name) => _received.TryGetValue(name, out var queue) ? [.. queue] : [];

    /// <summary>Waits, a bounded time, until the hook has received <paramref name="count"/> requests; returns them.</summary>
    public async Task<IReadOnlyList<Received>> WaitForAsync(string name, int count, double seconds = 10)
    {
        var until = DateTime.UtcNow.AddSeconds(seconds);
        while (Of(name).Count < count)
        {
            Assert.True(DateTime.UtcNow < until, $"Hook '{name}' received {Of(name).Count} of {count} requests within {seconds} s.");
            await Task.Delay(10, TestContext.Current.CancellationToken);
        }

        return Of(name);
    }

    public async ValueTask DisposeAsync()
    {
        await _app.StopAsync();
        await _app.DisposeAsync();
    }

    /// <summary>One request as the receiver saw it.</summary>
    internal sealed record Received(string Body, string Signature, string Event, string Delivery, string? ContentType)
    {
        public JsonElement Json => JsonDocument.Parse(Body).RootElement.Clone();

        /// <summary>The <c>t</c> of the signature header.</summary>
        public long Timestamp => long.Parse(Part("t"), CultureInfo.InvariantCulture);

        /// <summary>True when the header's <c>v1</c> is the HMAC-SHA256 of <c>"t.body"</c> under <paramref name="secret"/>.</summary>
        public bool SignedWith(string secret)
        {
            var expected = HMACSHA256.HashData(Encoding.UTF8.GetBytes(secret), Encoding.UTF8.GetBytes($"{Part("t")}.{Body}"));
            return CryptographicOperations.FixedTimeEquals(expected, Convert.FromHexString(Part("v1")));
        }

        private string Part(string name) =>
            Signature.Split(',').Select(p => p.Split('=', 2)).Single(p => p[0] == name)[1];
    }
}
