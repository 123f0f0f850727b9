using System.Diagnostics;
using System.Net;
using System.Text.Json;
using Marketplace.Grains;
using Marketplace.Silo.Database;
using Marketplace.Silo.Hosting;
using Marketplace.Silo.Tests.Infrastructure;
using Microsoft.Extensions.DependencyInjection;
using Npgsql;

namespace Marketplace.Silo.Tests.Metering;

/// <summary>TrackIds end to end, the call log (periodic and strict), looking calls up, and reconciling the log with the grains.</summary>
[Collection(PostgresCollection.Name)]
public sealed class CallLogHttpTests(MeteringFixture fixture) : IClassFixture<MeteringFixture>
{
    private const string Verify = "/verify?number=%2B4930123456";

    private MarketplaceNode M => fixture.Periodic;

    [Fact]
    public async Task TrackId_WellFormedFromCaller_ReturnedSentUpstreamAndStored()
    {
        var consumer = await M.Api.CreateConsumerAsync(balance: 100, price: 7);
        var trackId = "meter-" + Guid.NewGuid().ToString("N");

        using var response = await M.CallAsync(consumer, Verify, trackId);
        var answered = Stopwatch.StartNew();
        var rows = await M.WaitForCallAsync(trackId);
        var stored = answered.Elapsed;
        var stats = await fixture.StatsAsync();
        TestContext.Current.TestOutputHelper?.WriteLine($"periodic call-log row visible {stored.TotalMilliseconds:F0} ms after the answer");

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal(trackId, response.Headers.GetValues("X-Track-Id").Single());
        Assert.Equal(trackId, stats.GetProperty("lastTrackId").GetString());
        var row = Assert.Single(rows.EnumerateArray());
        Assert.Equal(trackId, row.GetProperty("trackId").GetString());
        Assert.Equal(consumer.AccountId, row.GetProperty("accountId").GetString());
        Assert.Equal(consumer.KeyId, row.GetProperty("keyId").GetString());
        Assert.Equal(consumer.ServiceId, row.GetProperty("serviceId").GetString());
        Assert.Equal("v1", row.GetProperty("version").GetString());
        Assert.Equal("succeeded", row.GetProperty("outcome").GetString());
        Assert.Equal(JsonValueKind.Null, row.GetProperty("rejection").ValueKind);
        Assert.Equal(200, row.GetProperty("status").GetInt32());
        Assert.Equal(7, row.GetProperty("price").GetInt64());
        Assert.Equal(7, row.GetProperty("charged").GetInt64());
        Assert.Equal("EUR", row.GetProperty("currency").GetString());
        Assert.True(row.GetProperty("upstreamMs").GetDouble() >= 0);
        Assert.True(row.GetProperty("totalMs").GetDouble() >= row.GetProperty("upstreamMs").GetDouble());
    }

    [Theory]
    [InlineData("abc")]
    [InlineData("has spaces in it")]
    public async Task TrackId_Malformed_ReplacedByGeneratedOneThatIsReturnedSentAndStored(string malformed)
    {
        var consumer = await M.Api.CreateConsumerAsync(balance: 100, price: 7);

        using var response = await M.CallAsync(consumer, Verify, malformed);
        var returned = response.Headers.GetValues("X-Track-Id").Single();
        var stats = await fixture.StatsAsync();
        var rows = await M.WaitForCallAsync(returned);

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.NotEqual(malformed, returned);
        Assert.Matches("^[A-Za-z0-9._-]{8,64}$", returned);
        Assert.Equal(returned, stats.GetProperty("lastTrackId").GetString());
        Assert.Equal(consumer.ServiceId, Assert.Single(rows.EnumerateArray()).GetProperty("serviceId").GetString());
    }

    [Theory]
    [InlineData("unknown-key", HttpStatusCode.Unauthorized, "invalid-api-key")]
    [InlineData("no-key", HttpStatusCode.Unauthorized, "invalid-api-key")]
    [InlineData("unknown-service", HttpStatusCode.NotFound, "unknown-service")]
    public async Task TrackId_OnErrorAnswers_IsReturned(string error, HttpStatusCode status, string slug)
    {
        var consumer = await M.Api.CreateConsumerAsync(balance: 100);
        var caller = error switch
        {
            "unknown-key" => consumer with { ApiKey = "mk_nosuchkey000." + new string('A', 43) },
            "no-key" => consumer with { ApiKey = string.Empty },
            _ => consumer with { ServiceId = "no-such-service" },
        };
        var trackId = "meter-" + Guid.NewGuid().ToString("N");

        using var withOwn = await M.CallAsync(caller, Verify, trackId);
        using var withoutOwn = await M.CallAsync(caller, Verify);

        await Problem.AssertAsync(withOwn, status, slug);
        await Problem.AssertAsync(withoutOwn, status, slug);
        Assert.Equal(trackId, withOwn.Headers.GetValues("X-Track-Id").Single());
        Assert.Matches("^[A-Za-z0-9._-]{8,64}$", withoutOwn.Headers.GetValues("X-Track-Id").Single());
    }

    [Fact]
    public async Task CallLog_UnknownKey_StoredAsRejectedWithoutCharge()
    {
        var consumer = await M.Api.CreateConsumerAsync(balance: 100);
        var forged = consumer with { ApiKey = $"mk_{consumer.KeyId}.{new string('A', 43)}" };
        var trackId = "meter-" + Guid.NewGuid().ToString("N");

        using var response = await M.CallAsync(forged, Verify, trackId);
        var row = Assert.Single((await M.WaitForCallAsync(trackId)).EnumerateArray());

        Assert.Equal(HttpStatusCode.Unauthorized, response.StatusCode);
        Assert.Equal("rejected", row.GetProperty("outcome").GetString());
        Assert.Equal("InvalidCredentials", row.GetProperty("rejection").GetString());
        Assert.Equal(consumer.KeyId, row.GetProperty("keyId").GetString());
        Assert.Equal(0, row.GetProperty("charged").GetInt64());
    }

    [Fact]
    public async Task ConsumerCallLookup_OwnOtherAccountsOrNoKey_OnlyOwnCallsAreShown()
    {
        var owner = await M.Api.CreateConsumerAsync(balance: 100, price: 5);
        var other = await M.Api.CreateConsumerAsync(balance: 100, price: 5);
        var trackId = "meter-" + Guid.NewGuid().ToString("N");
        using (var call = await M.CallAsync(owner, Verify, trackId))
        {
            Assert.Equal(HttpStatusCode.OK, call.StatusCode);
        }

        await M.WaitForCallAsync(trackId);

        using var own = await LookUpAsync(owner.ApiKey, trackId);
        using var foreign = await LookUpAsync(other.ApiKey, trackId);
        using var anonymous = await LookUpAsync(null, trackId);
        using var unknown = await LookUpAsync(owner.ApiKey, "meter-" + Guid.NewGuid().ToString("N"));

        Assert.Equal(HttpStatusCode.OK, own.StatusCode);
        var row = Assert.Single(JsonDocument.Parse(await own.Content.ReadAsStringAsync()).RootElement.EnumerateArray());
        Assert.Equal(owner.AccountId, row.GetProperty("accountId").GetString());
        Assert.Equal(5, row.GetProperty("charged").GetInt64());
        await Problem.AssertAsync(foreign, HttpStatusCode.NotFound, "not-found");
        await Problem.AssertAsync(anonymous, HttpStatusCode.Unauthorized, "invalid-api-key");
        await Problem.AssertAsync(unknown, HttpStatusCode.NotFound, "not-found");
    }

    [Fact]
    public async Task Reconciliation_AfterConcurrentLoadPastDailyQuota_LogAndGrainsAgree()
    {
        const long price = 3;
        const int quota = 120;
        const int calls = 300;
        var consumer = await M.Api.CreateConsumerAsync(balance: 1_000_000, price: price, limits: new { quota = new { perDay = quota } });
        var trackIds = Enumerable.Range(0, calls).Select(i => $"load-{i:D3}-{Guid.NewGuid():N}").ToArray();

        var statuses = await Task.WhenAll(trackIds.Select(async trackId =>
        {
            using var response = await M.CallAsync(consumer, Verify, trackId);
            return response.StatusCode;
        }));

        var settled = Stopwatch.StartNew();
        var (reconciliation, account) = await WaitForReconciliationAsync(consumer.AccountId, TimeSpan.FromSeconds(15));
        TestContext.Current.TestOutputHelper?.WriteLine($"consistent and reserved 0 after {settled.ElapsedMilliseconds} ms: {reconciliation}");
        var rejectedTrackId = trackIds[Array.FindIndex(statuses, s => s == HttpStatusCode.Forbidden)];
        var rejected = Assert.Single((await M.WaitForCallAsync(rejectedTrackId)).EnumerateArray());

        Assert.Equal(quota, statuses.Count(s => s == HttpStatusCode.OK));
        Assert.Equal(calls - quota, statuses.Count(s => s == HttpStatusCode.Forbidden));
        Assert.True(reconciliation.GetProperty("consistent").GetBoolean(), reconciliation.ToString());
        Assert.Equal(0, account.GetProperty("reserved").GetInt64());
        Assert.Equal(quota, reconciliation.GetProperty("logCalls").GetInt64());
        Assert.Equal(quota, reconciliation.GetProperty("grainCalls").GetInt64());
        Assert.Equal(quota * price, reconciliation.GetProperty("logCharged").GetInt64());
        Assert.Equal(quota * price, reconciliation.GetProperty("grainCharged").GetInt64());
        Assert.Equal(1_000_000 - (quota * price), account.GetProperty("balance").GetInt64());
        Assert.Equal(1_000_000, reconciliation.GetProperty("credits").GetInt64());
        Assert.Equal(1_000_000 - (quota * price), reconciliation.GetProperty("expectedBalance").GetInt64());
        Assert.Equal(quota, reconciliation.GetProperty("rollupCalls").GetInt64());
        Assert.Equal(quota * price, reconciliation.GetProperty("rollupCharged").GetInt64());
        var key = Assert.Single(reconciliation.GetProperty("keys").EnumerateArray());
        Assert.Equal(consumer.KeyId, key.GetProperty("keyId").GetString());
        Assert.Equal(quota, key.GetProperty("logCalls").GetInt64());
        Assert.Equal(quota, key.GetProperty("grainCalls").GetInt64());
        Assert.Equal(quota, key.GetProperty("grainChargedCalls").GetInt64());
        var day = Assert.Single(key.GetProperty("windows").EnumerateArray());
        Assert.Equal(("day", quota, quota, true), (day.GetProperty("window").GetString(), day.GetProperty("logCalls").GetInt64(),
            day.GetProperty("grainCalls").GetInt64(), day.GetProperty("consistent").GetBoolean()));
        Assert.Equal("rejected", rejected.GetProperty("outcome").GetString());
        Assert.Equal("QuotaExhausted", rejected.GetProperty("rejection").GetString());
        Assert.Equal(consumer.KeyId, rejected.GetProperty("keyId").GetString());
        Assert.Equal(0, rejected.GetProperty("charged").GetInt64());
    }

    [Fact]
    public async Task Reconciliation_JournalDisagreesWithGrains_ReportsEveryDifference()
    {
        const long price = 5;
        var consumer = await M.Api.CreateConsumerAsync(balance: 1_000, price: price, limits: new { quota = new { perDay = 100 } });
        for (var i = 0; i < 4; i++)
        {
            using var response = await M.CallAsync(consumer, Verify, $"recon-{i}-{Guid.NewGuid():N}");
            Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        }

        var clean = await M.Api.CreateConsumerAsync(balance: 1_000, price: price);
        using (var response = await M.CallAsync(clean, Verify, $"recon-clean-{Guid.NewGuid():N}"))
        {
            Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        }

        var (agreed, _) = await WaitForReconciliationAsync(consumer.AccountId, TimeSpan.FromSeconds(15));
        Assert.True(agreed.GetProperty("consistent").GetBoolean(), agreed.ToString());
        var (cleanAgreed, _) = await WaitForReconciliationAsync(clean.AccountId, TimeSpan.FromSeconds(15));
        Assert.True(cleanAgreed.GetProperty("consistent").GetBoolean(), cleanAgreed.ToString());

        // What a lost settlement, a double-applied one or a rollup written apart from its rows would look like.
        await using (var database = M.Host.App.Services.GetRequiredService<NpgsqlDataSource>().CreateBatch())
        {
            foreach (var (sql, id) in new[]
            {
                ("UPDATE marketplace_account_totals SET charged = charged + 7 WHERE account_id = $1", consumer.AccountId),
                ("UPDATE marketplace_key_totals SET calls = calls + 2, failed = failed + 2, day_calls = day_calls + 2 WHERE key_id = $1", consumer.KeyId),
                ("UPDATE marketplace_usage_rollup SET calls = calls + 1 WHERE granularity = 'day' AND account_id = $1", consumer.AccountId),
            })
            {
                var command = database.CreateBatchCommand();
                command.CommandText = sql;
                command.Parameters.Add(new NpgsqlParameter { Value = id });
                database.BatchCommands.Add(command);
            }

            await database.ExecuteNonQueryAsync();
        }

        var reconciliation = JsonDocument.Parse(await M.Admin.GetStringAsync($"/admin/reconciliation/accounts/{consumer.AccountId}")).RootElement;
        Assert.False(reconciliation.GetProperty("consistent").GetBoolean());
        Assert.Equal(0, reconciliation.GetProperty("callsDifference").GetInt64());
        Assert.Equal(7, reconciliation.GetProperty("chargedDifference").GetInt64());
        Assert.Equal(-7, reconciliation.GetProperty("balanceDifference").GetInt64());
        Assert.Equal(1_000 - (4 * price) - 7, reconciliation.GetProperty("expectedBalance").GetInt64());
        Assert.Equal(1_000 - (4 * price), reconciliation.GetProperty("balance").GetInt64());
        Assert.Equal(-1, reconciliation.GetProperty("rollupCallsDifference").GetInt64());
        Assert.Equal(7, reconciliation.GetProperty("rollupChargedDifference").GetInt64());
        var key = Assert.Single(reconciliation.GetProperty("keys").EnumerateArray());
        Assert.False(key.GetProperty("consistent").GetBoolean());
        Assert.Equal((6L, 4L, 2L, 4L, 4L, 0L), (key.GetProperty("logCalls").GetInt64(), key.GetProperty("grainCalls").GetInt64(),
            key.GetProperty("logFailed").GetInt64(), key.GetProperty("logChargedCalls").GetInt64(), key.GetProperty("grainChargedCalls").GetInt64(),
            key.GetProperty("grainFailed").GetInt64()));
        var day = Assert.Single(key.GetProperty("windows").EnumerateArray());
        Assert.Equal((6L, 4L, false), (day.GetProperty("logCalls").GetInt64(), day.GetProperty("grainCalls").GetInt64(), day.GetProperty("consistent").GetBoolean()));

        // Every account at once: the one that differs is reported with its differences, the one that agrees is not.
        var report = JsonDocument.Parse(await M.Admin.GetStringAsync("/admin/reconciliation")).RootElement;
        var differing = report.GetProperty("differences").EnumerateArray().ToDictionary(d => d.GetProperty("accountId").GetString()!);
        Assert.False(report.GetProperty("consistent").GetBoolean());
        Assert.True(report.GetProperty("accounts").GetInt32() >= 2, report.ToString());
        Assert.Equal(differing.Count, report.GetProperty("inconsistent").GetInt32());
        Assert.Equal(7, differing[consumer.AccountId].GetProperty("chargedDifference").GetInt64());
        Assert.DoesNotContain(clean.AccountId, differing.Keys);

        // The operator's command reports the same differences and exits 1.
        var keyFile = Path.GetTempFileName();
        await File.WriteAllTextAsync(keyFile, TestHosts.AdminKey);
        var (output, error) = (new StringWriter(), new StringWriter());
        var exitCode = await ReconcileCommand.RunAsync(["--url", M.Host.BaseAddress.ToString(), "--admin-key-file", keyFile], output, error);
        File.Delete(keyFile);
        var printed = output.ToString();
        Assert.True(exitCode == 1, $"exit {exitCode}: {printed}{error}");
        Assert.Contains($"account {consumer.AccountId}", printed, StringComparison.Ordinal);
        Assert.Contains($"  charged: journal {(4 * price) + 7}, grains {4 * price}, difference 7", printed, StringComparison.Ordinal);
        Assert.Contains($"  key {consumer.KeyId} day quota: journal 6, grains 4, difference 2", printed, StringComparison.Ordinal);
        Assert.Contains("  calls: journal 4, rollups 5, difference -1", printed, StringComparison.Ordinal);
        Assert.DoesNotContain(clean.AccountId, printed, StringComparison.Ordinal);
        Assert.DoesNotContain(TestHosts.AdminKey, printed + error, StringComparison.Ordinal);
    }

    [Fact]
    public async Task TrackId_ReusedByTwoCalls_BothLoggedAndBothCharged()
    {
        const long price = 7;
        var consumer = await M.Api.CreateConsumerAsync(balance: 100, price: price);
        var trackId = "meter-reused-" + Guid.NewGuid().ToString("N");

        // At once, so that their start times are as close as they get; each call still gets its own id and row.
        var responses = await Task.WhenAll(M.CallAsync(consumer, Verify, trackId), M.CallAsync(consumer, Verify, trackId));
        var callIds = responses.Select(r => Guid.Parse(r.Headers.GetValues("X-Call-Id").Single())).ToArray();
        var rows = await WaitForRowsAsync(trackId, 2);
        var (reconciliation, account) = await WaitForReconciliationAsync(consumer.AccountId, TimeSpan.FromSeconds(15));
        using var byId = await M.Admin.GetAsync($"/admin/calls/id/{callIds[0]}");
        var found = JsonDocument.Parse(await byId.Content.ReadAsStringAsync()).RootElement;
        foreach (var response in responses)
        {
            response.Dispose();
        }

        Assert.All(responses, r => Assert.Equal(HttpStatusCode.OK, r.StatusCode));
        Assert.All(responses, r => Assert.Equal(trackId, r.Headers.GetValues("X-Track-Id").Single()));
        Assert.NotEqual(callIds[0], callIds[1]);
        Assert.All(callIds, id => Assert.Equal(7, id.Version));
        Assert.Equal(callIds.Order(), rows.Select(r => r.GetProperty("callId").GetGuid()).Order());
        Assert.All(rows, row => Assert.Equal(price, row.GetProperty("charged").GetInt64()));
        Assert.True(reconciliation.GetProperty("consistent").GetBoolean(), reconciliation.ToString());
        Assert.Equal(2, reconciliation.GetProperty("logCalls").GetInt64());
        Assert.Equal(2 * price, reconciliation.GetProperty("logCharged").GetInt64());
        Assert.Equal(100 - (2 * price), account.GetProperty("balance").GetInt64());
        Assert.Equal(HttpStatusCode.OK, byId.StatusCode);
        Assert.Equal(callIds[0], found.GetProperty("callId").GetGuid());
        Assert.Equal(trackId, found.GetProperty("trackId").GetString());
    }

    [Theory]
    [InlineData("not-a-guid")]
    [InlineData("4f9a1c2e-8d6b-4c1a-9e2f-0a1b2c3d4e5f")] // a version 4 id: never a call id
    [InlineData("0190a6b2-7c3d-7e4f-8a1b-2c3d4e5f6a7b")] // a well-formed UUIDv7 nobody was given
    public async Task CallById_UnknownOrMalformed_Is404(string callId)
    {
        using var response = await M.Admin.GetAsync($"/admin/calls/id/{callId}");

        await Problem.AssertAsync(response, HttpStatusCode.NotFound, "not-found");
    }

    [Fact]
    public async Task StrictDurability_CallsArrivingDuringACommit_ShareTheNextCommit()
    {
        var strict = await fixture.StrictAsync();
        var writer = strict.Host.App.Services.GetRequiredService<CallLogWriter>();
        await using var database = strict.Host.App.Services.GetRequiredService<NpgsqlDataSource>().CreateConnection();
        await database.OpenAsync();
        var at = DateTimeOffset.UtcNow;
        CallRecord Record(int i) => new(Guid.CreateVersion7(at), $"group-{i}-{Guid.NewGuid():N}", at, "acct-group", "key-group", "svc-group", "v1",
            CallOutcome.Succeeded, null, 200, 1, 2, 3, 3, "EUR", null);

        // Hold the first batch's commit: the writer's batch transaction starts by updating its row in this table.
        await using var hold = await database.BeginTransactionAsync();
        await using (var lockSenders = new NpgsqlCommand("LOCK TABLE marketplace_journal_senders IN EXCLUSIVE MODE", database, hold))
        {
            await lockSenders.ExecuteNonQueryAsync();
        }

        var batches = writer.Batches;
        var first = writer.WriteAsync(Record(0), CancellationToken.None).AsTask();
        await WaitUntilAsync(() => writer.QueueLength == 0, "the writer never took the first record");
        var others = Enumerable.Range(1, 40).Select(i => writer.WriteAsync(Record(i), CancellationToken.None).AsTask()).ToArray();
        await WaitUntilAsync(() => writer.QueueLength == 40, "the 40 records were not all queued");
        Assert.False(first.IsCompleted, "a strict write completed before its commit");
        await hold.RollbackAsync();
        await Task.WhenAll(others.Append(first));

        // One commit for the first record, one shared by the 40 that arrived while it was in flight.
        Assert.Equal(batches + 2, writer.Batches);
    }

    private static async Task WaitUntilAsync(Func<bool> condition, string failure)
    {
        var until = DateTimeOffset.UtcNow + TimeSpan.FromSeconds(10);
        while (!condition())
        {
            Assert.True(DateTimeOffset.UtcNow < until, failure);
            await Task.Delay(5);
        }
    }

    private async Task<JsonElement[]> WaitForRowsAsync(string trackId, int count)
    {
        var until = DateTimeOffset.UtcNow + TimeSpan.FromSeconds(10);
        while (true)
        {
            var rows = (await M.WaitForCallAsync(trackId)).EnumerateArray().ToArray();
            if (rows.Length >= count)
            {
                return rows;
            }

            Assert.True(DateTimeOffset.UtcNow < until, $"only {rows.Length} of {count} rows of {trackId} reached the call log");
            await Task.Delay(20);
        }
    }

    [Fact]
    public async Task StrictDurability_CallAnswered_RowFoundOnFirstLookup()
    {
        var strict = await fixture.StrictAsync();
        var consumer = await strict.Api.CreateConsumerAsync(balance: 100, price: 5);

        for (var i = 0; i < 5; i++)
        {
            var trackId = $"strict-{i}-{Guid.NewGuid():N}";
            using var response = await strict.CallAsync(consumer, Verify, trackId);

            // No polling: with strict durability the answer is sent only once the row is committed.
            var rows = await strict.AdminCallsAsync(trackId);

            Assert.Equal(HttpStatusCode.OK, response.StatusCode);
            Assert.True(rows.HasValue, $"call {i}: the row of {trackId} was not in the call log when the call was answered");
            var row = Assert.Single(rows.Value.EnumerateArray());
            Assert.Equal("succeeded", row.GetProperty("outcome").GetString());
            Assert.Equal(5, row.GetProperty("charged").GetInt64());
        }
    }

    private async Task<HttpResponseMessage> LookUpAsync(string? apiKey, string trackId)
    {
        using var request = new HttpRequestMessage(HttpMethod.Get, $"/v1/calls/{trackId}");
        if (apiKey is not null)
        {
            request.Headers.TryAddWithoutValidation("X-Api-Key", apiKey);
        }

        return await M.Anonymous.SendAsync(request);
    }

    // Both sides are written behind (the log within its flush interval, the account's counters by settlement batches, leases
    // handed back after a second idle): read until they agree with nothing outstanding, or the deadline passes.
    private async Task<(JsonElement Reconciliation, JsonElement Account)> WaitForReconciliationAsync(string accountId, TimeSpan deadline)
    {
        var until = DateTimeOffset.UtcNow + deadline;
        while (true)
        {
            var account = JsonDocument.Parse(await M.Admin.GetStringAsync($"/admin/accounts/{accountId}")).RootElement.Clone();
            var reconciliation = JsonDocument.Parse(await M.Admin.GetStringAsync($"/admin/reconciliation/accounts/{accountId}")).RootElement.Clone();
            var done = account.GetProperty("reserved").GetInt64() == 0
                && reconciliation.GetProperty("pendingOnThisNode").GetInt32() == 0
                && reconciliation.GetProperty("consistent").GetBoolean();
            if (done || DateTimeOffset.UtcNow >= until)
            {
                return (reconciliation, account);
            }

            await Task.Delay(20);
        }
    }
}
