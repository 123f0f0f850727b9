using System.Security.Cryptography;
using Microsoft.Extensions.Options;
using Polly.CircuitBreaker;

namespace Marketplace.Grains.Tests.DataServices;

public sealed class UpstreamProtectionTests
{
    private static readonly UpstreamAnswer Ok = new(200, null, []);
    private static readonly UpstreamAnswer ServerError = new(500, null, []);

    private readonly ManualTimeProvider _time = new(new DateTimeOffset(2030, 1, 1, 0, 0, 0, TimeSpan.Zero));

    private static UpstreamAdapter Adapter(ProtectionSpec protection, int revision = 1) => new(
        "svc-protected",
        new VersionRoute("v1", revision, new ServiceVersionSpec("https://upstream.example/api", Protection: protection)),
        new UpstreamSecrets(Options.Create(new SecretsOptions { Key = Convert.ToBase64String(RandomNumberGenerator.GetBytes(32)) })));

    private static ValueTask<UpstreamAnswer> RunAsync(VersionGuard guard, Func<UpstreamAnswer> upstream) =>
        guard.Pipeline.ExecuteAsync(_ => ValueTask.FromResult(upstream()), TestContext.Current.CancellationToken);

    private static UpstreamAnswer Unreachable() => throw new HttpRequestException("connection refused");

    [Fact]
    public async Task Breaker_EnoughFailures_OpensThenProbeAfterBreakClosesIt()
    {
        var guard = new UpstreamProtection(_time).For(Adapter(new ProtectionSpec(FailureRatio: 0.5, MinimumThroughput: 4, SamplingSeconds: 30, BreakSeconds: 5)));

        await Assert.ThrowsAsync<HttpRequestException>(async () => await RunAsync(guard, Unreachable));
        Assert.Equal(ServerError, await RunAsync(guard, () => ServerError));
        Assert.Equal(Ok, await RunAsync(guard, () => Ok));
        Assert.Equal(CircuitState.Closed, guard.Breaker);
        Assert.False(guard.IsOpen(out _));

        // The fourth call reaches the minimum throughput with 3 of 4 failed (≥ 0.5): the breaker opens.
        await Assert.ThrowsAsync<HttpRequestException>(async () => await RunAsync(guard, Unreachable));
        Assert.Equal(CircuitState.Open, guard.Breaker);
        Assert.True(guard.IsOpen(out var retryAfter));
        Assert.Equal(5, retryAfter);
        var called = false;
        await Assert.ThrowsAsync<BrokenCircuitException>(async () => await RunAsync(guard, () => { called = true; return Ok; }));
        Assert.False(called);

        _time.Advance(TimeSpan.FromSeconds(3));
        Assert.True(guard.IsOpen(out retryAfter));
        Assert.Equal(2, retryAfter);

        _time.Advance(TimeSpan.FromSeconds(2));
        Assert.False(guard.IsOpen(out _));
        Assert.Equal(Ok, await RunAsync(guard, () => { called = true; return Ok; }));
        Assert.True(called);
        Assert.Equal(CircuitState.Closed, guard.Breaker);
        Assert.False(guard.IsOpen(out _));
    }

    [Fact]
    public async Task Breaker_ProbeFails_OpensAgainForAnotherBreak()
    {
        var guard = new UpstreamProtection(_time).For(Adapter(new ProtectionSpec(FailureRatio: 1, MinimumThroughput: 2, SamplingSeconds: 30, BreakSeconds: 10)));
        await RunAsync(guard, () => ServerError);
        await RunAsync(guard, () => ServerError);
        Assert.True(guard.IsOpen(out _));

        _time.Advance(TimeSpan.FromSeconds(10));
        Assert.False(guard.IsOpen(out _));
        Assert.Equal(ServerError, await RunAsync(guard, () => ServerError));

        Assert.Equal(CircuitState.Open, guard.Breaker);
        Assert.True(guard.IsOpen(out var retryAfter));
        Assert.Equal(10, retryAfter);
    }

    [Fact]
    public async Task Breaker_FailuresBelowMinimumThroughput_StaysClosed()
    {
        var guard = new UpstreamProtection(_time).For(Adapter(new ProtectionSpec(FailureRatio: 0.5, MinimumThroughput: 4, SamplingSeconds: 30, BreakSeconds: 5)));

        for (var i = 0; i < 3; i++)
        {
            Assert.Equal(ServerError, await RunAsync(guard, () => ServerError));
        }

        Assert.Equal(CircuitState.Closed, guard.Breaker);
        Assert.False(guard.IsOpen(out _));
    }

    [Fact]
    public void TryEnter_BeyondMaxConcurrency_NullUntilAPermitIsReturned()
    {
        var guard = new UpstreamProtection(_time).For(Adapter(new ProtectionSpec(MaxConcurrency: 2)));

        using var first = guard.TryEnter();
        var second = guard.TryEnter();
        var third = guard.TryEnter();

        Assert.NotNull(first);
        Assert.NotNull(second);
        Assert.Null(third);
        second.Dispose();
        using var fourth = guard.TryEnter();
        Assert.NotNull(fourth);
        Assert.Null(guard.TryEnter());
    }

    [Fact]
    public async Task For_SameRevision_SameGuardKeepsBreakerAndNewRevisionGetsFreshGuard()
    {
        var protection = new UpstreamProtection(_time);
        var spec = new ProtectionSpec(FailureRatio: 1, MinimumThroughput: 2, BreakSeconds: 5);
        var guard = protection.For(Adapter(spec));
        await RunAsync(guard, () => ServerError);
        await RunAsync(guard, () => ServerError);

        var again = protection.For(Adapter(spec));
        var changed = protection.For(Adapter(spec, revision: 2));

        Assert.Same(guard, again);
        Assert.True(again.IsOpen(out _));
        Assert.NotSame(guard, changed);
        Assert.False(changed.IsOpen(out _));
        Assert.Equal(CircuitState.Closed, protection.BreakerStates()["svc-protected/v1"]);
    }
}
