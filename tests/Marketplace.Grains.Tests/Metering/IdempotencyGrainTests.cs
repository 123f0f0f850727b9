namespace Marketplace.Grains.Tests.Metering;

[Collection(ClusterCollection.Name)]
public sealed class IdempotencyGrainTests(ClusterFixture fixture)
{
    private static readonly TimeSpan Window = TimeSpan.FromHours(1);

    [Fact]
    public async Task Begin_FreshKey_Started()
    {
        var grain = NewKey();

        var start = await grain.BeginAsync("fingerprint-a", Window);

        Assert.Equal(IdempotencyStatus.Started, start.Status);
        Assert.Null(start.Result);
    }

    [Fact]
    public async Task Begin_SameFingerprintWhileRunning_InProgress()
    {
        var grain = NewKey();
        await grain.BeginAsync("fingerprint-a", Window);

        var second = await grain.BeginAsync("fingerprint-a", Window);

        Assert.Equal(IdempotencyStatus.InProgress, second.Status);
        Assert.Null(second.Result);
    }

    [Fact]
    public async Task Begin_AfterComplete_CompletedWithStoredResult()
    {
        var grain = NewKey();
        await grain.BeginAsync("fingerprint-a", Window);
        var result = Result("track-first-call", charged: 7);
        await grain.CompleteAsync("fingerprint-a", result);

        var again = await grain.BeginAsync("fingerprint-a", Window);

        Assert.Equal(IdempotencyStatus.Completed, again.Status);
        AssertSameResult(result, again.Result);
    }

    [Fact]
    public async Task Begin_DifferentFingerprintWhileRunningOrCompleted_Mismatch()
    {
        var grain = NewKey();
        await grain.BeginAsync("fingerprint-a", Window);

        var whileRunning = await grain.BeginAsync("fingerprint-b", Window);
        await grain.CompleteAsync("fingerprint-a", Result("track-first-call", charged: 7));
        var afterCompletion = await grain.BeginAsync("fingerprint-b", Window);

        Assert.Equal(IdempotencyStatus.Mismatch, whileRunning.Status);
        Assert.Equal(IdempotencyStatus.Mismatch, afterCompletion.Status);
        Assert.Null(afterCompletion.Result);
    }

    [Fact]
    public async Task Complete_WithOtherFingerprint_IsIgnored()
    {
        var grain = NewKey();
        await grain.BeginAsync("fingerprint-a", Window);

        await grain.CompleteAsync("fingerprint-b", Result("track-other", charged: 7));
        var again = await grain.BeginAsync("fingerprint-a", Window);

        Assert.Equal(IdempotencyStatus.InProgress, again.Status);
    }

    [Fact]
    public async Task Begin_AfterAbandon_StartedAgain()
    {
        var grain = NewKey();
        await grain.BeginAsync("fingerprint-a", Window);

        await grain.AbandonAsync("fingerprint-a");
        var retry = await grain.BeginAsync("fingerprint-a", Window);

        Assert.Equal(IdempotencyStatus.Started, retry.Status);
    }

    [Fact]
    public async Task Abandon_AfterComplete_KeepsTheResult()
    {
        var grain = NewKey();
        await grain.BeginAsync("fingerprint-a", Window);
        var result = Result("track-first-call", charged: 7);
        await grain.CompleteAsync("fingerprint-a", result);

        await grain.AbandonAsync("fingerprint-a");
        var again = await grain.BeginAsync("fingerprint-a", Window);

        Assert.Equal(IdempotencyStatus.Completed, again.Status);
        AssertSameResult(result, again.Result);
    }

    [Fact]
    public async Task Begin_AfterTheWindow_StartedAgain()
    {
        var grain = NewKey();
        await grain.BeginAsync("fingerprint-a", Window);
        await grain.CompleteAsync("fingerprint-a", Result("track-first-call", charged: 7));

        fixture.Time.Advance(Window - TimeSpan.FromSeconds(1));
        var justInside = await grain.BeginAsync("fingerprint-a", Window);
        fixture.Time.Advance(TimeSpan.FromSeconds(2));
        var afterWindow = await grain.BeginAsync("fingerprint-b", Window);

        Assert.Equal(IdempotencyStatus.Completed, justInside.Status);
        Assert.Equal(IdempotencyStatus.Started, afterWindow.Status);
        Assert.Null(afterWindow.Result);
    }

    [Fact]
    public async Task Begin_StartedCallOlderThanInFlightLimit_StartedAgain()
    {
        var grain = NewKey();
        await grain.BeginAsync("fingerprint-a", Window);

        // The first call's silo died before it could complete or abandon: the key must not stay blocked for the whole window.
        fixture.Time.Advance(IdempotencyGrain.InFlightLimit - TimeSpan.FromSeconds(1));
        var stillRunning = await grain.BeginAsync("fingerprint-a", Window);
        fixture.Time.Advance(TimeSpan.FromSeconds(2));
        var recovered = await grain.BeginAsync("fingerprint-a", Window);
        var duplicate = await grain.BeginAsync("fingerprint-a", Window);

        Assert.Equal(IdempotencyStatus.InProgress, stillRunning.Status);
        Assert.Equal(IdempotencyStatus.Started, recovered.Status);
        Assert.Equal(IdempotencyStatus.InProgress, duplicate.Status);
    }

    [Fact]
    public async Task Begin_CallAllowedTwelveMinutes_ClaimHeldPastThreeMinutesUntilItsOwnLimit()
    {
        var grain = NewKey();
        var longestCall = TimeSpan.FromMinutes(12);
        await grain.BeginAsync("fingerprint-a", Window, longestCall);

        // A version with a 120 s timeout and 5 retries may still be answering: a retry must not run it a second time.
        fixture.Time.Advance(IdempotencyGrain.InFlightLimit + TimeSpan.FromMinutes(1));
        var afterThreeMinutes = await grain.BeginAsync("fingerprint-a", Window, longestCall);
        fixture.Time.Advance(longestCall - IdempotencyGrain.InFlightLimit - TimeSpan.FromMinutes(1) - TimeSpan.FromSeconds(1));
        var justBeforeItsLimit = await grain.BeginAsync("fingerprint-a", Window, longestCall);
        fixture.Time.Advance(TimeSpan.FromSeconds(2));
        var afterItsLimit = await grain.BeginAsync("fingerprint-a", Window, longestCall);

        Assert.Equal(IdempotencyStatus.InProgress, afterThreeMinutes.Status);
        Assert.Equal(IdempotencyStatus.InProgress, justBeforeItsLimit.Status);
        Assert.Equal(IdempotencyStatus.Started, afterItsLimit.Status);
    }

    [Fact]
    public void LongestCall_SlowestVersionWithRetries_TimeoutTimesAttemptsPlusRoom()
    {
        var slow = new VersionRoute("v1", 1, new ServiceVersionSpec("https://a.example", TimeoutMs: 120_000,
            Protection: new ProtectionSpec(Retries: 5, Idempotent: true)));
        var notRetried = new VersionRoute("v2", 1, new ServiceVersionSpec("https://b.example", TimeoutMs: 120_000,
            Protection: new ProtectionSpec(Retries: 5, Idempotent: false)));
        var route = new ServiceRoute("svc", 1, "EUR", 1, null, ServiceStatus.Published, ChargeRule.PerSuccess, [slow, notRetried],
            new Dictionary<string, int> { ["v1"] = 50, ["v2"] = 50 }, new Dictionary<string, string>());

        var longest = new CompiledRoute(route, new Dictionary<string, UpstreamAdapter>()).LongestCall;

        Assert.True(longest >= TimeSpan.FromMinutes(12), $"{longest}");
        Assert.True(longest <= TimeSpan.FromMinutes(13), $"{longest}");
    }

    [Fact]
    public async Task State_AfterDeactivation_IsKept()
    {
        var running = NewKey();
        var completed = NewKey();
        await running.BeginAsync("fingerprint-a", Window);
        await completed.BeginAsync("fingerprint-a", Window);
        var result = Result("track-first-call", charged: 7);
        await completed.CompleteAsync("fingerprint-a", result);

        await ClusterFixture.DeactivateAsync(running);
        await ClusterFixture.DeactivateAsync(completed);
        var runningAgain = await running.BeginAsync("fingerprint-a", Window);
        var completedAgain = await completed.BeginAsync("fingerprint-a", Window);
        var mismatch = await completed.BeginAsync("fingerprint-b", Window);

        Assert.Equal(IdempotencyStatus.InProgress, runningAgain.Status);
        Assert.Equal(IdempotencyStatus.Completed, completedAgain.Status);
        AssertSameResult(result, completedAgain.Result);
        Assert.Equal(IdempotencyStatus.Mismatch, mismatch.Status);
    }

    [Fact]
    public async Task Begin_ManyConcurrentDuplicates_ExactlyOneStarted()
    {
        var grain = NewKey();

        var starts = await Task.WhenAll(Enumerable.Range(0, 50).Select(_ => grain.BeginAsync("fingerprint-a", Window)));

        Assert.Single(starts, s => s.Status == IdempotencyStatus.Started);
        Assert.Equal(49, starts.Count(s => s.Status == IdempotencyStatus.InProgress));
    }

    private IIdempotencyGrain NewKey() =>
        fixture.Grains.GetGrain<IIdempotencyGrain>(TestIds.Key() + "/idem-" + Guid.NewGuid().ToString("N"));

    private static CallResult Result(string trackId, long charged) => new(
        trackId, CallOutcome.Succeeded, null, 200, "application/json", "{\"valid\":true}"u8.ToArray(), charged, 7, 93, ClusterFixture.Currency, null,
        Version: "v1");

    private static void AssertSameResult(CallResult expected, CallResult? actual)
    {
        Assert.NotNull(actual);
        Assert.Equal(expected.TrackId, actual.TrackId);
        Assert.Equal(expected.Outcome, actual.Outcome);
        Assert.Equal(expected.UpstreamStatus, actual.UpstreamStatus);
        Assert.Equal(expected.ContentType, actual.ContentType);
        Assert.Equal(expected.Body, actual.Body);
        Assert.Equal(expected.Charged, actual.Charged);
        Assert.Equal(expected.Version, actual.Version);
    }
}
