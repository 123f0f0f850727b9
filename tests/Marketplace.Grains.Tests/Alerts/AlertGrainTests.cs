using Marketplace.Grains.Tests.Access;
using Marketplace.Testing;

namespace Marketplace.Grains.Tests.Alerts;

[Collection(ClusterCollection.Name)]
public sealed class AlertGrainTests(ClusterFixture fixture)
{
    private static KeyLimits DailyQuota(long perDay) => new(null, new Quota(perDay, null), null, null);

    private IAlertGrain Alerts(string accountId) => fixture.Grains.GetGrain<IAlertGrain>(accountId);

    [Fact]
    public async Task QuotaAlert_DailyQuota10Thresholds80And100_DeliversAtTheEighthAndTenthCallOnlyThenAgainNextDay()
    {
        await using var receiver = await WebhookReceiver.StartAsync();
        var accountId = await fixture.CreateAccountAsync(balance: 1_000_000);
        var serviceId = TestIds.Service();
        var (keyId, secret) = await fixture.CreateLimitedKeyAsync(accountId, [serviceId], DailyQuota(10));
        var created = await Alerts(accountId).CreateAsync(new AlertSpec(receiver.Url("quota"), [AlertEvent.Quota], [100, 80]));
        var today = new DateTimeOffset(fixture.Time.GetUtcNow().UtcDateTime.Date, TimeSpan.Zero);

        for (var call = 1; call <= 8; call++)
        {
            Assert.Equal(AdmitOutcome.Admitted, (await fixture.AdmitAsync(keyId, secret, serviceId)).Outcome);
        }

        var first = Assert.Single(await receiver.WaitForAsync("quota", 1));
        for (var call = 9; call <= 15; call++)
        {
            Assert.Equal(call <= 10 ? AdmitOutcome.Admitted : AdmitOutcome.QuotaExhausted, (await fixture.AdmitAsync(keyId, secret, serviceId)).Outcome);
        }

        var second = (await receiver.WaitForAsync("quota", 2))[1];

        // The next day's window fires again; had the refused calls above fired anything, it would have come before this.
        fixture.Time.AdvanceTo(fixture.Time.NextUtcMidnight());
        for (var call = 1; call <= 8; call++)
        {
            Assert.Equal(AdmitOutcome.Admitted, (await fixture.AdmitAsync(keyId, secret, serviceId)).Outcome);
        }

        var all = await receiver.WaitForAsync("quota", 3);

        Assert.Equal(3, all.Count);
        Assert.Equal([(80, 8L), (100, 10L), (80, 8L)], all.Select(r => (r.Json.GetProperty("threshold").GetInt32(), r.Json.GetProperty("used").GetInt64())));
        var payload = first.Json;
        Assert.Equal(created.Alert.AlertId, payload.GetProperty("alertId").GetString());
        Assert.Equal("quota", payload.GetProperty("event").GetString());
        Assert.Equal(accountId, payload.GetProperty("accountId").GetString());
        Assert.Equal(keyId, payload.GetProperty("keyId").GetString());
        Assert.Equal("day", payload.GetProperty("policy").GetString());
        Assert.Equal(10, payload.GetProperty("limit").GetInt64());
        Assert.Equal(today, payload.GetProperty("windowStart").GetDateTimeOffset());
        Assert.Equal(today.AddDays(1), all[2].Json.GetProperty("windowStart").GetDateTimeOffset());
        Assert.Equal("quota", first.Event);
        Assert.Equal("application/json; charset=utf-8", first.ContentType);
        Assert.Equal(payload.GetProperty("deliveryId").GetString(), first.Delivery);
        Assert.Equal(3, all.Select(r => r.Delivery).Distinct().Count());
        Assert.All(all, r => Assert.True(r.SignedWith(created.Secret), $"Signature {r.Signature} does not verify."));
        Assert.False(second.SignedWith(created.Secret + "x"));
        var info = await Poll.UntilAsync(async () => Assert.Single(await Alerts(accountId).ListAsync()), a => a.Delivered == 3);
        Assert.Equal((3L, 0, (string?)null), (info.Delivered, info.Pending, info.LastError));
    }

    [Fact]
    public async Task Delivery_ReceiverAnswers500Twice_DeliveredOnTheThirdAttemptOnlyAsTheClockMoves()
    {
        await using var receiver = await WebhookReceiver.StartAsync();
        receiver.AnswerFirst("flaky", 500, 500);
        var (accountId, created) = await QuotaAlertAfterOneCallAsync(receiver.Url("flaky"));

        await receiver.WaitForAsync("flaky", 1);
        var firstRetry = await RetryScheduledAsync(accountId, TimeSpan.FromSeconds(1));
        fixture.Time.AdvanceTo(firstRetry.NextAttemptAt!.Value);
        await receiver.WaitForAsync("flaky", 2, seconds: 3);
        var secondRetry = await RetryScheduledAsync(accountId, TimeSpan.FromSeconds(5));
        fixture.Time.AdvanceTo(secondRetry.NextAttemptAt!.Value);

        // Well before the real clock would reach a 5 s backoff: retries follow the TimeProvider.
        var attempts = await receiver.WaitForAsync("flaky", 3, seconds: 3);
        var info = await Poll.UntilAsync(async () => Assert.Single(await Alerts(accountId).ListAsync()), a => a.Delivered == 1);

        Assert.Equal((0L, 1), (firstRetry.Delivered, firstRetry.Pending));
        Assert.Equal((1L, 0, (string?)null, (DateTimeOffset?)null), (info.Delivered, info.Pending, info.LastError, info.NextAttemptAt));
        Assert.Equal(fixture.Time.GetUtcNow(), info.LastDeliveredAt);
        Assert.Single(attempts.Select(a => a.Body).Distinct());
        Assert.Single(attempts.Select(a => a.Delivery).Distinct());
        Assert.True(attempts[1].Timestamp - attempts[0].Timestamp >= 1, "The first retry came before its 1 s backoff.");
        Assert.True(attempts[2].Timestamp - attempts[1].Timestamp >= 5, "The second retry came before its 5 s backoff.");
        Assert.All(attempts, a => Assert.True(a.SignedWith(created.Secret)));
    }

    [Fact]
    public async Task Delivery_ReceiverAlwaysFails_GivesUpAfterEveryRetryAndShowsTheLastError()
    {
        await using var receiver = await WebhookReceiver.StartAsync();
        receiver.AnswerAlways("down", 503);
        var (accountId, _) = await QuotaAlertAfterOneCallAsync(receiver.Url("down"));

        foreach (var delay in AlertGrain.RetryDelays)
        {
            var retry = await RetryScheduledAsync(accountId, delay);
            fixture.Time.AdvanceTo(retry.NextAttemptAt!.Value);
        }

        var attempts = await receiver.WaitForAsync("down", AlertGrain.RetryDelays.Count + 1, seconds: 3);
        var info = await Poll.UntilAsync(async () => Assert.Single(await Alerts(accountId).ListAsync()), a => a.LastError is not null);

        Assert.Equal(6, attempts.Count);
        Assert.Equal((0L, 0), (info.Delivered, info.Pending));
        Assert.Contains("503", info.LastError);
        Assert.Contains("6 attempts", info.LastError);
        Assert.Equal(fixture.Time.GetUtcNow(), info.LastErrorAt);
    }

    [Fact]
    public async Task BalanceAlert_Thresholds50And100_FireOncePerThresholdAndAgainAfterATopUp()
    {
        await using var receiver = await WebhookReceiver.StartAsync();
        var accountId = await fixture.CreateAccountAsync(balance: 1_000);
        var account = fixture.Account(accountId);
        var serviceId = TestIds.Service();
        var created = await Alerts(accountId).CreateAsync(new AlertSpec(receiver.Url("balance"), [AlertEvent.Balance], [50, 100]));

        for (var call = 1; call <= 5; call++)
        {
            await account.SettleBatchAsync(new SettlementBatch(0, 100, [new ServiceUsageDelta(serviceId, 1, 1, 0, 100)]));
        }

        var first = Assert.Single(await receiver.WaitForAsync("balance", 1));
        for (var call = 6; call <= 10; call++)
        {
            await account.SettleBatchAsync(new SettlementBatch(0, 100, [new ServiceUsageDelta(serviceId, 1, 1, 0, 100)]));
        }

        await receiver.WaitForAsync("balance", 2);

        // A top-up starts a new cycle from 1000 spendable: 50% fires again at 500 spent, and only then.
        await account.TopUpAsync(1_000, "more");
        await account.SettleBatchAsync(new SettlementBatch(0, 400, [new ServiceUsageDelta(serviceId, 4, 4, 0, 400)]));
        await account.SettleBatchAsync(new SettlementBatch(0, 100, [new ServiceUsageDelta(serviceId, 1, 1, 0, 100)]));
        var all = await receiver.WaitForAsync("balance", 3);

        Assert.Equal(3, all.Count);
        Assert.Equal([(50, 500L), (100, 1000L), (50, 500L)], all.Select(r => (r.Json.GetProperty("threshold").GetInt32(), r.Json.GetProperty("used").GetInt64())));
        Assert.All(all, r => Assert.Equal(1_000, r.Json.GetProperty("limit").GetInt64()));
        Assert.Equal("balance", first.Event);
        Assert.False(first.Json.TryGetProperty("keyId", out _));
        Assert.All(all, r => Assert.True(r.SignedWith(created.Secret)));
        Assert.Equal(500, (await account.GetAsync())!.Balance);
    }

    [Fact]
    public async Task DeleteAlert_WithARetryPending_StopsItsDeliveriesWhileTheOtherAlertGoesOn()
    {
        await using var receiver = await WebhookReceiver.StartAsync();
        receiver.AnswerAlways("deleted", 500);
        var accountId = await fixture.CreateAccountAsync(balance: 1_000_000);
        var serviceId = TestIds.Service();
        var (keyId, secret) = await fixture.CreateLimitedKeyAsync(accountId, [serviceId], DailyQuota(4));
        var deleted = await Alerts(accountId).CreateAsync(new AlertSpec(receiver.Url("deleted"), [AlertEvent.Quota], [50, 100]));
        var kept = await Alerts(accountId).CreateAsync(new AlertSpec(receiver.Url("kept"), [AlertEvent.Quota], [50, 100]));
        await fixture.AdmitAsync(keyId, secret, serviceId);
        await fixture.AdmitAsync(keyId, secret, serviceId);
        await receiver.WaitForAsync("deleted", 1);
        await receiver.WaitForAsync("kept", 1);

        Assert.True(await Alerts(accountId).DeleteAsync(deleted.Alert.AlertId));
        Assert.False(await Alerts(accountId).DeleteAsync(deleted.Alert.AlertId));
        fixture.Time.Advance(TimeSpan.FromSeconds(1));
        await fixture.AdmitAsync(keyId, secret, serviceId);
        await fixture.AdmitAsync(keyId, secret, serviceId);
        await receiver.WaitForAsync("kept", 2);

        // Had the deleted alert's retry (due now) or its 100% delivery survived, the kept one's tick would have sent it too.
        var remaining = await Poll.UntilAsync(async () => Assert.Single(await Alerts(accountId).ListAsync()), a => a.Delivered == 2);
        Assert.Equal(kept.Alert.AlertId, remaining.AlertId);
        Assert.Equal(0, remaining.Pending);
        Assert.Single(receiver.Of("deleted"));
        Assert.Equal(2, receiver.Of("kept").Count);
    }

    [Fact]
    public async Task NotifyQuota_SameCrossingSignalledTwice_DeliversOnce()
    {
        await using var receiver = await WebhookReceiver.StartAsync();
        var accountId = await fixture.CreateAccountAsync(balance: 0);
        var alerts = Alerts(accountId);
        await alerts.CreateAsync(new AlertSpec(receiver.Url("twice"), [AlertEvent.Quota], [50, 100]));
        var windowStart = new DateTimeOffset(fixture.Time.GetUtcNow().UtcDateTime.Date, TimeSpan.Zero);
        var signal = new QuotaSignal("key-1", "service-day", "svc-a", windowStart, 5, 10, fixture.Time.GetUtcNow());

        await alerts.NotifyQuotaAsync(signal);
        await alerts.NotifyQuotaAsync(signal);
        await alerts.NotifyQuotaAsync(signal with { Used = 6 });
        await alerts.NotifyQuotaAsync(signal with { Used = 10 });
        var received = await receiver.WaitForAsync("twice", 2);

        // Deliveries due together are sent together: their order is not guaranteed.
        Assert.Equal([50, 100], received.Select(r => r.Json.GetProperty("threshold").GetInt32()).Order());
        Assert.All(received, r => Assert.Equal("svc-a", r.Json.GetProperty("serviceId").GetString()));
        var info = await Poll.UntilAsync(async () => Assert.Single(await alerts.ListAsync()), a => a.Delivered == 2);
        Assert.Equal((2L, 0), (info.Delivered, info.Pending));
        Assert.Equal(2, receiver.Of("twice").Count);
    }

    [Fact]
    public async Task QuotaAlert_RegisteredWhenAlreadyPast80Percent_FiresAtOnceAndAgainAt100()
    {
        await using var receiver = await WebhookReceiver.StartAsync();
        var accountId = await fixture.CreateAccountAsync(balance: 1_000_000);
        var serviceId = TestIds.Service();
        var (keyId, secret) = await fixture.CreateLimitedKeyAsync(accountId, [serviceId], DailyQuota(10));
        await fixture.SettleThroughJournalAsync(keyId, serviceId, await fixture.AdmitManyAsync(keyId, secret, serviceId, 9));

        await Alerts(accountId).CreateAsync(new AlertSpec(receiver.Url("late"), [AlertEvent.Quota], [80, 100]));
        var first = Assert.Single(await receiver.WaitForAsync("late", 1));

        // The key reads the alerts back when it is activated again (here: after deactivation), and signals by them.
        await ClusterFixture.DeactivateAsync(fixture.Key(keyId));
        await fixture.AdmitAsync(keyId, secret, serviceId);
        var all = await receiver.WaitForAsync("late", 2);

        Assert.Equal([(80, 9L), (100, 10L)], all.Select(r => (r.Json.GetProperty("threshold").GetInt32(), r.Json.GetProperty("used").GetInt64())));
        Assert.Equal(first.Body, all[0].Body);
    }

    [Fact]
    public async Task Create_InvalidSpecOrEleventhAlert_IsRefused()
    {
        var accountId = await fixture.CreateAccountAsync(balance: 0);
        var alerts = Alerts(accountId);

        await Assert.ThrowsAsync<ArgumentException>(() => alerts.CreateAsync(new AlertSpec("ftp://hooks.example/x", [AlertEvent.Quota], [80])));
        await Assert.ThrowsAsync<ArgumentException>(() => alerts.CreateAsync(new AlertSpec("https://hooks.example/x", [AlertEvent.Quota], [0])));
        for (var i = 0; i < AlertGrain.MaxAlerts; i++)
        {
            await alerts.CreateAsync(new AlertSpec($"https://hooks.example/{i}", [AlertEvent.Quota, AlertEvent.Balance], [80]));
        }

        var refused = await Assert.ThrowsAsync<InvalidOperationException>(() => alerts.CreateAsync(new AlertSpec("https://hooks.example/x", [AlertEvent.Quota], [80])));
        Assert.Contains("10 alerts", refused.Message);
        Assert.Equal(AlertGrain.MaxAlerts, (await alerts.ListAsync()).Count);
        await Assert.ThrowsAsync<KeyNotFoundException>(() => Alerts(TestIds.Account()).CreateAsync(new AlertSpec("https://hooks.example/x", [AlertEvent.Quota], [80])));
    }

    // Waits until the failed attempt is booked and its retry scheduled `delay` from now; returns the alert as then.
    private async Task<AlertInfo> RetryScheduledAsync(string accountId, TimeSpan delay)
    {
        var info = await Poll.UntilAsync(async () => Assert.Single(await Alerts(accountId).ListAsync()), a => a.NextAttemptAt > fixture.Time.GetUtcNow());
        Assert.Equal(fixture.Time.GetUtcNow() + delay, info.NextAttemptAt);
        return info;
    }

    // A key with a daily quota of 1 and a quota alert at 100% on it, after the one call that reaches it.
    private async Task<(string AccountId, AlertCreated Created)> QuotaAlertAfterOneCallAsync(string url)
    {
        var accountId = await fixture.CreateAccountAsync(balance: 1_000);
        var serviceId = TestIds.Service();
        var (keyId, secret) = await fixture.CreateLimitedKeyAsync(accountId, [serviceId], DailyQuota(1));
        var created = await Alerts(accountId).CreateAsync(new AlertSpec(url, [AlertEvent.Quota], [100]));
        Assert.Equal(AdmitOutcome.Admitted, (await fixture.AdmitAsync(keyId, secret, serviceId)).Outcome);
        return (accountId, created);
    }
}
