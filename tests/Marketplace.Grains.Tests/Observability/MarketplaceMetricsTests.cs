using System.Diagnostics.Metrics;
using System.Security.Cryptography;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Diagnostics.Metrics.Testing;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Options;

namespace Marketplace.Grains.Tests.Observability;

[Collection(ClusterCollection.Name)]
public sealed class MarketplaceMetricsTests(ClusterFixture fixture) : IDisposable
{
    private readonly ServiceProvider _services = new ServiceCollection().AddMetrics().BuildServiceProvider();
    private readonly ManualTimeProvider _time = new(new DateTimeOffset(2030, 1, 1, 0, 0, 0, TimeSpan.Zero));

    private IMeterFactory Meters => _services.GetRequiredService<IMeterFactory>();

    public void Dispose() => _services.Dispose();

    [Fact]
    public void RecordCall_Succeeded_CountsCallAndBothDurationsWithTheirTags()
    {
        var metrics = Create();
        using var calls = Collect<long>("marketplace.calls");
        using var duration = Collect<double>("marketplace.call.duration");
        using var upstream = Collect<double>("marketplace.upstream.duration");
        using var rejections = Collect<long>("marketplace.rejections");

        metrics.RecordCall("svc-a", "v2", CallOutcome.Succeeded, null, TimeSpan.FromMilliseconds(250), TimeSpan.FromMilliseconds(100));

        var call = Assert.Single(calls.GetMeasurementSnapshot());
        Assert.Equal(1, call.Value);
        Assert.True(call.MatchesTags(Tag("service", "svc-a"), Tag("outcome", "succeeded"), Tag("version", "v2")));
        var total = Assert.Single(duration.GetMeasurementSnapshot());
        Assert.Equal(0.25, total.Value, 6);
        Assert.True(total.MatchesTags(Tag("service", "svc-a"), Tag("outcome", "succeeded")));
        var waited = Assert.Single(upstream.GetMeasurementSnapshot());
        Assert.Equal(0.1, waited.Value, 6);
        Assert.True(waited.MatchesTags(Tag("service", "svc-a"), Tag("version", "v2")));
        Assert.Empty(rejections.GetMeasurementSnapshot());
    }

    [Fact]
    public void RecordCall_RefusedByAdmission_CountsRejectionByAdmitOutcomeAndNoUpstreamTime()
    {
        var metrics = Create();
        using var calls = Collect<long>("marketplace.calls");
        using var upstream = Collect<double>("marketplace.upstream.duration");
        using var rejections = Collect<long>("marketplace.rejections");

        metrics.RecordCall("svc-a", null, CallOutcome.Rejected, AdmitOutcome.InsufficientBalance, TimeSpan.FromMilliseconds(1), null);

        Assert.True(Assert.Single(calls.GetMeasurementSnapshot()).MatchesTags(Tag("service", "svc-a"), Tag("outcome", "rejected")));
        Assert.True(Assert.Single(rejections.GetMeasurementSnapshot()).MatchesTags(Tag("service", "svc-a"), Tag("reason", "insufficient_balance")));
        Assert.Empty(upstream.GetMeasurementSnapshot());
    }

    [Theory]
    [InlineData(CallOutcome.UpstreamRateLimited, "upstream_rate_limited")]
    [InlineData(CallOutcome.ServiceSuspended, "suspended")]
    [InlineData(CallOutcome.UpstreamUnavailable, null)]
    [InlineData(CallOutcome.UpstreamTimeout, null)]
    public void RecordCall_RefusedByTheMarketplace_CountsRejectionOnlyWhereTheOutcomeTellsWhy(CallOutcome outcome, string? reason)
    {
        var metrics = Create();
        using var rejections = Collect<long>("marketplace.rejections");

        metrics.RecordCall("svc-a", "v1", outcome, null, TimeSpan.FromMilliseconds(1), null);

        var counted = rejections.GetMeasurementSnapshot();
        if (reason is null)
        {
            Assert.Empty(counted);
        }
        else
        {
            Assert.True(Assert.Single(counted).MatchesTags(Tag("service", "svc-a"), Tag("reason", reason)));
        }
    }

    [Fact]
    public void RecordCall_UnknownService_IsTaggedWithAFixedValueNotTheCallersInput()
    {
        var metrics = Create();
        using var calls = Collect<long>("marketplace.calls");

        metrics.RecordCall("made-up-" + Guid.NewGuid().ToString("N"), null, CallOutcome.UnknownService, null, TimeSpan.FromMilliseconds(1), null);

        Assert.True(Assert.Single(calls.GetMeasurementSnapshot())
            .MatchesTags(Tag("service", MarketplaceMetrics.UnknownServiceTag), Tag("outcome", "unknown_service")));
    }

    [Fact]
    public void RecordShedAndUpstreamError_CountWithReasonAndKind()
    {
        var metrics = Create();
        using var rejections = Collect<long>("marketplace.rejections");
        using var errors = Collect<long>("marketplace.upstream.errors");

        metrics.RecordShed("svc-a", MarketplaceMetrics.Reasons.BreakerOpen);
        metrics.RecordShed("svc-a", MarketplaceMetrics.Reasons.ConcurrencyFull);
        metrics.RecordUpstreamError("svc-a", "v3", MarketplaceMetrics.UpstreamErrorKinds.Status5xx);

        var shed = rejections.GetMeasurementSnapshot();
        Assert.Equal(2, shed.Count);
        Assert.True(shed[0].MatchesTags(Tag("service", "svc-a"), Tag("reason", "breaker_open")));
        Assert.True(shed[1].MatchesTags(Tag("service", "svc-a"), Tag("reason", "concurrency_full")));
        Assert.True(Assert.Single(errors.GetMeasurementSnapshot()).MatchesTags(Tag("service", "svc-a"), Tag("version", "v3"), Tag("kind", "status_5xx")));
    }

    [Fact]
    public void OutcomeAndRejectionTags_AreSnakeCaseEnumNames()
    {
        Assert.Equal("upstream_timeout", MarketplaceMetrics.OutcomeTag(CallOutcome.UpstreamTimeout));
        Assert.Equal("bad_request", MarketplaceMetrics.OutcomeTag(CallOutcome.BadRequest));
        Assert.Equal("account_cap_reached", MarketplaceMetrics.RejectionTag(AdmitOutcome.AccountCapReached));
        Assert.Equal("99", MarketplaceMetrics.OutcomeTag((CallOutcome)99));
    }

    [Fact]
    public async Task BreakerGauge_ReportsEveryGuardedVersionByServiceAndVersion()
    {
        var protection = new UpstreamProtection(_time);
        var metrics = Create(protection);
        using var gauge = Collect<int>("marketplace.breaker.state");
        var open = protection.For(Adapter("svc-b", "v1", new ProtectionSpec(FailureRatio: 1, MinimumThroughput: 2, BreakSeconds: 5)));
        protection.For(Adapter("svc-b", "v2", new ProtectionSpec()));
        for (var i = 0; i < 2; i++)
        {
            await open.Pipeline.ExecuteAsync(_ => ValueTask.FromResult(new UpstreamAnswer(500, null, [])), TestContext.Current.CancellationToken);
        }

        gauge.RecordObservableInstruments();

        var states = gauge.GetMeasurementSnapshot();
        Assert.Equal(2, states.Count);
        Assert.Equal(2, Assert.Single(states, m => m.MatchesTags(Tag("service", "svc-b"), Tag("version", "v1"))).Value);
        Assert.Equal(0, Assert.Single(states, m => m.MatchesTags(Tag("service", "svc-b"), Tag("version", "v2"))).Value);
        GC.KeepAlive(metrics);
    }

    [Fact]
    public async Task SettlementGauges_CountBatchesThatSettledSomethingAndDrainToZero()
    {
        var batcher = new SettlementBatcher(fixture.Grains, TimeProvider.System, NullLogger<SettlementBatcher>.Instance);
        var metrics = Create(settlements: batcher);
        using var pending = Collect<int>("marketplace.settlement.pending");
        using var flushes = Collect<long>("marketplace.settlement.flushes");
        var accountId = await fixture.CreateAccountAsync(balance: 0);
        var sender = Guid.NewGuid();
        var settled = Enumerable.Range(0, 3).Select(_ => Record(accountId)).ToList();

        batcher.Deliver(sender, 1, [Record(accountId: null)]);
        batcher.Deliver(sender, 2, settled);
        await batcher.DrainAsync();

        pending.RecordObservableInstruments();
        flushes.RecordObservableInstruments();
        Assert.Equal(0, pending.LastMeasurement!.Value);
        Assert.Equal(1, flushes.LastMeasurement!.Value);
        var account = await fixture.Grains.GetGrain<IAccountGrain>(accountId).GetAsync();
        Assert.Equal(3, account!.Usage.Calls);
        GC.KeepAlive(metrics);

        // A call the key refused (no account) is not a settled call.
        static CallRecord Record(string? accountId) => new(Guid.CreateVersion7(), "t", DateTimeOffset.UtcNow, accountId, TestIds.Key(),
            TestIds.Service(), "v1", CallOutcome.Succeeded, null, 200, 1, 1, 0, 0, "EUR", null);
    }

    private MarketplaceMetrics Create(UpstreamProtection? protection = null, SettlementBatcher? settlements = null) =>
        new(Meters, protection ?? new UpstreamProtection(_time),
            settlements ?? new SettlementBatcher(fixture.Grains, _time, NullLogger<SettlementBatcher>.Instance));

    private MetricCollector<T> Collect<T>(string instrument) where T : struct =>
        new(Meters, MarketplaceMetrics.MeterName, instrument);

    private static KeyValuePair<string, object?> Tag(string name, string value) => new(name, value);

    private static UpstreamAdapter Adapter(string serviceId, string versionId, ProtectionSpec protection) => new(
        serviceId,
        new VersionRoute(versionId, 1, new ServiceVersionSpec("https://upstream.example/api", Protection: protection)),
        new UpstreamSecrets(Options.Create(new SecretsOptions { Key = Convert.ToBase64String(RandomNumberGenerator.GetBytes(32)) })));
}
