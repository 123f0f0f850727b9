using System.Collections.Concurrent;
using System.Diagnostics;
using System.Net;
using System.Net.Http.Headers;
using System.Net.Http.Json;
using System.Text;
using System.Text.Json;
using Marketplace.Silo.Tests.Infrastructure;
using Marketplace.Silo.Tests.Metering;

namespace Marketplace.Silo.Tests.Hostile;

/// <summary>
/// DESIGN §3 promise 6: thousands of malformed and hostile requests against every endpoint family of a real marketplace.
/// Every answer is a 4xx (problem+json with a trackId when the app answered), nothing is a 5xx, nothing changes state,
/// and each consumer still sees only its own data. The storm is generated from a fixed seed (printed), so a failure replays.
/// </summary>
[Collection(PostgresCollection.Name)]
public sealed class HostileInputTests(HostileFixture fixture, ITestOutputHelper output) : IClassFixture<HostileFixture>
{
    private const int Seed = 6_2025;
    private const int RequestCount = 10_000;
    private const int Concurrency = 16;
    private const int MaxBodyBytes = 1024 * 1024;

    private MarketplaceNode M => fixture.Node;

    [Fact]
    public async Task Storm_OfHostileRequests_AnswersOnly4xxProblemsAndChangesNothing()
    {
        var world = await SetUpAsync();
        var before = await SnapshotAsync(world);
        var seed = int.TryParse(Environment.GetEnvironmentVariable("HOSTILE_SEED"), out var s) ? s : Seed;
        output.WriteLine($"seed {seed}");
        var requests = new Storm(new Random(seed), world).Generate(RequestCount);

        using var handler = new SocketsHttpHandler { PooledConnectionLifetime = TimeSpan.FromMinutes(5), MaxConnectionsPerServer = Concurrency };
        using var client = new HttpClient(handler) { BaseAddress = M.Host.BaseAddress, Timeout = TimeSpan.FromSeconds(30) };
        var outcomes = new Outcome[requests.Count];
        var clock = Stopwatch.StartNew();
        await Parallel.ForEachAsync(Enumerable.Range(0, requests.Count), new ParallelOptions { MaxDegreeOfParallelism = Concurrency },
            async (i, _) => outcomes[i] = await SendAsync(client, requests[i], world));
        clock.Stop();

        var failures = outcomes.Where(o => o.Failure is not null).Select(o => o.Failure!).ToList();
        output.WriteLine($"{requests.Count} requests in {clock.Elapsed.TotalSeconds:F1} s");
        foreach (var group in outcomes.GroupBy(o => o.Request.Category).OrderBy(g => g.Key, StringComparer.Ordinal))
        {
            output.WriteLine($"  {group.Key,-28} {group.Count(),5}  " + string.Join(" ",
                group.GroupBy(o => o.Status).OrderBy(g => g.Key).Select(g => $"{(g.Key == 0 ? "closed" : g.Key.ToString(System.Globalization.CultureInfo.InvariantCulture))}x{g.Count()}")));
        }

        foreach (var finding in outcomes.Where(o => o.Finding is not null).GroupBy(o => o.Finding!, StringComparer.Ordinal))
        {
            output.WriteLine($"finding ({finding.Count()}x): {finding.Key}");
        }

        foreach (var failure in failures.Take(200))
        {
            output.WriteLine("FAIL " + failure);
        }

        var after = await SnapshotAsync(world);
        foreach (var (name, value) in before)
        {
            if (after[name] != value)
            {
                failures.Add($"state changed: {name}\n  before: {value}\n  after:  {after[name]}");
            }
        }

        var late = await CheckStillServingAsync(world);
        foreach (var failure in late)
        {
            output.WriteLine("FAIL " + failure);
        }

        failures.AddRange(late);

        Assert.True(requests.Count >= RequestCount);
        Assert.True(failures.Count == 0, $"{failures.Count} failures (seed {seed}); first ones:\n" + string.Join("\n", failures.Take(30)));
    }

    private async Task<World> SetUpAsync()
    {
        var a = await M.Api.CreateConsumerAsync(balance: 1000, price: 5);
        var b = await M.Api.CreateConsumerAsync(balance: 1000, price: 5);
        var providerA = "prov-" + a.ServiceId["svc-".Length..];

        // One real call so A has a TrackId in the call log, settled before the snapshot.
        var trackA = "hostile-" + Guid.NewGuid().ToString("N");
        (await M.CallAsync(a, "/verify?number=%2B4930123456", trackA)).Dispose();
        await M.Api.WaitForAccountAsync(a.AccountId, x => x.GetProperty("reserved").GetInt64() == 0 && x.GetProperty("usage").GetProperty("calls").GetInt64() == 1);
        await M.WaitForCallAsync(trackA);

        var providerKey = (await M.Api.PostOk($"/admin/providers/{providerA}/keys", new { })).GetProperty("key").GetString()!;
        var alertA = await CreateAlertAsync(a);
        var alertB = await CreateAlertAsync(b);

        // Dead tokens to replay: a revoked pair, and a refresh token already used once. A's live pair stays out of the storm.
        var revoked = await IssueTokensAsync(a);
        await RevokeAsync(revoked.Access);
        await RevokeAsync(revoked.Refresh);
        var used = await IssueTokensAsync(a);
        var live = await RefreshAsync(used.Refresh);
        Assert.NotNull(live);

        return new World(a, b, trackA, alertA, alertB, providerA, providerKey,
            [revoked.Access, revoked.Refresh, used.Refresh], live!);
    }

    private async Task<Dictionary<string, string>> SnapshotAsync(World w)
    {
        var reads = new Dictionary<string, (string Path, string? ApiKey, string? ProviderKey, bool Admin)>
        {
            ["accounts"] = ("/admin/accounts", null, null, true),
            ["account A"] = ($"/admin/accounts/{w.A.AccountId}", null, null, true),
            ["account B"] = ($"/admin/accounts/{w.B.AccountId}", null, null, true),
            ["ledger A"] = ($"/admin/accounts/{w.A.AccountId}/ledger", null, null, true),
            ["ledger B"] = ($"/admin/accounts/{w.B.AccountId}/ledger", null, null, true),
            ["keys A"] = ($"/admin/accounts/{w.A.AccountId}/keys", null, null, true),
            ["keys B"] = ($"/admin/accounts/{w.B.AccountId}/keys", null, null, true),
            ["providers"] = ("/admin/providers", null, null, true),
            ["provider A"] = ($"/admin/providers/{w.ProviderA}", null, null, true),
            ["services"] = ("/admin/services?pageSize=100", null, null, true),
            ["service A"] = ($"/admin/services/{w.A.ServiceId}", null, null, true),
            ["service B"] = ($"/admin/services/{w.B.ServiceId}", null, null, true),
            ["catalog"] = ("/v1/services?pageSize=100", null, null, false),
            ["provider A's services"] = ("/provider/services?pageSize=100", null, w.ProviderKey, false),
            ["alerts A"] = ("/v1/alerts", w.A.ApiKey, null, false),
            ["alerts B"] = ("/v1/alerts", w.B.ApiKey, null, false),
            ["call log of A's TrackId"] = ($"/admin/calls/{w.TrackA}", null, null, true),
        };

        // Settlement and write-behind are asynchronous; nothing should be in flight, but wait until reservations are back to 0.
        await M.Api.WaitForAccountAsync(w.A.AccountId, x => x.GetProperty("reserved").GetInt64() == 0);
        await M.Api.WaitForAccountAsync(w.B.AccountId, x => x.GetProperty("reserved").GetInt64() == 0);
        var snapshot = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var (name, (path, apiKey, providerKey, admin)) in reads)
        {
            using var request = new HttpRequestMessage(HttpMethod.Get, path);
            if (apiKey is not null)
            {
                request.Headers.Add("X-Api-Key", apiKey);
            }

            if (providerKey is not null)
            {
                request.Headers.Add("X-Provider-Key", providerKey);
            }

            using var response = await (admin ? M.Admin : M.Anonymous).SendAsync(request);
            snapshot[name] = $"{(int)response.StatusCode} {await response.Content.ReadAsStringAsync()}";
        }

        return snapshot;
    }

    private async Task<List<string>> CheckStillServingAsync(World w)
    {
        var failures = new List<string>();
        using var ready = await M.Anonymous.GetAsync("/health/ready");
        if (ready.StatusCode != HttpStatusCode.OK)
        {
            failures.Add($"/health/ready answered {(int)ready.StatusCode} after the storm");
        }

        // B never sees A's call, key or alert; A still sees its own call.
        foreach (var path in new[] { $"/v1/calls/{w.TrackA}", $"/v1/keys/{w.A.KeyId}", $"/v1/alerts/{w.AlertA}" })
        {
            using var response = await SendWithKeyAsync(HttpMethod.Get, path, w.B.ApiKey);
            var text = await response.Content.ReadAsStringAsync();
            if (response.StatusCode is not (HttpStatusCode.NotFound or HttpStatusCode.Unauthorized or HttpStatusCode.Forbidden))
            {
                failures.Add($"isolation: B GET {path} answered {(int)response.StatusCode}: {text}");
            }
        }

        foreach (var path in new[] { "/v1/keys", "/v1/alerts", "/v1/usage", "/v1/reports/usage" })
        {
            using var response = await SendWithKeyAsync(HttpMethod.Get, path, w.B.ApiKey);
            var text = await response.Content.ReadAsStringAsync();
            if (response.StatusCode != HttpStatusCode.OK || Leaks(text, w))
            {
                failures.Add($"isolation: B GET {path} answered {(int)response.StatusCode}: {text}");
            }
        }

        using (var own = await SendWithKeyAsync(HttpMethod.Get, $"/v1/calls/{w.TrackA}", w.A.ApiKey))
        {
            var text = await own.Content.ReadAsStringAsync();
            if (own.StatusCode != HttpStatusCode.OK || !text.Contains(w.A.AccountId, StringComparison.Ordinal))
            {
                failures.Add($"A GET its own call answered {(int)own.StatusCode}: {text}");
            }
        }

        // A's live tokens survived the replays of its dead ones; the dead ones are still dead.
        // Access tokens are for calls (the account endpoints take the key itself): one real call with the live token.
        using (var usage = await SendWithKeyAsync(HttpMethod.Get, $"/v1/call/{w.A.ServiceId}/verify?number=%2B4930123456", w.Live.Access, bearer: true))
        {
            if (usage.StatusCode != HttpStatusCode.OK)
            {
                failures.Add($"A's live access token answered {(int)usage.StatusCode} to a call after the storm");
            }
        }

        foreach (var dead in w.DeadTokens.Where(t => t.StartsWith("mr_", StringComparison.Ordinal)))
        {
            if (await RefreshAsync(dead) is not null)
            {
                failures.Add("a used or revoked refresh token worked after the storm");
            }
        }

        if (await RefreshAsync(w.Live.Refresh) is null)
        {
            failures.Add("A's live refresh token no longer works after the storm");
        }

        return failures;
    }

    // A server that refused a hostile request may close the connection; the client can pick that closing connection for
    // the next request. So a request without an answer is sent once more before it counts as unanswered.
    private static async Task<Outcome> SendAsync(HttpClient client, HostileRequest spec, World world)
    {
        var outcome = await SendOnceAsync(client, spec, world);
        return outcome.Status == 0 && outcome.Failure is not null ? await SendOnceAsync(client, spec, world) : outcome;
    }

    private static async Task<Outcome> SendOnceAsync(HttpClient client, HostileRequest spec, World world)
    {
        using var request = new HttpRequestMessage(new HttpMethod(spec.Method), spec.Path);
        foreach (var (name, value) in spec.Headers)
        {
            request.Headers.TryAddWithoutValidation(name, value);
        }

        if (spec.Body is not null)
        {
            request.Content = new ByteArrayContent(spec.Body);
            if (spec.ContentType is not null)
            {
                request.Content.Headers.TryAddWithoutValidation("Content-Type", spec.ContentType);
            }
        }

        HttpResponseMessage response;
        try
        {
            response = await client.SendAsync(request);
        }
        catch (HttpRequestException exception) when (spec.MayBeCutOff)
        {
            // Kestrel may answer an oversized request and close the connection while the client is still writing it.
            return new Outcome(spec, 0, null, $"{spec.Category}: connection closed by the server ({exception.HttpRequestError})");
        }
        catch (Exception exception)
        {
            return new Outcome(spec, 0, $"{spec.Describe()} -> no answer: {exception.GetType().Name}: {exception.Message}", null);
        }

        using (response)
        {
            var status = (int)response.StatusCode;
            var text = await response.Content.ReadAsStringAsync();
            var mediaType = response.Content.Headers.ContentType?.MediaType;
            var answeredByApp = response.Headers.Contains("X-Track-Id");
            string? failure = null;
            string? finding = null;
            if (status >= 500)
            {
                failure = $"{spec.Describe()} -> {status}: {Truncate(text)}";
            }
            else if (status is >= 200 and < 300)
            {
                if (!spec.MayRead)
                {
                    failure = $"{spec.Describe()} -> {status} (a write that should have been refused): {Truncate(text)}";
                }
                else if (spec.AsB && Leaks(text, world))
                {
                    failure = $"{spec.Describe()} -> {status} with A's data: {Truncate(text)}";
                }
            }
            else if (status is >= 300 and < 400)
            {
                failure = $"{spec.Describe()} -> {status} redirect";
            }
            else if (!answeredByApp && mediaType != "application/problem+json")
            {
                finding = $"{status} answered by Kestrel without problem+json (content type {mediaType ?? "none"}) for {spec.Category}";
            }
            else if (mediaType != "application/problem+json" || !HasTrackId(text, response))
            {
                failure = $"{spec.Describe()} -> {status} {mediaType}: not a problem with the TrackId: {Truncate(text)}";
            }
            else if (!answeredByApp)
            {
                finding = $"{status} problem+json without the X-Track-Id header for {spec.Category}";
            }

            return new Outcome(spec, status, failure, finding);
        }
    }

    private static bool HasTrackId(string text, HttpResponseMessage response)
    {
        try
        {
            using var document = JsonDocument.Parse(text);
            return document.RootElement.TryGetProperty("trackId", out var trackId) && trackId.GetString() is { Length: > 0 } value
                && (!response.Headers.TryGetValues("X-Track-Id", out var header) || header.Single() == value);
        }
        catch (JsonException)
        {
            return false;
        }
    }

    private static bool Leaks(string text, World w) =>
        text.Contains(w.A.AccountId, StringComparison.Ordinal) || text.Contains(w.A.KeyId, StringComparison.Ordinal)
        || text.Contains(w.TrackA, StringComparison.Ordinal) || text.Contains(w.AlertA, StringComparison.Ordinal);

    private static string Truncate(string text) => text.Length <= 400 ? text : text[..400] + "…";

    private async Task<HttpResponseMessage> SendWithKeyAsync(HttpMethod method, string path, string key, bool bearer = false)
    {
        using var request = new HttpRequestMessage(method, path);
        if (bearer)
        {
            request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", key);
        }
        else
        {
            request.Headers.Add("X-Api-Key", key);
        }

        return await M.Anonymous.SendAsync(request);
    }

    private async Task<string> CreateAlertAsync(Consumer consumer)
    {
        using var request = new HttpRequestMessage(HttpMethod.Post, "/v1/alerts")
        {
            Content = JsonContent.Create(new { url = "https://hooks.example.com/hostile", events = new[] { "balance" }, thresholds = new[] { 10 } }),
        };
        request.Headers.Add("X-Api-Key", consumer.ApiKey);
        using var response = await M.Anonymous.SendAsync(request);
        var text = await response.Content.ReadAsStringAsync();
        Assert.True(response.StatusCode == HttpStatusCode.Created, $"alert: {(int)response.StatusCode} {text}");
        var created = JsonDocument.Parse(text).RootElement;
        return (created.TryGetProperty("alert", out var alert) ? alert : created).GetProperty("alertId").GetString()!;
    }

    private async Task<Tokens> IssueTokensAsync(Consumer consumer)
    {
        using var request = new HttpRequestMessage(HttpMethod.Post, "/v1/token")
        {
            Content = new FormUrlEncodedContent(new Dictionary<string, string> { ["grant_type"] = "client_credentials" }),
        };
        request.Headers.Add("X-Api-Key", consumer.ApiKey);
        using var response = await M.Anonymous.SendAsync(request);
        var text = await response.Content.ReadAsStringAsync();
        Assert.True(response.StatusCode == HttpStatusCode.OK, $"token: {(int)response.StatusCode} {text}");
        var body = JsonDocument.Parse(text).RootElement;
        return new Tokens(body.GetProperty("access_token").GetString()!, body.GetProperty("refresh_token").GetString()!);
    }

    private async Task<Tokens?> RefreshAsync(string refreshToken)
    {
        using var content = new FormUrlEncodedContent(new Dictionary<string, string> { ["grant_type"] = "refresh_token", ["refresh_token"] = refreshToken });
        using var response = await M.Anonymous.PostAsync("/v1/token", content);
        if (response.StatusCode != HttpStatusCode.OK)
        {
            return null;
        }

        var body = JsonDocument.Parse(await response.Content.ReadAsStringAsync()).RootElement;
        return new Tokens(body.GetProperty("access_token").GetString()!, body.GetProperty("refresh_token").GetString()!);
    }

    private async Task RevokeAsync(string token)
    {
        using var content = new FormUrlEncodedContent(new Dictionary<string, string> { ["token"] = token });
        using var response = await M.Anonymous.PostAsync("/v1/token/revoke", content);
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
    }

    private sealed record Tokens(string Access, string Refresh);

    private sealed record World(
        Consumer A, Consumer B, string TrackA, string AlertA, string AlertB, string ProviderA, string ProviderKey,
        IReadOnlyList<string> DeadTokens, Tokens Live);

    private sealed record Outcome(HostileRequest Request, int Status, string? Failure, string? Finding);

    /// <summary>
    /// One request. <see cref="MayRead"/>: a 2xx is acceptable (a read of the caller's own or public data, or a token
    /// revocation, which answers 200 whatever the token). <see cref="AsB"/>: sent with consumer B's key, so an answer must
    /// never carry A's ids. <see cref="MayBeCutOff"/>: oversized, so the server may close the connection mid-request.
    /// </summary>
    private sealed record HostileRequest(
        string Category, string Method, string Path, IReadOnlyList<(string Name, string Value)> Headers, byte[]? Body, string? ContentType,
        bool MayRead, bool AsB, bool MayBeCutOff)
    {
        public string Describe()
        {
            var headers = string.Join(", ", Headers.Select(h => $"{h.Name}: {(h.Value.Length > 80 ? h.Value[..80] + $"…({h.Value.Length})" : h.Value)}"));
            var body = Body is null ? "" : Body.Length > 200 ? $" body {Body.Length} bytes" : " body " + Encoding.UTF8.GetString(Body).Replace("\n", "\\n", StringComparison.Ordinal);
            return $"[{Category}] {Method} {(Path.Length > 200 ? Path[..200] + "…" : Path)} [{headers}] content-type {ContentType ?? "none"}{body}";
        }
    }

    /// <summary>Generates the storm. Every request is refused by design: hostile credentials, another consumer's resources, or a body that cannot be valid.</summary>
    private sealed class Storm(Random random, World w)
    {
        private static readonly string[] Sql =
        [
            "' OR 1=1 --", "'; DROP TABLE marketplace_call_log; --", "1; SELECT pg_sleep(30)", "\" OR \"\"=\"", "admin'--",
            "1' UNION SELECT key_id, hash FROM api_keys --", "'); DELETE FROM accounts; --", "$1", "%' AND 1=0 UNION SELECT NULL --",
        ];

        private static readonly string[] Traversal =
        [
            "..", "../..", "..%2f..%2fadmin", "%2e%2e", "%2e%2e%2f%2e%2e%2fetc%2fpasswd", "..%5c..%5cwindows", "%252e%252e%252f", "....//....//",
            ".%2e/.%2e/_control", "%2F%2F..%2F_stats", "..;/admin",
        ];

        // Percent-encoded bytes that are not UTF-8 (lone continuation, overlong, surrogate, 0xFF) and control characters.
        private static readonly string[] BadEscapes = ["%C3%28", "%FF%FE", "%ED%A0%80", "%C0%AF", "%80", "%F8%88%80%80%80", "%00", "%0d%0a", "%1b%5b31m", "%7f"];

        private static readonly string[] BrokenJson =
        [
            "{", "{\"id\":", "[1,2", "nul", "\"", "{\"a\":1,}", "{'id':'x'}", "{\"id\" \"x\"}", "}{", "{\"id\":\"x\"}}", "\u0000",
            "{\"id\":\"\\uD800\"", "{\"a\":NaN}", "{\"a\":01}", "{\"a\":.5}", "[]", "\"just a string\"", "42", "true", "null",
        ];

        private static readonly string[] WrongValues =
        [
            "[]", "{}", "true", "1.5", "1e400", "9223372036854775808", "-9223372036854775809", "\"lots\"", "[\"a\",{}]", "{\"$ne\":null}",
        ];

        private static readonly string[] Categories =
        [
            "call", "token", "token-revoke", "consumer-keys", "consumer-reads", "calls-lookup", "alerts", "reports", "provider", "admin-unauthorized",
            "admin-malformed", "kestrel-limits",
        ];

        public List<HostileRequest> Generate(int count)
        {
            var requests = new List<HostileRequest>(count);
            for (var i = 0; i < count; i++)
            {
                var category = Categories[random.Next(Categories.Length)];
                var request = category switch
                {
                    "call" => Call(),
                    "token" => Token(),
                    "token-revoke" => TokenRevoke(),
                    "consumer-keys" => ConsumerKeys(),
                    "consumer-reads" => ConsumerReads(),
                    "calls-lookup" => CallsLookup(),
                    "alerts" => Alerts(),
                    "reports" => Reports(),
                    "provider" => Provider(),
                    "admin-unauthorized" => AdminUnauthorized(),
                    "admin-malformed" => AdminMalformed(),
                    _ => KestrelLimits(),
                };
                requests.Add(Decorate(request));
            }

            return requests;
        }

        // ---- endpoint families ----

        private HostileRequest Call()
        {
            // With A's own key on its own service only a malformed Idempotency-Key or an oversized body (both refused before
            // admission) is sent: anything else would be a real, charged call.
            switch (random.Next(5))
            {
                case 0:
                    return new("call/own-bad-idempotency", Pick("GET", "POST"), $"/v1/call/{w.A.ServiceId}/verify?number=%2B4930123456",
                        [("X-Api-Key", w.A.ApiKey), ("Idempotency-Key", Pick(BadIdempotencyKey()))], null, null, false, false, false);
                case 1:
                    return new("call/own-huge-body", "POST", $"/v1/call/{w.A.ServiceId}/verify", [("X-Api-Key", w.A.ApiKey)],
                        HugeBody(), "application/json", false, false, true);
                case 2:
                    // B's key on A's service, with hostile paths and queries: 403 not-entitled before anything else.
                    return new("call/b-on-a", Pick(["GET", "POST", "PUT", "PATCH", "DELETE"]), $"/v1/call/{w.A.ServiceId}/{HostilePath()}?{HostileQuery()}",
                        [("X-Api-Key", w.B.ApiKey)], MaybeBody(), "application/json", false, true, false);
                case 3:
                    return new("call/hostile-credential", Pick("GET", "POST"), $"/v1/call/{Pick(w.A.ServiceId, HostileId())}/{HostilePath()}?{HostileQuery()}",
                        HostileConsumerCredential(), MaybeBody(), "application/json", false, false, false);
                default:
                    // A's key, but a service that is not A's or does not exist.
                    return new("call/a-elsewhere", "GET", $"/v1/call/{Pick(w.B.ServiceId, HostileId())}/{HostilePath()}?{HostileQuery()}",
                        [("X-Api-Key", w.A.ApiKey)], null, null, false, false, false);
            }
        }

        private HostileRequest Token()
        {
            var form = random.Next(2) == 0;
            switch (random.Next(4))
            {
                case 0:
                    // Replayed dead tokens, forged and oversized ones.
                    var refresh = Pick([.. w.DeadTokens, "mr_" + w.A.KeyId + "." + new string('A', 43), "mr_' OR 1=1 --", "mr_" + new string('x', 5000), Pick(Sql)]);
                    return new("token/replayed-refresh", "POST", "/v1/token", [], Fields(form, ("grant_type", "refresh_token"), ("refresh_token", refresh)),
                        form ? "application/x-www-form-urlencoded" : "application/json", false, false, false);
                case 1:
                    return new("token/hostile-credential", "POST", "/v1/token", HostileConsumerCredential(),
                        Fields(form, ("grant_type", Pick("client_credentials", "CLIENT_CREDENTIALS")), ("client_secret", Pick([.. Sql, .. w.DeadTokens, "mk_" + w.A.KeyId + ".x"]))),
                        form ? "application/x-www-form-urlencoded" : "application/json", false, false, false);
                case 2:
                    // A's key, but a grant type that does not exist.
                    return new("token/unknown-grant", "POST", "/v1/token", [("X-Api-Key", w.A.ApiKey)],
                        Fields(form, ("grant_type", Pick([.. Sql, "password", "implicit", "authorization_code", "client_credentials\u0000", ""]))),
                        form ? "application/x-www-form-urlencoded" : "application/json", false, false, false);
                default:
                    // A's key with a body that is not a form or a JSON object.
                    return new("token/malformed-body", "POST", "/v1/token", [("X-Api-Key", w.A.ApiKey)], Pick(Json(Pick(BrokenJson)), InvalidUtf8(), HugeBody()),
                        Pick("application/json", "application/json; charset=utf-8"), false, false, true);
            }
        }

        private HostileRequest TokenRevoke()
        {
            var form = random.Next(2) == 0;
            if (random.Next(3) == 0)
            {
                return new("token-revoke/malformed", "POST", "/v1/token/revoke", [], MalformedBody(), "application/json", false, false, true);
            }

            // RFC 7009: 200 whatever the token; the dead and forged tokens must not touch A's live ones.
            var token = Pick([.. w.DeadTokens, .. Sql, "mt_" + w.A.KeyId + "." + new string('B', 43), "mr_" + w.B.KeyId + ".x", new string('t', 10_000)]);
            return new("token-revoke/dead-or-forged", "POST", "/v1/token/revoke", HostileConsumerCredential(), Fields(form, ("token", token)),
                form ? "application/x-www-form-urlencoded" : "application/json", true, false, false);
        }

        private HostileRequest ConsumerKeys()
        {
            var op = Pick("", "/suspend", "/resume", "/revoke", "/rotate", "/secrets/" + HostileId(), "");
            switch (random.Next(5))
            {
                case 0:
                    // B on A's key: 404 as for a missing key, whatever the operation.
                    var method = op.Length == 0 ? Pick("GET", "DELETE") : op.StartsWith("/secrets", StringComparison.Ordinal) ? "DELETE" : "POST";
                    return new("keys/b-on-a", method, $"/v1/keys/{w.A.KeyId}{op}", [("X-Api-Key", w.B.ApiKey)], MaybeJson(), "application/json", false, true, false);
                case 1:
                    return new("keys/hostile-credential", Pick("GET", "POST", "DELETE"), $"/v1/keys/{Pick(w.A.KeyId, HostileId())}{op}",
                        HostileConsumerCredential(), MaybeJson(), "application/json", false, false, false);
                case 2:
                    // A on keys that are not its own or do not exist.
                    return new("keys/a-elsewhere", op.Length == 0 ? Pick("GET", "DELETE") : op.StartsWith("/secrets", StringComparison.Ordinal) ? "DELETE" : "POST",
                        $"/v1/keys/{Pick(w.B.KeyId, HostileId())}{op}", [("X-Api-Key", w.A.ApiKey)], null, null, false, false, false);
                case 3:
                    // A creating a key with a body that cannot be valid.
                    var body = random.Next(2) == 0
                        ? MalformedBody()
                        : Json($"{{\"name\":{JsonString(Pick(Sql))},\"services\":[{JsonString(Pick(w.B.ServiceId, HostileId()))}],\"expiresAt\":{Pick("\"2000-01-01T00:00:00Z\"", "\"not a date\"", "null")}}}");
                    return new("keys/a-create-invalid", "POST", "/v1/keys", [("X-Api-Key", w.A.ApiKey)], body, "application/json", false, false, true);
                default:
                    // A rotating its own key, or retiring a secret of it, with values out of range.
                    return random.Next(2) == 0
                        ? new("keys/a-rotate-invalid", "POST", $"/v1/keys/{w.A.KeyId}/rotate", [("X-Api-Key", w.A.ApiKey)],
                            Json($"{{\"overlapSeconds\":{Pick("-1", "2592001", "9223372036854775808", "1.5", "\"soon\"", "[]", "-9223372036854775808")}}}"), "application/json", false, false, false)
                        : new("keys/a-retire-unknown-secret", "DELETE", $"/v1/keys/{w.A.KeyId}/secrets/{UnresolvableId()}", [("X-Api-Key", w.A.ApiKey)], null, null, false, false, false);
            }
        }

        private HostileRequest ConsumerReads()
        {
            var (path, key, asB) = random.Next(4) switch
            {
                0 => ($"/v1/usage?{HostileQuery()}", Pick(w.A.ApiKey, w.B.ApiKey), false),
                1 => ($"/v1/services?search={Escaped()}&category={Escaped()}&page={HostileNumber()}&pageSize={HostileNumber()}", Pick(w.A.ApiKey, w.B.ApiKey), false),
                2 => ($"/v1/services/{HostileId()}", w.B.ApiKey, false),
                _ => ("/v1/keys?" + HostileQuery(), w.B.ApiKey, true),
            };
            var headers = random.Next(3) == 0 ? HostileConsumerCredential() : [("X-Api-Key", key)];
            return new("consumer-reads", "GET", path, headers, null, null, true, asB || headers.Any(h => h.Item2 == w.B.ApiKey), false);
        }

        private HostileRequest CallsLookup() => random.Next(3) switch
        {
            0 => new("calls/b-reads-a", "GET", $"/v1/calls/{w.TrackA}", [("X-Api-Key", w.B.ApiKey)], null, null, true, true, false),
            1 => new("calls/hostile-trackid", "GET", $"/v1/calls/{HostileTrackId()}", [("X-Api-Key", Pick(w.A.ApiKey, w.B.ApiKey))], null, null, true, false, false),
            _ => new("calls/hostile-credential", "GET", $"/v1/calls/{Pick(w.TrackA, HostileTrackId())}", HostileConsumerCredential(), null, null, false, false, false),
        };

        private HostileRequest Alerts()
        {
            switch (random.Next(4))
            {
                case 0:
                    return new("alerts/b-on-a", Pick("GET", "DELETE"), $"/v1/alerts/{w.AlertA}", [("X-Api-Key", w.B.ApiKey)], null, null, false, true, false);
                case 1:
                    return new("alerts/a-unknown", Pick("GET", "DELETE"), $"/v1/alerts/{Pick(w.AlertB, HostileId())}", [("X-Api-Key", w.A.ApiKey)], null, null, false, false, false);
                case 2:
                    return new("alerts/hostile-credential", Pick("GET", "POST", "DELETE"), Pick("/v1/alerts", $"/v1/alerts/{w.AlertA}"), HostileConsumerCredential(),
                        MaybeJson(), "application/json", false, false, false);
                default:
                    // A registering an alert that cannot be valid: unknown events or thresholds out of range, any URL.
                    var url = Pick("https://hooks.example.com/" + Uri.EscapeDataString(Pick(Sql)), "javascript:alert(1)", "file:///etc/passwd", "http://169.254.169.254/latest",
                        "https://" + new string('a', 5000) + ".example.com", "");
                    var events = Pick("[\"QUOTA\"]", "[\"balance\",\"balance\"]", "[\"' OR 1=1 --\"]", "[]", "[null]", "\"balance\"", "[1]");
                    var thresholds = Pick("[0]", "[101]", "[-1]", "[2147483648]", "[1,2,3,4,5,6]", "[\"ten\"]", "{}");
                    var body = random.Next(3) == 0 ? MalformedBody() : Json($"{{\"url\":{JsonString(url)},\"events\":{events},\"thresholds\":{thresholds}}}");
                    return new("alerts/a-create-invalid", "POST", "/v1/alerts", [("X-Api-Key", w.A.ApiKey)], body, "application/json", false, false, true);
            }
        }

        private HostileRequest Reports()
        {
            var query = $"from={Escaped()}&to={Escaped()}&granularity={Pick("minute", "hour", "day", "week", "'; DROP", "%FF")}&groupBy={Pick("service", "key", "account", Escaped())}&format={Pick("csv", "json", "xml", Escaped())}";
            return random.Next(3) switch
            {
                0 => new("reports/consumer", "GET", "/v1/reports/usage?" + query, [("X-Api-Key", w.B.ApiKey)], null, null, true, true, false),
                1 => new("reports/hostile-credential", "GET", Pick("/v1/reports/usage?", "/provider/reports/revenue?") + query, HostileConsumerCredential(), null, null, false, false, false),
                _ => new("reports/provider", "GET", "/provider/reports/revenue?" + query, [("X-Provider-Key", w.ProviderKey)], null, null, true, false, false),
            };
        }

        private HostileRequest Provider()
        {
            var providerCredential = HostileProviderCredential();
            switch (random.Next(4))
            {
                case 0:
                    // No or a wrong provider key: everything is 401, whatever the body.
                    return new("provider/unauthorized", Pick("GET", "POST", "PUT", "DELETE"),
                        Pick("/provider/services", $"/provider/services/{w.A.ServiceId}", $"/provider/services/{w.A.ServiceId}/status",
                            $"/provider/services/{w.A.ServiceId}/versions/v1", $"/provider/services/{w.A.ServiceId}/release", $"/provider/services/{w.A.ServiceId}/rollback"),
                        providerCredential, MaybeServiceJson(), "application/json", false, false, false);
                case 1:
                    // The real provider key, reading another provider's service or hostile ids and queries.
                    return new("provider/reads", "GET",
                        Pick($"/provider/services/{w.B.ServiceId}", $"/provider/services/{HostileId()}",
                            $"/provider/services?search={Escaped()}&status={Pick("published", "PUBLISHED", "99", "-1", Escaped())}&page={HostileNumber()}&pageSize={HostileNumber()}&providerId={Escaped()}"),
                        [("X-Provider-Key", w.ProviderKey)], null, null, true, false, false);
                case 2:
                    // The real provider key with bodies that cannot be valid, on its own service and on others.
                    var id = Pick(w.A.ServiceId, w.B.ServiceId, HostileId());
                    var (method, path, body) = random.Next(5) switch
                    {
                        0 => ("POST", "/provider/services", MalformedBody()),
                        1 => ("PUT", $"/provider/services/{id}", MalformedBody()),
                        2 => ("PUT", $"/provider/services/{id}/versions/{Pick("v2", HostileId())}", MalformedBody()),
                        3 => ("PUT", $"/provider/services/{id}/release", Pick(MalformedBody(), Json("{\"weights\":{\"nope\":100}}"), Json("{\"weights\":{\"v1\":-5,\"v2\":105}}"))),
                        _ => ("POST", $"/provider/services/{id}/status", Json($"{{\"status\":{Pick("\"UNKNOWN\"", "\"' OR 1=1 --\"", "99", "-1", "null", "[]", "\"published,retired\"")}}}")),
                    };
                    return new("provider/malformed", method, path, [("X-Provider-Key", w.ProviderKey)], body, "application/json", false, false, true);
                default:
                    // The real provider key on other providers' services and hostile ids: deletes, rollbacks.
                    var target = Pick(w.B.ServiceId, HostileId());
                    return new("provider/others", Pick("DELETE", "POST"), Pick($"/provider/services/{target}/versions/v1", $"/provider/services/{target}/rollback"),
                        [("X-Provider-Key", w.ProviderKey)], null, null, false, false, false);
            }
        }

        private HostileRequest AdminUnauthorized()
        {
            var path = Pick(AdminPaths());
            var headers = new List<(string, string)>();
            switch (random.Next(6))
            {
                case 0:
                    break;
                case 1:
                    headers.Add(("X-Admin-Key", Pick([.. Sql, "test-admin-key-012345678", "test-admin-key-0123456789 ", "TEST-ADMIN-KEY-0123456789", new string('k', 20_000)])));
                    break;
                case 2:
                    headers.Add(("X-Api-Key", Pick(w.A.ApiKey, w.B.ApiKey)));
                    break;
                case 3:
                    headers.Add(("Authorization", "Bearer " + Pick(w.A.ApiKey, w.ProviderKey, Pick(Sql))));
                    break;
                case 4:
                    headers.Add(("Authorization", "Basic " + Convert.ToBase64String(Encoding.UTF8.GetBytes(Pick("admin:wrong", "admin:' OR 1=1 --", ":", "admin")))));
                    break;
                default:
                    headers.Add(("X-Provider-Key", w.ProviderKey));
                    break;
            }

            return new("admin/unauthorized", Pick("GET", "POST", "PUT", "PATCH", "DELETE"), path, headers, MaybeServiceJson(), "application/json", false, false,
                headers.Any(h => h.Item2.Length > 10_000));
        }

        private HostileRequest AdminMalformed()
        {
            var admin = ("X-Admin-Key", TestHosts.AdminKey);
            var account = Pick(w.A.AccountId, w.B.AccountId);
            var amount = Pick("-1", "0", "-9223372036854775808", "9223372036854775808", "1.5", "1e30", "\"lots\"", "true", "null", "[]", "{}", "\"-5\"", "\"NaN\"");
            var (method, path, body, mayRead) = random.Next(12) switch
            {
                0 => ("POST", "/admin/providers", Pick(MalformedBody(), Json($"{{\"id\":{JsonString(HostileIdRaw())},\"name\":{JsonString(Pick(Sql))}}}")), false),
                1 => ("POST", "/admin/services", Pick(MalformedBody(), Json($"{{\"id\":{JsonString(HostileIdRaw())},\"name\":\"x\",\"providerId\":\"{w.ProviderA}\",\"upstreamBaseUrl\":\"http://127.0.0.1:1/x\",\"pricePerCall\":1,\"currency\":\"EUR\"}}")), false),
                2 => ("PUT", $"/admin/services/{Pick(w.A.ServiceId, w.B.ServiceId)}", MalformedBody(), false),
                3 => ("POST", "/admin/accounts", Pick(MalformedBody(), Json($"{{\"id\":{JsonString(HostileIdRaw())},\"name\":\"x\",\"currency\":\"EUR\"}}"), Json($"{{\"id\":\"hostile-new\",\"name\":\"x\",\"currency\":{JsonString(Pick([.. Sql, "EURO", ""]))}}}")), false),
                4 => ("POST", $"/admin/accounts/{account}/top-ups", Pick(MalformedBody(), Json($"{{\"amount\":{amount},\"reason\":\"x\"}}")), false),
                5 => ("POST", $"/admin/accounts/{account}/adjustments", Pick(MalformedBody(), Json($"{{\"amount\":{Pick("9223372036854775808", "-9223372036854775808", "1.5", "1e30", "\"lots\"", "true", "[]", "{}", "0")},\"reason\":\"x\"}}")), false),
                6 => ("POST", $"/admin/accounts/{account}/keys", Pick(MalformedBody(), Json($"{{\"name\":\"x\",\"services\":[{JsonString(HostileIdRaw())}],\"limits\":{Pick("[]", "\"none\"", "{\"callsPerMinute\":-1}")}}}")), false),
                7 => ("PATCH", $"/admin/keys/{Pick(w.A.KeyId, w.B.KeyId)}", MalformedBody(), false),
                8 => ("POST", $"/admin/services/{Pick(w.A.ServiceId, w.B.ServiceId)}/status", Json($"{{\"status\":{Pick("\"UNKNOWN\"", "99", "-1", "null", "[]", "\"' OR 1=1 --\"")}}}"), false),
                9 => (Pick("POST", "DELETE"), $"/admin/{Pick("keys", "providers", "services", "accounts")}/{HostileId()}/{Pick("revoke", "suspend", "keys", "rollback", "top-ups", "versions/v1")}", MaybeJson(), false),
                10 => ("PUT", $"/admin/services/{Pick(w.A.ServiceId, w.B.ServiceId)}/{Pick("release", "versions/" + Pick("v9", HostileId()))}", MalformedBody(), false),
                _ => ("GET", Pick($"/admin/{Pick("accounts", "providers", "services", "keys", "calls", "reconciliation/accounts")}/{HostileId()}",
                    $"/admin/reports/{Pick("summary", "top")}?from={Escaped()}&to={Escaped()}&by={Escaped()}&limit={HostileNumber()}&format={Escaped()}",
                    $"/admin/services?status={Pick("99", "UNKNOWN", Escaped())}&page={HostileNumber()}&pageSize={HostileNumber()}"), (byte[]?)null, true),
            };
            return new("admin/malformed", method, path, [admin], body, body is null ? null : "application/json", mayRead, false, true);
        }

        private HostileRequest KestrelLimits() => random.Next(5) switch
        {
            // Over the 32 KiB header limit, in one header or many.
            0 => new("kestrel/huge-header", "GET", "/v1/usage", [("X-Api-Key", w.A.ApiKey), ("X-Junk", new string('h', 33 * 1024 + random.Next(20_000)))], null, null, false, false, true),
            1 => new("kestrel/many-headers", "GET", "/v1/usage", [.. Enumerable.Range(0, 200).Select(i => ($"X-Junk-{i}", new string('m', 200)))], null, null, false, false, true),
            // Over the 8 KiB request line.
            2 => new("kestrel/huge-url", "GET", "/v1/services/" + new string('u', 9000), [], null, null, false, false, true),
            // Control characters and non-ASCII bytes in header values (Latin-1 in the raw request).
            3 => new("kestrel/control-chars", "GET", "/v1/usage", [("X-Api-Key", Pick("mk_a\u0001b.c", "\u001b[31mred", "a\u007fb", "mk_\u00e9\u00e8.x"))], null, null, false, false, true),
            // Over MaxRequestBodySize anywhere: the app reads it and refuses it.
            _ => new("kestrel/huge-body", "POST", Pick("/v1/token", "/v1/keys", "/v1/alerts", "/admin/providers", "/provider/services"),
                [(Pick("X-Api-Key", "X-Admin-Key", "X-Provider-Key"), Pick(w.A.ApiKey, TestHosts.AdminKey, w.ProviderKey))], HugeBody(), "application/json", false, false, true),
        };

        /// <summary>Adds forged TrackIds, wrong content types and junk headers on top, now and then.</summary>
        private HostileRequest Decorate(HostileRequest request)
        {
            var headers = request.Headers.ToList();
            var roll = random.Next(10);
            if (roll == 0)
            {
                // Another consumer's TrackId is allowed only where it is not logged: a call would put a row under it.
                var trackIds = request.Path.StartsWith("/v1/call/", StringComparison.Ordinal)
                    ? new[] { new string('t', 65), "x", "../../etc", "' OR 1=1 --", new string('z', 2000) }
                    : [w.TrackA, new string('t', 65), "x", "../../etc", "' OR 1=1 --", new string('z', 2000)];
                headers.Add(("X-Track-Id", Pick(trackIds)));
            }
            else if (roll == 1 && request.Body is not null)
            {
                return request with { ContentType = Pick("text/plain", "application/xml", "multipart/form-data; boundary=", "application/json; charset=utf-7", "application/x-www-form-urlencoded", "") };
            }
            else if (roll == 2)
            {
                headers.Add(("X-Forwarded-For", Pick(Sql)));
                headers.Add(("User-Agent", Pick(Sql)));
            }

            return request with { Headers = headers };
        }

        // ---- hostile pieces ----

        private List<(string, string)> HostileConsumerCredential() => random.Next(9) switch
        {
            0 => [],
            1 => [("X-Api-Key", Pick(Sql))],
            2 => [("X-Api-Key", $"mk_{w.A.KeyId}.{new string('A', 43)}")],
            3 => [("Authorization", "Bearer " + Pick(w.DeadTokens.ToArray()))],
            4 => [("X-Api-Key", "mk_" + new string('k', 8000))],
            5 => [("X-Api-Key", Pick("mk_../../etc.secret", "mk_.", "mk_", ".", "mk_" + w.A.KeyId))],
            6 => [("Authorization", Pick("Bearer", "Bearer ", "Basic Og==", "Bearer mt_.x", "bearer " + Pick(Sql), "Digest x"))],
            7 => [("X-Api-Key", "mk_" + w.A.KeyId + "." + w.B.ApiKey.Split('.')[1])],
            _ => [("X-Api-Key", w.A.ApiKey + "x")],
        };

        private List<(string, string)> HostileProviderCredential() => random.Next(6) switch
        {
            0 => [],
            1 => [("X-Provider-Key", $"mp_{w.ProviderA}.{new string('A', 43)}")],
            2 => [("X-Provider-Key", Pick(Sql))],
            3 => [("Authorization", "Bearer " + Pick(w.A.ApiKey, TestHosts.AdminKey))],
            4 => [("X-Provider-Key", "mp_" + Pick(Traversal) + ".x")],
            _ => [("X-Admin-Key", TestHosts.AdminKey)],
        };

        private string[] AdminPaths() =>
        [
            "/admin/accounts", $"/admin/accounts/{w.A.AccountId}", $"/admin/accounts/{w.A.AccountId}/top-ups", $"/admin/accounts/{w.A.AccountId}/adjustments",
            $"/admin/accounts/{w.A.AccountId}/keys", $"/admin/accounts/{w.A.AccountId}/ledger", "/admin/providers", $"/admin/providers/{w.ProviderA}/keys",
            "/admin/services", $"/admin/services/{w.A.ServiceId}", $"/admin/services/{w.A.ServiceId}/status", $"/admin/services/{w.A.ServiceId}/rollback",
            $"/admin/keys/{w.A.KeyId}", $"/admin/keys/{w.A.KeyId}/revoke", $"/admin/keys/{w.A.KeyId}/rotate", $"/admin/calls/{w.TrackA}",
            $"/admin/reconciliation/accounts/{w.A.AccountId}", "/admin/reports/summary", "/admin/reports/top", "/admin/" + Pick(Traversal), "/metrics",
        ];

        private string[] BadIdempotencyKey() =>
            ["", " ", "has space", new string('i', 129), "a/b", "' OR 1=1 --", "%FF", "key\tkey", "x;y", "{}", "\\u00e4"];

        private string HostileId() => random.Next(4) switch
        {
            0 => Uri.EscapeDataString(Pick(Sql)),
            1 => Pick(Traversal),
            2 => Pick(BadEscapes) + "x",
            _ => Uri.EscapeDataString(HostileIdRaw()),
        };

        // No dot segments: the client resolves those, and /v1/keys/{A}/secrets/.. would become a legitimate DELETE of A's key.
        private string UnresolvableId() => random.Next(3) switch
        {
            0 => Uri.EscapeDataString(Pick(Sql)),
            1 => Pick(BadEscapes) + "x",
            _ => Uri.EscapeDataString(HostileIdRaw()),
        };

        private string HostileIdRaw() => Pick([.. Sql, "UPPER", "a", "-lead", new string('a', 64), "a\u0000b", "a b", "ünïcode", "a\nb", "x".PadRight(300, 'y')]);

        private string HostileTrackId() => Pick([Uri.EscapeDataString(Pick(Sql)), Pick(Traversal), Pick(BadEscapes), new string('t', 65), "short", new string('9', 2000), w.TrackA + "'--", "%2A"]);

        private string HostilePath() => random.Next(3) switch
        {
            0 => Pick(Traversal) + "/" + Pick(Traversal) + "/_control",
            1 => "verify" + Pick(BadEscapes),
            _ => Uri.EscapeDataString(Pick(Sql)),
        };

        private string HostileQuery() => $"number={Escaped()}&{Pick(BadEscapes)}={Pick(BadEscapes)}&a=1&a=2&{Uri.EscapeDataString(Pick(Sql))}=1";

        private string Escaped() => random.Next(3) switch
        {
            0 => Uri.EscapeDataString(Pick(Sql)),
            1 => Pick(BadEscapes),
            _ => Uri.EscapeDataString(Pick("2020-13-45", "yesterday", "9999-12-31T23:59:59Z", "0001-01-01", "-1", "1e400", new string('q', 3000))),
        };

        private string HostileNumber() => Pick("-1", "0", "2147483648", "-2147483649", "1e9", "NaN", "abc", "%FF", "100001", "99999999999999999999", "");

        private byte[] MalformedBody() => random.Next(6) switch
        {
            0 => Json(Pick(BrokenJson)),
            1 => Json(WrongTypes()),
            2 => InvalidUtf8(),
            3 => Json(new string('[', 5000) + new string(']', 5000)),
            4 => random.Next(8) == 0 ? HugeBody() : Json(Pick(BrokenJson)),
            _ => [0xEF, 0xBB, 0xBF, .. Encoding.UTF8.GetBytes(Pick(BrokenJson))],
        };

        // Every known field of every request type with a value of the wrong type: binding must fail before any handler runs.
        private string WrongTypes()
        {
            string[] fields = ["id", "name", "providerId", "upstreamBaseUrl", "pricePerCall", "currency", "timeoutMs", "status", "services", "expiresAt", "limits",
                "amount", "reason", "overlapSeconds", "weights", "pins", "baseUrl", "url", "events", "thresholds", "creditLimit"];
            return "{" + string.Join(",", fields.Select(f => $"\"{f}\":{Pick(WrongValues)}")) + "}";
        }

        private byte[] InvalidUtf8() =>
            [.. Encoding.UTF8.GetBytes("{\"name\":\""), .. Pick<byte[]>([0xFF, 0xFE], [0xC3, 0x28], [0xED, 0xA0, 0x80], [0xC0, 0xAF], [0x80], [0xF8, 0x88, 0x80, 0x80, 0x80]),
                .. Encoding.UTF8.GetBytes("\",\"id\":\"x\",\"amount\":\""), 0xFF, .. Encoding.UTF8.GetBytes("\"}")];

        private byte[] HugeBody()
        {
            var size = MaxBodyBytes + 1 + random.Next(64 * 1024);
            var body = new byte[size];
            Array.Fill(body, (byte)'a');
            "{\"name\":\""u8.CopyTo(body);
            body[^2] = (byte)'"';
            body[^1] = (byte)'}';
            return body;
        }

        private byte[]? MaybeBody() => random.Next(3) == 0 ? null : MaybeJson();

        private byte[]? MaybeJson() => random.Next(4) switch
        {
            0 => null,
            1 => MalformedBody(),
            2 => Json($"{{\"name\":{JsonString(Pick(Sql))},\"id\":{JsonString(Pick(Sql))},\"services\":[{JsonString(Pick(Sql))}]}}"),
            _ => Json(Pick(BrokenJson)),
        };

        // A well-formed service body with SQL in every field: only ever sent without valid credentials.
        private byte[]? MaybeServiceJson() => random.Next(2) == 0
            ? MaybeJson()
            : Json($"{{\"id\":{JsonString(Pick(Sql))},\"name\":{JsonString(Pick(Sql))},\"providerId\":{JsonString(Pick(Sql))},\"upstreamBaseUrl\":{JsonString(Pick(Sql))},\"pricePerCall\":1,\"currency\":{JsonString(Pick(Sql))},\"amount\":100,\"reason\":{JsonString(Pick(Sql))}}}");

        private byte[] Fields(bool form, params (string Name, string Value)[] fields) => form
            ? Encoding.UTF8.GetBytes(string.Join("&", fields.Select(f => $"{Uri.EscapeDataString(f.Name)}={(random.Next(6) == 0 ? Pick(BadEscapes) : Uri.EscapeDataString(f.Value))}")))
            : Json("{" + string.Join(",", fields.Select(f => $"{JsonString(f.Name)}:{JsonString(f.Value)}")) + "}");

        private static byte[] Json(string text) => Encoding.UTF8.GetBytes(text);

        private static string JsonString(string value) => JsonSerializer.Serialize(value);

        private T Pick<T>(params T[] choices) => choices[random.Next(choices.Length)];
    }
}
