using System.Net;
using System.Net.Http.Json;
using System.Text.Json;
using Marketplace.Grains;
using Marketplace.Silo.Database;
using Marketplace.Silo.Tests.Infrastructure;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Options;
using Npgsql;

namespace Marketplace.Silo.Tests.Metering;

/// <summary>Idempotency-Key over real HTTP: a retry is answered from the first call, which ran upstream and was charged once.</summary>
[Collection(PostgresCollection.Name)]
public sealed class IdempotencyHttpTests(MeteringFixture fixture) : IClassFixture<MeteringFixture>
{
    private const string Verify = "/verify?number=%2B4930123456";

    private MarketplaceNode M => fixture.Periodic;

    [Fact]
    public async Task IdempotencyKey_ThreeSequentialCalls_RunOnceChargeOnceReplayTheRest()
    {
        var consumer = await M.Api.CreateConsumerAsync(balance: 100, price: 7);
        var key = NewKey();
        var before = await PhoneCallsAsync();

        using var first = await M.CallAsync(consumer, Verify, idempotencyKey: key);
        using var second = await M.CallAsync(consumer, Verify, idempotencyKey: key);
        using var third = await M.CallAsync(consumer, Verify, idempotencyKey: key);
        var upstreamCalls = await PhoneCallsAsync() - before;
        var account = await SettledAccountAsync(consumer);

        Assert.All([first, second, third], r => Assert.Equal(HttpStatusCode.OK, r.StatusCode));
        var body = await first.Content.ReadAsByteArrayAsync();
        Assert.Equal(body, await second.Content.ReadAsByteArrayAsync());
        Assert.Equal(body, await third.Content.ReadAsByteArrayAsync());
        Assert.False(first.Headers.Contains("Idempotent-Replayed"));
        Assert.Equal("7", first.Headers.GetValues("X-Charged").Single());
        Assert.All([second, third], r =>
        {
            Assert.Equal("true", r.Headers.GetValues("Idempotent-Replayed").Single());
            Assert.Equal("0", r.Headers.GetValues("X-Charged").Single());
        });
        Assert.Equal(1, upstreamCalls);
        Assert.Equal(7, account.GetProperty("totalCharged").GetInt64());
        Assert.Equal(93, account.GetProperty("balance").GetInt64());
    }

    [Fact]
    public async Task IdempotencyKey_TwentyConcurrentCalls_OneUpstreamCallAndOneCharge()
    {
        var consumer = await M.Api.CreateConsumerAsync(balance: 1_000, price: 5);
        var key = NewKey();
        var before = await PhoneCallsAsync();

        var responses = await Task.WhenAll(Enumerable.Range(0, 20).Select(_ => M.CallAsync(consumer, Verify, idempotencyKey: key)));
        var upstreamCalls = await PhoneCallsAsync() - before;
        var account = await SettledAccountAsync(consumer);

        try
        {
            var ran = Assert.Single(responses, r => r.StatusCode == HttpStatusCode.OK && !r.Headers.Contains("Idempotent-Replayed"));
            Assert.Equal("5", ran.Headers.GetValues("X-Charged").Single());
            var body = await ran.Content.ReadAsByteArrayAsync();
            foreach (var other in responses.Where(r => r != ran))
            {
                if (other.StatusCode == HttpStatusCode.OK)
                {
                    Assert.Equal("true", other.Headers.GetValues("Idempotent-Replayed").Single());
                    Assert.Equal("0", other.Headers.GetValues("X-Charged").Single());
                    Assert.Equal(body, await other.Content.ReadAsByteArrayAsync());
                }
                else
                {
                    await Problem.AssertAsync(other, HttpStatusCode.Conflict, "idempotency-conflict");
                    Assert.True(other.Headers.RetryAfter?.Delta >= TimeSpan.FromSeconds(1), "a call still running answers with Retry-After");
                }
            }

            Assert.Equal(1, upstreamCalls);
            Assert.Equal(5, account.GetProperty("totalCharged").GetInt64());
            Assert.Equal(995, account.GetProperty("balance").GetInt64());
        }
        finally
        {
            foreach (var response in responses)
            {
                response.Dispose();
            }
        }
    }

    [Fact]
    public async Task IdempotencyKey_SameKeyDifferentQuery_Is409AndNotCharged()
    {
        var consumer = await M.Api.CreateConsumerAsync(balance: 100, price: 7);
        var key = NewKey();
        var before = await PhoneCallsAsync();

        using var first = await M.CallAsync(consumer, Verify, idempotencyKey: key);
        using var different = await M.CallAsync(consumer, "/verify?number=%2B4930999999", idempotencyKey: key);
        var upstreamCalls = await PhoneCallsAsync() - before;
        var account = await SettledAccountAsync(consumer);

        Assert.Equal(HttpStatusCode.OK, first.StatusCode);
        await Problem.AssertAsync(different, HttpStatusCode.Conflict, "idempotency-conflict");
        Assert.False(different.Headers.Contains("Idempotent-Replayed"));
        Assert.Equal(1, upstreamCalls);
        Assert.Equal(7, account.GetProperty("totalCharged").GetInt64());
    }

    [Fact]
    public async Task IdempotencyKey_SameValueFromAnotherApiKey_RunsAndChargesSeparately()
    {
        var consumer = await M.Api.CreateConsumerAsync(balance: 100, price: 7);
        var secondKey = await M.Api.PostOk($"/admin/accounts/{consumer.AccountId}/keys", new { name = "second", services = new[] { consumer.ServiceId } });
        var sibling = consumer with { ApiKey = secondKey.GetProperty("apiKey").GetString()! };
        var key = NewKey();
        var before = await PhoneCallsAsync();

        using var first = await M.CallAsync(consumer, Verify, idempotencyKey: key);
        using var other = await M.CallAsync(sibling, Verify, idempotencyKey: key);
        var upstreamCalls = await PhoneCallsAsync() - before;
        var account = await SettledAccountAsync(consumer);

        Assert.All([first, other], r =>
        {
            Assert.Equal(HttpStatusCode.OK, r.StatusCode);
            Assert.False(r.Headers.Contains("Idempotent-Replayed"));
            Assert.Equal("7", r.Headers.GetValues("X-Charged").Single());
        });
        Assert.Equal(2, upstreamCalls);
        Assert.Equal(14, account.GetProperty("totalCharged").GetInt64());
    }

    [Fact]
    public async Task IdempotencyKey_RetryAfterUnchargedUpstreamFailure_RunsAgainAndChargesOnce()
    {
        var consumer = await M.Api.CreateConsumerAsync(balance: 100, price: 7, upstreamPath: "/ip");
        var key = NewKey();
        var before = await IpCallsAsync();

        HttpResponseMessage failed;
        using (var control = await fixture.Provider.PutAsJsonAsync("/_control/ip", new { mode = "fail" }))
        {
            control.EnsureSuccessStatusCode();
        }

        try
        {
            failed = await M.CallAsync(consumer, "/geo?ip=8.8.8.8", idempotencyKey: key);
        }
        finally
        {
            (await fixture.Provider.DeleteAsync("/_control")).Dispose();
        }

        using (failed)
        {
            using var retry = await M.CallAsync(consumer, "/geo?ip=8.8.8.8", idempotencyKey: key);
            using var replay = await M.CallAsync(consumer, "/geo?ip=8.8.8.8", idempotencyKey: key);
            var upstreamCalls = await IpCallsAsync() - before;
            var account = await SettledAccountAsync(consumer);

            await Problem.AssertAsync(failed, HttpStatusCode.BadGateway, "upstream-error");
            Assert.Equal("0", failed.Headers.GetValues("X-Charged").Single());
            Assert.Equal(HttpStatusCode.OK, retry.StatusCode);
            Assert.False(retry.Headers.Contains("Idempotent-Replayed"));
            Assert.Equal("7", retry.Headers.GetValues("X-Charged").Single());
            Assert.Equal(HttpStatusCode.OK, replay.StatusCode);
            Assert.Equal("true", replay.Headers.GetValues("Idempotent-Replayed").Single());
            Assert.Equal(2, upstreamCalls);
            Assert.Equal(7, account.GetProperty("totalCharged").GetInt64());
            Assert.Equal(93, account.GetProperty("balance").GetInt64());
        }
    }

    [Fact]
    public async Task IdempotencyKey_RetryAfterBalanceSpentByTheFirstCall_IsReplayed()
    {
        var consumer = await M.Api.CreateConsumerAsync(balance: 7, price: 7);
        var key = NewKey();

        using var first = await M.CallAsync(consumer, Verify, idempotencyKey: key);
        await SettledAccountAsync(consumer);
        using var retry = await M.CallAsync(consumer, Verify, idempotencyKey: key);
        var account = await SettledAccountAsync(consumer);

        // The retry of a call that was answered and paid for must get that answer, even though the balance is now spent.
        Assert.Equal(HttpStatusCode.OK, first.StatusCode);
        Assert.True(HttpStatusCode.OK == retry.StatusCode, $"the retry answered {(int)retry.StatusCode}: {await retry.Content.ReadAsStringAsync()}");
        Assert.Equal("true", retry.Headers.GetValues("Idempotent-Replayed").Single());
        Assert.Equal(0, account.GetProperty("balance").GetInt64());
    }

    [Fact]
    public async Task IdempotencyKey_RetriesUnderQuota_AreReplayedWithoutUsingTheQuota()
    {
        var consumer = await M.Api.CreateConsumerAsync(balance: 100, price: 7, limits: new { quota = new { perDay = 2 } });
        var key = NewKey();

        using var first = await M.CallAsync(consumer, Verify, idempotencyKey: key);
        using var retry = await M.CallAsync(consumer, Verify, idempotencyKey: key);
        using var secondRetry = await M.CallAsync(consumer, Verify, idempotencyKey: key);
        using var newCall = await M.CallAsync(consumer, Verify, idempotencyKey: NewKey());

        // A replay runs nothing upstream and charges nothing, so it must not use up the quota either.
        Assert.Equal(HttpStatusCode.OK, first.StatusCode);
        Assert.True(HttpStatusCode.OK == retry.StatusCode, $"the retry answered {(int)retry.StatusCode}: {await retry.Content.ReadAsStringAsync()}");
        Assert.True(HttpStatusCode.OK == secondRetry.StatusCode, $"the second retry answered {(int)secondRetry.StatusCode}: {await secondRetry.Content.ReadAsStringAsync()}");
        Assert.True(HttpStatusCode.OK == newCall.StatusCode, $"the second new call answered {(int)newCall.StatusCode}: {await newCall.Content.ReadAsStringAsync()}");
        Assert.False(newCall.Headers.Contains("Idempotent-Replayed"));
    }

    public static TheoryData<string> MalformedKeys => [new string('k', 200), new string('k', 129), "key with spaces", "key/with/slashes"];

    [Theory]
    [MemberData(nameof(MalformedKeys))]
    public async Task IdempotencyKey_Malformed_Is400AndNothingRuns(string malformed)
    {
        var consumer = await M.Api.CreateConsumerAsync(balance: 100, price: 7);
        var before = await PhoneCallsAsync();

        using var response = await M.CallAsync(consumer, Verify, idempotencyKey: malformed);
        var upstreamCalls = await PhoneCallsAsync() - before;

        await Problem.AssertAsync(response, HttpStatusCode.BadRequest, "bad-idempotency-key");
        Assert.Equal(0, upstreamCalls);
    }

    [Fact]
    public async Task IdempotencyKey_128CharactersOfEveryAllowedKind_IsAccepted()
    {
        var consumer = await M.Api.CreateConsumerAsync(balance: 100, price: 7);
        var key = ("Az09-_.:" + Guid.NewGuid().ToString("N")).PadRight(128, 'x');

        using var first = await M.CallAsync(consumer, Verify, idempotencyKey: key);
        using var second = await M.CallAsync(consumer, Verify, idempotencyKey: key);

        Assert.Equal(HttpStatusCode.OK, first.StatusCode);
        Assert.Equal("true", second.Headers.GetValues("Idempotent-Replayed").Single());
    }

    [Fact]
    public async Task IdempotencyRecords_KeptThroughTheWindow_DeletedOnceExpired()
    {
        var consumer = await M.Api.CreateConsumerAsync(balance: 100, price: 7);
        var (expired, live) = (NewKey(), NewKey());
        using (var first = await M.CallAsync(consumer, Verify, idempotencyKey: expired))
        using (var second = await M.CallAsync(consumer, Verify, idempotencyKey: live))
        {
            Assert.Equal(HttpStatusCode.OK, first.StatusCode);
            Assert.Equal(HttpStatusCode.OK, second.StatusCode);
        }

        var database = M.Host.App.Services.GetRequiredService<NpgsqlDataSource>();
        var purge = M.Host.App.Services.GetRequiredService<IdempotencyRecordsPurge>();
        var window = M.Host.App.Services.GetRequiredService<IOptions<IdempotencyOptions>>().Value.Window;

        // Within the window (and its margin) nothing is deleted, however old the records are otherwise.
        await AgeRecordAsync(database, expired, window + IdempotencyRecordsPurge.Margin - TimeSpan.FromMinutes(5));
        await purge.PurgeAsync(TestContext.Current.CancellationToken);
        Assert.Equal((1, 1), (await RecordsAsync(database, expired), await RecordsAsync(database, live)));

        // Past it, the expired record goes and the live one stays.
        await AgeRecordAsync(database, expired, window + IdempotencyRecordsPurge.Margin + TimeSpan.FromMinutes(5));
        var deleted = await purge.PurgeAsync(TestContext.Current.CancellationToken);

        Assert.True(deleted >= 1);
        Assert.Equal((0, 1), (await RecordsAsync(database, expired), await RecordsAsync(database, live)));
    }

    private static async Task AgeRecordAsync(NpgsqlDataSource database, string idempotencyKey, TimeSpan age)
    {
        await using var command = database.CreateCommand(
            "UPDATE orleans_grain_state SET modified_at = now() - $2 WHERE grain_type = $3 AND grain_id_extension LIKE '%' || $1");
        command.Parameters.AddWithValue(idempotencyKey);
        command.Parameters.AddWithValue(age);
        command.Parameters.AddWithValue(IdempotencyGrain.StateName);
        Assert.Equal(1, await command.ExecuteNonQueryAsync());
    }

    private static async Task<long> RecordsAsync(NpgsqlDataSource database, string idempotencyKey)
    {
        await using var command = database.CreateCommand(
            "SELECT count(*) FROM orleans_grain_state WHERE grain_type = $2 AND grain_id_extension LIKE '%' || $1");
        command.Parameters.AddWithValue(idempotencyKey);
        command.Parameters.AddWithValue(IdempotencyGrain.StateName);
        return (long)(await command.ExecuteScalarAsync())!;
    }

    [Fact]
    public async Task TopUpAndAdjustment_RepeatedWithTheirIdempotencyKeys_AppliedOnce_ReusedForAnotherChangeIs409()
    {
        var consumer = await M.Api.CreateConsumerAsync(balance: 100, price: 7);
        var (topUpKey, adjustmentKey) = (NewKey(), NewKey());

        async Task<HttpResponseMessage> PostAsync(string path, string key, long amount, string reason)
        {
            using var request = new HttpRequestMessage(HttpMethod.Post, $"/admin/accounts/{consumer.AccountId}/{path}")
            {
                Content = JsonContent.Create(new { amount, reason }),
            };
            request.Headers.Add("Idempotency-Key", key);
            return await M.Admin.SendAsync(request);
        }

        using var first = await PostAsync("top-ups", topUpKey, 50, "wire 1");
        using var repeat = await PostAsync("top-ups", topUpKey, 50, "wire 1");
        using var adjusted = await PostAsync("adjustments", adjustmentKey, -30, "refund reversed");
        using var adjustedAgain = await PostAsync("adjustments", adjustmentKey, -30, "refund reversed");
        using var reused = await PostAsync("top-ups", topUpKey, 60, "wire 2");
        using var reusedAsAdjustment = await PostAsync("adjustments", topUpKey, 50, "wire 1");
        using var malformed = await PostAsync("top-ups", "has space", 50, "wire 3");
        var account = await M.Admin.GetFromJsonAsync<JsonElement>($"/admin/accounts/{consumer.AccountId}");
        var ledger = await M.Admin.GetFromJsonAsync<JsonElement>($"/admin/accounts/{consumer.AccountId}/ledger");

        Assert.Equal(HttpStatusCode.OK, first.StatusCode);
        Assert.False(first.Headers.Contains("Idempotent-Replayed"));
        Assert.Equal(HttpStatusCode.OK, repeat.StatusCode);
        Assert.Equal("true", repeat.Headers.GetValues("Idempotent-Replayed").Single());
        Assert.Equal(150, (await repeat.Content.ReadFromJsonAsync<JsonElement>()).GetProperty("balance").GetInt64());
        Assert.Equal(HttpStatusCode.OK, adjusted.StatusCode);
        Assert.Equal("true", adjustedAgain.Headers.GetValues("Idempotent-Replayed").Single());
        await Problem.AssertAsync(reused, HttpStatusCode.Conflict, "idempotency-conflict");
        await Problem.AssertAsync(reusedAsAdjustment, HttpStatusCode.Conflict, "idempotency-conflict");
        await Problem.AssertAsync(malformed, HttpStatusCode.BadRequest, "bad-idempotency-key");
        Assert.Equal(120, account.GetProperty("balance").GetInt64());
        Assert.Equal(150, account.GetProperty("totalToppedUp").GetInt64());
        Assert.Equal([topUpKey, adjustmentKey], ledger.EnumerateArray().Select(e => e.GetProperty("operationId").GetString()).Where(id => id is [_, ..] && !id.StartsWith("op:", StringComparison.Ordinal)));
    }

    private static string NewKey() => "idem-" + Guid.NewGuid().ToString("N");

    private async Task<long> PhoneCallsAsync() => (await fixture.StatsAsync()).GetProperty("phone").GetInt64();

    private async Task<long> IpCallsAsync() => (await fixture.StatsAsync()).GetProperty("ip").GetInt64();

    // Every call reserved its price at admission; reserved is back to 0 once all of them are settled.
    private Task<JsonElement> SettledAccountAsync(Consumer consumer) =>
        M.Api.WaitForAccountAsync(consumer.AccountId, a => a.GetProperty("reserved").GetInt64() == 0);
}
